"""mednas-nni: plugin-based neural architecture search for medical images, built on Microsoft NNI 3.0.

Public API (lazy, so ``import mednas_nni`` stays cheap)::

    from mednas_nni import load_config, run_search, list_plugins
    cfg = load_config("my.yaml", ["strategy.params.pop_size=40"])
    run_dir = run_search(cfg)
"""
from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["__version__", "load_config", "run_search", "resume_search", "list_plugins", "get_plugin"]


def __getattr__(name: str) -> Any:
    if name == "load_config":
        from .config import load_config

        return load_config
    if name in ("run_search", "resume_search"):
        from . import experiment

        return getattr(experiment, name)
    if name in ("list_plugins", "get_plugin"):
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'mednas_nni' has no attribute {name!r}")

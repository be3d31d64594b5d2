"""``environment.json``: what a run ran on, so that a result can be traced and repeated.

Python (version, executable, platform), the versions of the packages the results depend on
(``importlib.metadata``, no imports), the git revision of the mednas-nni checkout when it is one (and whether it had
uncommitted changes), the CPU (model, logical cores) and GPUs (``torch.cuda`` when torch is already imported or
importable), the run's seed and device.
"""
from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["ENVIRONMENT_FILE", "PACKAGES", "environment_record", "write_environment", "git_revision"]

_logger = logging.getLogger(__name__)

ENVIRONMENT_FILE = "environment.json"
PACKAGES = ("mednas-nni", "torch", "torchvision", "nni", "monai", "pytorch-lightning", "torchmetrics", "numpy",
            "scikit-learn", "scipy", "pymoo", "medmnist", "onnx", "onnxruntime", "pydantic", "matplotlib", "pillow",
            "pydicom", "SimpleITK")


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_revision(where: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty", "root"}`` of the git checkout holding ``where`` (default: this package), else None
    (an installed wheel, or no git)."""
    where = Path(where) if where is not None else Path(__file__).resolve().parents[2]
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        root = git("rev-parse", "--show-toplevel")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty, "root": root}


def _cpu_model() -> str:
    from ..exporters._measure import cpu_name   # one implementation (the model card and benchmarks use it too)

    return cpu_name()


def _gpus() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}"})
    return out


def environment_record(seed: int | None = None, device: str | None = None) -> dict[str, Any]:
    """The ``environment.json`` dict (module doc)."""
    try:
        threads = __import__("torch").get_num_threads()
    except ImportError:
        threads = None
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "git": git_revision(),
        "cpu": {"model": _cpu_model(), "logical_cores": os.cpu_count(), "torch_threads": threads},
        "gpus": _gpus(),
        "seed": seed,
        "device": device,
    }


def write_environment(run_dir: str | Path, seed: int | None = None, device: str | None = None) -> Path:
    """Write ``run_dir/environment.json`` atomically; returns its path."""
    from ..io import atomic_write_json

    path = Path(run_dir) / ENVIRONMENT_FILE
    atomic_write_json(path, environment_record(seed, device))
    return path

"""Compatibility shim: the plugin contracts live in :mod:`mednas_nni.contracts` (one module per kind)."""
from .contracts import *  # noqa: F401,F403
from .contracts import __all__  # noqa: F401

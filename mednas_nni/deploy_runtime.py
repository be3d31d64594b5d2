"""Compatibility shim: the bundle runtime now lives in :mod:`mednas_nni.deploy` (readers, preprocessing, bundle,
predict). The old names stay importable from here; new code imports from :mod:`mednas_nni.deploy`."""
from __future__ import annotations

from .deploy import *  # noqa: F401,F403
from .deploy import __all__  # noqa: F401

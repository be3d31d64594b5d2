"""Compatibility shim: the nnictl tuner is :class:`mednas_nni.engines.nnictl_tuner.MedNASTuner` (one for every
multi-trial strategy; ``GeNASTuner`` is the same class under the name older configs use)."""
from .engines.nnictl_tuner import TUNERS, MedNASTuner, register_tuners

GeNASTuner = MedNASTuner

__all__ = ["MedNASTuner", "GeNASTuner", "register_tuners", "TUNERS"]

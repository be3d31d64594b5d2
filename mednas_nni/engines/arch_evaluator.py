"""NNI's ``FunctionalEvaluator`` that also hands the evaluated architecture's sample to the trial function.

A module of its own because importing ``nni.nas.evaluator`` pulls PyTorch Lightning, torchmetrics and torchvision
(~10 s on an idle small CPU): :mod:`mednas_nni.engines.trial` re-exports it lazily, so ``nnictl`` trials, which
never need it, do not pay for it.
"""
from __future__ import annotations

from typing import Any

from nni.nas.evaluator import FunctionalEvaluator

__all__ = ["ArchitectureEvaluator"]


class ArchitectureEvaluator(FunctionalEvaluator):
    """NNI's ``FunctionalEvaluator`` that also hands the evaluated architecture's sample to the function."""

    def _execute(self, model: Any) -> Any:
        return self.function(model.executable_model(), sample=model.sample, **self.arguments)

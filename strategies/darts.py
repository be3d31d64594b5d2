"""DARTS as a mednas one-shot strategy: NNI's plain ``DARTS`` driven without a ``NasExperiment``.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, arXiv:1806.09055.

Every choice of the search space (``LayerChoice``, ``InputChoice``, ``Repeat``, ``Cell``, categorical value choices)
becomes a softmax-weighted mixture over its candidates with one architecture vector α per label. NNI's
:class:`nni.nas.strategy.DARTS` (``nni/nas/oneshot/pytorch/differentiable.py``) then alternates, on every step, an α
update on a batch of the **val** split (Adam, ``arc_learning_rate``, betas (0.5, 0.999), weight decay 1e-3, as in
the paper) and a weight update on a batch of the **train** split (the task's loss, Adam ``lr``/``weight_decay``).
NOTE: NNI implements the *first-order* approximation of the paper only (no unrolled second-order gradient); the
paper reports first-order DARTS as slightly worse but 3-4x cheaper. The test split is never touched.

The search runs on the one-shot engine (:mod:`mednas_nni.engines.oneshot_engine`: NNI's one-shot recipe by hand,
``mutate_model`` → ``mutate_evaluator`` → Lightning fit → ``export``, because a one-shot ``NasExperiment`` leaves an
entry in NNI's experiment manifest for every run and, inside an nnictl trial, swallows intermediate results). It
writes ``oneshot_metrics.csv`` (per epoch: losses, the supernet's validation metrics, E[params]/E[FLOPs] when the
space knows its op costs, the probability of every candidate), ``alpha.png`` and a per-epoch checkpoint
(``oneshot/last.ckpt``: ``mednas resume`` continues a killed search from its last epoch) into the run directory, and
returns one finalist, the argmax of α per label (``chosen_as: "DARTS argmax"``; a space with a ``derive(probs)``
method, e.g. ``lw_misn``, derives its own way), which the core retrains from scratch like any other finalist. The
engine's options (SGD + cosine, warm-up, alternation by epoch, drop-path) are parameters here too.
"""
from __future__ import annotations

import logging
from typing import Any

from mednas_nni.contracts import OneShotStrategy
from mednas_nni.engines.oneshot_engine import ExpectedCost, OneShotHooks, OneShotParams, run_oneshot

__all__ = ["DARTSSearch", "DARTSParams"]

_logger = logging.getLogger(__name__)


class DARTSParams(OneShotParams):
    """Parameters of :class:`DARTSSearch` (``strategy.params``): those of the engine, with DARTS' defaults
    (the paper: 50 epochs, batch 64, weight decay 3e-4, α Adam 3e-4, gradient clip 5)."""


class DARTSSearch(OneShotStrategy):
    """DARTS (Liu et al., ICLR 2019) on NNI's first-order implementation; one finalist, the argmax of α.

    Built as ``DARTSSearch(**params)`` (keyword-only, validated by :class:`DARTSParams`).
    """

    name = "darts"
    Params = DARTSParams
    chosen_as = "DARTS argmax"
    title = "DARTS (first-order)"

    def __init__(self, **params: Any):
        self.params = self.Params(**params)

    def hooks(self, space: Any) -> OneShotHooks:
        """What this method adds to the engine (subclasses add a penalty, a loss, a transform)."""
        derive = getattr(space, "derive", None)
        return OneShotHooks(costs=ExpectedCost.from_space(space), derive=derive,
                            label_groups=getattr(space, "alpha_group", None), chosen_as=self.chosen_as,
                            title=self.title)

    def search(self, space: Any, task: Any, data: Any, ctx: Any) -> list[dict[str, Any]]:
        """Train the DARTS supernet of ``space`` for ``task`` on ``data`` and return the derived finalist.

        ``space`` itself is left unchanged (the supernet is built from a deep copy).
        """
        return run_oneshot(space, task, data, ctx, self.params, self.hooks(space), name=self.name).finalists

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.model_dump().items())})"

"""NAS-SCAM as a mednas one-shot strategy: synchronous search of every attention module's α on the shared engine.

Liu, Wang, Zhang, Wang and Qi, "NAS-SCAM: Neural Architecture Search-Based Spatial and Channel Joint Attention
Module for Nuclei Semantic Segmentation and Classification", MICCAI 2020, LNCS 12261, pp. 263-272,
doi:10.1007/978-3-030-59710-8_26; the schedule below follows the authors' code (``ZuhaoLiu/NAS-SCAM`` @ 9793d30,
``train_functions.train_net`` / ``judge_grad``).

The supernet is the ``scam_unet`` space relaxed by NNI's DARTS (every edge of every SAM/CAM cell a softmax(α)
mixture; each module has its own α, all searched at once). The one-shot engine
(:mod:`mednas_nni.engines.oneshot_engine`) trains it first-order:

* **warm-up**: the first ``warmup_epochs`` train the weights only, α frozen (the authors: 20 of 120 epochs);
* then **by epoch** (``alternation: epoch``, the authors' scheme): epoch ``e`` trains the weights on the train split
  when ``e % weight_every == 0`` and α only, on the separate search split (the data set's ``val`` split), otherwise
  (the authors: ``epoch < 20 or epoch % 3 == 0`` -> weights); ``alternation: step`` alternates per batch instead
  (DARTS);
* **loss**: the segmentation task's own loss (MONAI Dice-based, ``task.params.loss``) by default; ``loss: explog``
  uses the authors' exponential-log Dice ``mean_c (-ln Dice_c) ** 0.3``
  (:class:`~mednas_nni.tasks.seg_losses_explog.ExpLogDiceLoss`) for the search; the core retrains the derived network
  with the task's loss;
* ``balanced_sampler: true``: weight batches from :class:`~mednas_nni.strategies.scam_sampler.ClassBalancedBatchSampler`
  (every foreground class in every batch, the authors' loader);
* **derivation**: argmax of α per edge; an edge whose argmax is ``none`` is absent from the derived network.

Optimisers: weights Adam(``lr`` 1e-3, the authors' ``args.lr``); α Adam(``arc_learning_rate`` 1e-3 as the authors,
but with the engine's DARTS betas (0.5, 0.999) where the authors use PyTorch's default (0.9, 0.999)). Unlike the
authors' loop, the optimisers are not rebuilt every epoch (Adam's moments carry over) and the best search epoch is
not picked by validation Dice: the last epoch's α is derived.

Outputs in the run directory: the engine's ``oneshot_metrics.csv`` (per epoch: losses, the supernet's validation
metrics, ``p/<module>/<sam|cam>/<edge>/<op>``), ``alpha.png`` (one panel for all SAM cells, one for all CAM
cells), ``alpha_<module>.png`` (per module, heat maps of every edge and op over the epochs), ``scam_cells.png``
(the derived cells), and the per-epoch checkpoint for resume.
"""
from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, model_validator

from mednas_nni.contracts import OneShotStrategy
from mednas_nni.engines.oneshot_engine import OneShotHooks, OneShotParams, run_oneshot
from mednas_nni.errors import ConfigError

from .scam_figures import CELLS_PNG, plot_derived_cells, plot_module_alphas

__all__ = ["NASSCAMSearch", "SCAMParams", "attention_scopes"]

_logger = logging.getLogger(__name__)


class SCAMParams(OneShotParams):
    """Parameters of :class:`NASSCAMSearch` (``strategy.params``); the engine's plus the NAS-SCAM ones."""

    epochs: int = Field(12, ge=1)                       # the authors: 120 (CPU-sized default)
    batch_size: int = Field(4, ge=1)                    # the authors: 4 (one patch per class)
    lr: float = Field(1e-3, gt=0)                       # weights, Adam (the authors' args.lr)
    weight_decay: float = Field(0.0, ge=0)              # the authors: none
    arc_learning_rate: float = Field(1e-3, gt=0)        # α, Adam (the authors: 1e-3)
    arc_weight_decay: float = Field(0.0, ge=0)          # the authors: none
    gradient_clip_val: float | None = Field(None, gt=0)  # the authors: no clipping
    warmup_epochs: int = Field(3, ge=0)                 # weights only, α frozen (the authors: 20)
    alternation: Literal["step", "epoch"] = "epoch"     # the authors: by epoch
    weight_every: int = Field(3, ge=2)                  # after warm-up, epochs e % weight_every == 0 train weights
    loss: Literal["task", "explog"] = "task"            # search loss: the task's, or exponential-log Dice
    explog_gamma: float = Field(0.3, gt=0)              # exponent of the exponential-log Dice (the authors: 0.3)
    balanced_sampler: bool = False                      # class-balanced weight batches (the authors' loader)
    figures: bool = True                                # alpha_<module>.png and scam_cells.png (seconds each on CPU)
    torch_threads: int | None = Field(None, ge=1)       # CPU threads during the search; None: leave torch's setting

    @model_validator(mode="after")
    def _some_alpha_epoch(self) -> SCAMParams:
        if self.alternation == "epoch" and not any(e % self.weight_every for e in range(self.warmup_epochs,
                                                                                        self.epochs)):
            raise ValueError(f"at least one α epoch after warm-up (epoch e >= warmup_epochs with e % weight_every "
                             f"!= 0), got epochs={self.epochs}, warmup_epochs={self.warmup_epochs}, "
                             f"weight_every={self.weight_every}")
        return self


def _kind_panel(label: str) -> str:
    """``alpha.png`` panel of a label: one for every SAM edge of every module and one for every CAM edge (16
    panels of up to 48 curves each were slow and unreadable; ``alpha_<module>.png`` has the per-edge detail)."""
    parts = label.split("/")
    return f"all {parts[1].upper()} cells" if len(parts) == 3 and parts[1] in ("sam", "cam") else label


def attention_scopes(labels: list[str]) -> list[str]:
    """The module scopes of ``<scope>/<sam|cam>/<edge>`` labels, in label order (empty for other spaces)."""
    out: list[str] = []
    for label in labels:
        parts = label.split("/")
        if len(parts) == 3 and parts[1] in ("sam", "cam") and parts[0] not in out:
            out.append(parts[0])
    return out


class NASSCAMSearch(OneShotStrategy):
    """NAS-SCAM (Liu et al., MICCAI 2020): warm-up, then α/weight alternation by epoch; argmax per attention edge.

    Built as ``NASSCAMSearch(**params)`` (keyword-only, validated by :class:`SCAMParams`).
    """

    name = "scam"
    Params = SCAMParams
    chosen_as = "NAS-SCAM argmax"

    def __init__(self, **params: Any):
        self.params = self.Params(**params)

    def hooks(self, data: Any) -> OneShotHooks:
        """The engine hooks of this search (schedule, loss, sampler, α panels)."""
        p = self.params
        criterion = None
        if p.loss == "explog":
            from mednas_nni.tasks.seg_losses_explog import ExpLogDiceLoss

            criterion = ExpLogDiceLoss(gamma=p.explog_gamma)
        return OneShotHooks(arch_epoch=lambda e: e % p.weight_every != 0, criterion=criterion,
                            label_groups=_kind_panel,
                            train_batch_sampler=self._balanced_sampler(data) if p.balanced_sampler else None,
                            chosen_as=self.chosen_as, title="NAS-SCAM (first-order)", log_name="NAS-SCAM")

    def _balanced_sampler(self, data: Any) -> Any:
        from .scam_sampler import ClassBalancedBatchSampler, classes_present

        if not hasattr(data, "arrays"):
            raise ConfigError(f"strategy scam: balanced_sampler needs a data set with arrays(split) (class-index "
                              f"masks), got {type(data).__name__}")
        masks = data.arrays("train")[1]
        present = classes_present(masks, int(data.info.num_classes))
        p = self.params

        def build(dataset: Any, batch_size: int, seed: int) -> Any:
            if len(dataset) != len(present):
                raise ConfigError(f"strategy scam: balanced_sampler: expected the train split's {len(present)} "
                                  f"masks, got a data set of {len(dataset)}")
            try:
                return ClassBalancedBatchSampler(present, batch_size, seed)
            except ValueError as e:
                raise ConfigError(f"strategy scam: {e}") from None

        _logger.info("NAS-SCAM: class-balanced batches over %d train images (batch %d)", len(present), p.batch_size)
        return build

    def search(self, space: Any, task: Any, data: Any, ctx: Any) -> list[dict[str, Any]]:
        """Train the NAS-SCAM supernet of ``space`` for ``task`` on ``data``; return the argmax finalist."""
        p = self.params
        if getattr(task, "name", "segmentation") != "segmentation":
            raise ConfigError(f"strategy scam: expected the segmentation task, got '{task.name}'")
        # The supernet runs ~600 small convolutions per step (96 mixed edges): on a busy CPU, 2 OpenMP threads were
        # 25x slower than 1 (measured: 35 s vs 1.4 s per batch at load 18 on 2 cores), hence the option.
        import torch

        threads = torch.get_num_threads()
        if p.torch_threads is not None:
            torch.set_num_threads(p.torch_threads)
        try:
            outcome = run_oneshot(space, task, data, ctx, p, self.hooks(data), name=self.name)
        finally:
            torch.set_num_threads(threads)
        scopes = attention_scopes(list(space.simplify()))
        folder = ctx.run_dir.path
        if scopes and p.figures:
            title = "NAS-SCAM (first-order)"
            plot_module_alphas(outcome.rows, folder, scopes, title)
            plot_derived_cells(outcome.sample, outcome.probs, scopes, folder / CELLS_PNG,
                               f"NAS-SCAM on {getattr(data.info, 'name', 'data')}: {len(scopes)} module(s)")
        kept = sum(v != "none" for v in outcome.sample.values())
        _logger.info("NAS-SCAM: derived %d of %d edges (%d dropped as none) in %.1f s", kept, len(outcome.sample),
                     len(outcome.sample) - kept, outcome.seconds)
        return outcome.finalists

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.model_dump().items())})"

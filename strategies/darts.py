"""DARTS as a mednas one-shot strategy: NNI's plain ``DARTS`` driven without a ``NasExperiment``.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, arXiv:1806.09055.

Every choice of the search space (``LayerChoice``, ``InputChoice``, ``Repeat``, ``Cell``, categorical value choices)
becomes a softmax-weighted mixture over its candidates with one architecture vector α per label. NNI's
:class:`nni.nas.strategy.DARTS` (``nni/nas/oneshot/pytorch/differentiable.py``) then alternates, on every step, an α
update on a batch of the **val** split (Adam, ``arc_learning_rate``, betas (0.5, 0.999), weight decay 1e-3, as in
the paper) and a weight update on a batch of the **train** split (the task's loss, Adam ``lr``/``weight_decay``).
NOTE: NNI implements the *first-order* approximation of the paper only (no unrolled second-order gradient); the
paper reports first-order DARTS as slightly worse but 3-4x cheaper. The test split is never touched.

The search follows NNI's one-shot recipe by hand (``mutate_model`` → ``mutate_evaluator`` → ``evaluate`` →
``export``), because a one-shot ``NasExperiment`` leaves an entry in NNI's experiment manifest for every run and,
inside an nnictl trial, swallows intermediate results. It writes ``oneshot_metrics.csv`` (per epoch: losses, the
supernet's validation metrics, the probability of every candidate) and ``alpha.png`` into the run directory, and
returns one finalist, the argmax of α per label (``chosen_as: "DARTS argmax"``), which the core retrains from
scratch like any other finalist.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any

from pydantic import Field, model_validator

from mednas_nni.contracts import OneShotStrategy, PluginParams
from mednas_nni.engines.oneshot import (ALPHA_PNG, METRICS_CSV, OneShotRecorder, build_evaluator,
                                        finalists_from_export, fit_oneshot, make_loader, plot_alpha,
                                        supernet_modules)
from mednas_nni.errors import ConfigError

__all__ = ["DARTSSearch", "DARTSParams"]

_logger = logging.getLogger(__name__)


class DARTSParams(PluginParams):
    """Parameters of :class:`DARTSSearch` (``strategy.params``)."""

    epochs: int = Field(10, ge=1)                       # supernet training epochs (the paper: 50)
    batch_size: int = Field(64, ge=1)                   # train and val batches (the paper: 64)
    lr: float = Field(1e-3, gt=0)                       # Adam learning rate of the network weights
    weight_decay: float = Field(3e-4, ge=0)             # of the network weights (the paper: 3e-4)
    arc_learning_rate: float = Field(3e-4, gt=0)        # Adam learning rate of α (the paper: 3e-4)
    gradient_clip_val: float | None = Field(5.0, gt=0)  # weight-gradient norm clip (the paper: 5); None: off
    warmup_epochs: int = Field(0, ge=0)                 # first epochs train the weights only (α frozen)
    max_batches_per_epoch: int | None = Field(None, ge=1)  # Lightning limit_train_batches; None: the whole split
    val_every_epoch: bool = True                        # the supernet's validation metrics in the CSV, every epoch
    max_val_batches: int | None = Field(None, ge=1)     # of that validation; None: the whole val split
    augment: bool = False                               # the data set's training augmentation for weight batches
    log_prob_every_n_step: int = Field(10, ge=1)        # NNI logs α probabilities every n steps
    num_workers: int = Field(0, ge=0)                   # data-loader workers
    seed: int | None = None                             # None: the run's seed

    @model_validator(mode="after")
    def _warmup_below_epochs(self) -> DARTSParams:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs below epochs so that α is trained at all, got warmup_epochs="
                             f"{self.warmup_epochs} with epochs={self.epochs}")
        return self


class DARTSSearch(OneShotStrategy):
    """DARTS (Liu et al., ICLR 2019) on NNI's first-order implementation; one finalist, the argmax of α.

    Built as ``DARTSSearch(**params)`` (keyword-only, validated by :class:`DARTSParams`).
    """

    name = "darts"
    Params = DARTSParams
    chosen_as = "DARTS argmax"

    def __init__(self, **params: Any):
        self.params = self.Params(**params)

    def nni_strategy(self) -> Any:
        """The NNI strategy doing the work (subclasses return a DARTS variant, e.g. with a penalty)."""
        from nni.nas.strategy import DARTS

        p = self.params
        return DARTS(arc_learning_rate=p.arc_learning_rate, gradient_clip_val=p.gradient_clip_val,
                     log_prob_every_n_step=p.log_prob_every_n_step, warmup_epochs=p.warmup_epochs)

    def search(self, space: Any, task: Any, data: Any, ctx: Any) -> list[dict[str, Any]]:
        """Train the DARTS supernet of ``space`` for ``task`` on ``data`` and return the argmax finalist.

        ``space`` itself is left unchanged (the supernet is built from a deep copy).
        """
        import pytorch_lightning as pl

        p = self.params
        seed = ctx.cfg.run.seed if p.seed is None else p.seed
        pl.seed_everything(seed, workers=True, verbose=False)
        train_ds = data.dataset("train", augment=p.augment)
        val_ds = data.dataset("val", augment=False)
        train_loader = make_loader(train_ds, p.batch_size, shuffle=True, seed=seed, num_workers=p.num_workers)
        arch_loader = make_loader(val_ds, p.batch_size, shuffle=True, seed=seed + 1, num_workers=p.num_workers)

        n_labels = len(space.simplify())
        strategy = self.nni_strategy()
        try:
            supernet = strategy.mutate_model(copy.deepcopy(space))   # α initialised here: after seeding
        except TypeError as e:  # NNI: "dangling mutables", "only support categorical variables", Cell merge_op
            raise ConfigError(f"strategy darts: search space '{getattr(space, 'name', type(space).__name__)}' has "
                              "choices DARTS cannot relax; expected LayerChoice, InputChoice, Repeat, Cell or "
                              f"categorical Mutable* ops, got: {str(e).splitlines()[0]}") from None
        if not supernet_modules(supernet):
            # e.g. choices registered with add_mutable on the space itself, which no one-shot hook replaces
            raise ConfigError(f"strategy darts: search space '{getattr(space, 'name', type(space).__name__)}' has "
                              "no choice DARTS can relax; expected LayerChoice, InputChoice, Repeat, Cell or "
                              f"categorical Mutable* ops inside the network, got only {sorted(space.simplify())}")

        evaluate, default_key = None, None
        if p.val_every_epoch:
            eval_loader = make_loader(val_ds, p.batch_size, shuffle=False, seed=seed, num_workers=p.num_workers)
            default_key = f"val_{task.select_key(ctx.cfg.evaluator.select_by)}"

            def evaluate(_module: Any) -> dict[str, float]:
                return task.evaluate(supernet, eval_loader, device=ctx.device, max_batches=p.max_val_batches)

        epochs_total = p.epochs

        def log_epoch(row: dict[str, Any]) -> None:
            if row["epoch"] == 0:
                return
            nums = {k: v for k, v in row.items() if k != "epoch" and not k.startswith("p/")}
            _logger.info("DARTS epoch %d/%d: %s", row["epoch"], epochs_total,
                         ", ".join(f"{k}={v:.4g}" for k, v in nums.items()))

        recorder = OneShotRecorder(ctx.run_dir / METRICS_CSV, evaluate=evaluate, default_key=default_key,
                                   on_epoch=log_epoch)
        evaluator = build_evaluator(task, train_loader, arch_loader, run_dir=ctx.run_dir.path, device=ctx.device,
                                    max_epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay, dataset=data,
                                    callbacks=[recorder], limit_train_batches=p.max_batches_per_epoch,
                                    progress=bool(ctx.progress))
        oneshot = strategy.mutate_evaluator(evaluator)
        _logger.info("DARTS: %d labels, %d epochs on %d train / %d val images (first-order, NNI)",
                     n_labels, p.epochs, len(train_ds), len(val_ds))
        t0 = time.perf_counter()
        fit_oneshot(oneshot, supernet)
        sample = oneshot.module.export()
        probs = OneShotRecorder.probs(oneshot.module)
        _logger.info("DARTS done in %.1f s: %s", time.perf_counter() - t0, sample)
        task_name = getattr(task, "name", type(task).__name__)
        plot_alpha(recorder.rows, ctx.run_dir / ALPHA_PNG,
                   title=f"DARTS (first-order): softmax(α) per label, {task_name} task")
        return finalists_from_export(space, sample, self.chosen_as, probs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.model_dump().items())})"

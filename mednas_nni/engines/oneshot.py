"""Helpers shared by one-shot (supernet) strategies: NNI's Lightning evaluator, per-epoch records, finalists.

The engine that trains a supernet (penalty, alternation, warm-up, drop-path, per-epoch checkpoint and resume) is
:mod:`mednas_nni.engines.oneshot_engine`; its API for strategies is in that module's docstring. This module holds the
pieces it (and anything else) reuses. A one-shot search follows NNI's one-shot recipe by hand, without a
``NasExperiment`` (``strategy.mutate_model(space)``, ``strategy.mutate_evaluator(evaluator)``, :func:`fit_oneshot`,
``module.export()``; :func:`supernet_modules` tells whether the space could be relaxed at all):

* :func:`build_evaluator`: NNI's ``Lightning`` evaluator around the task's
  :class:`~mednas_nni.tasks.lightning.TaskLightningModule`, with NNI's traced ``DataLoader`` (seeded shuffling) and a
  Lightning ``Trainer`` that writes nothing into the current folder (no logger, no checkpoints, root = run dir).
* :class:`OneShotRecorder`: a Lightning callback that records, after every epoch, the losses, the supernet's
  validation metrics (optional) and the architecture probabilities (``export_probs()``, the softmax of α for DARTS)
  into ``oneshot_metrics.csv``; under an nnictl trial it also reports them with ``nni.report_intermediate_result``.
  Its rows are its Lightning state, so a resumed search continues the same CSV.
* :func:`plot_alpha`: ``alpha.png``, the probability of every candidate of every label (or label group) over the
  epochs.
* :func:`finalists_from_export`: the finalist record of an exported (argmax) sample, canonical and checked.
"""
from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from ..errors import SearchError
from ..io import atomic_savefig, atomic_write_text

__all__ = ["METRICS_CSV", "ALPHA_PNG", "make_loader", "trainer_device", "build_evaluator", "in_nni_trial",
           "OneShotRecorder", "plot_alpha", "finalists_from_export", "prob_column", "supernet_modules", "fit_oneshot"]

_logger = logging.getLogger(__name__)

METRICS_CSV = "oneshot_metrics.csv"
ALPHA_PNG = "alpha.png"


def prob_column(label: str, value: Any) -> str:
    """CSV column of the probability of ``value`` at ``label``: ``p/<label>/<value>``."""
    return f"p/{label}/{value}"


def supernet_modules(model: Any) -> list[Any]:
    """The one-shot super-modules (NNI ``BaseSuperNetModule``) inside ``model`` after ``mutate_model``; empty when
    no choice of the space could be relaxed (NNI then fails later with "Nothing to search")."""
    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule

    return [m for m in model.modules() if isinstance(m, BaseSuperNetModule)]


def make_loader(dataset: Any, batch_size: int, *, shuffle: bool, seed: int, num_workers: int = 0,
                drop_last: bool = False) -> Any:
    """NNI's traced ``DataLoader`` (what ``Lightning`` expects) over a data set of dict samples; seeded shuffling."""
    from nni.nas.evaluator.pytorch import DataLoader

    if len(dataset) == 0:
        raise SearchError("one-shot search: expected a non-empty data split, got 0 samples")
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=drop_last, persistent_workers=num_workers > 0)


def trainer_device(device: str) -> dict[str, Any]:
    """Lightning ``accelerator``/``devices`` for a mednas device string (``cpu``, ``cuda``, ``cuda:N``)."""
    if device.startswith("cuda"):
        _, _, index = device.partition(":")
        return {"accelerator": "gpu", "devices": [int(index)] if index else 1}
    if device == "mps":
        return {"accelerator": "mps", "devices": 1}
    return {"accelerator": "cpu", "devices": 1}


def build_evaluator(task: Any, train_loader: Any, val_loader: Any, *, run_dir: Path, device: str, max_epochs: int,
                    lr: float, weight_decay: float, dataset: Any = None, callbacks: list[Any] | None = None,
                    limit_train_batches: int | None = None, progress: bool = False) -> Any:
    """NNI's ``Lightning`` evaluator: ``task.lightning_module(lr=, weight_decay=, dataset=)`` trained by a traced
    ``Trainer`` that keeps every file in ``run_dir`` (no ``lightning_logs``, no checkpoints), no sanity check."""
    from nni.nas.evaluator.pytorch import Lightning, Trainer

    module = task.lightning_module(lr=lr, weight_decay=weight_decay, dataset=dataset)
    trainer = Trainer(max_epochs=max_epochs, default_root_dir=str(run_dir), logger=False, enable_checkpointing=False,
                      enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_train_batches=limit_train_batches, callbacks=list(callbacks or []),
                      **trainer_device(device))
    return Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader)


class _DropMissingValWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Validation dataloaders are missing" not in record.getMessage()


def fit_oneshot(oneshot_evaluator: Any, supernet: Any) -> Any:
    """``oneshot_evaluator.evaluate(supernet)`` (the Lightning fit of the one-shot module), without NNI's warning
    about missing validation loaders: one-shot strategies consume the val loader inside training on purpose."""
    nni_logger = logging.getLogger("nni.nas.evaluator.pytorch.lightning")
    quiet = _DropMissingValWarning()
    nni_logger.addFilter(quiet)
    try:
        return oneshot_evaluator.evaluate(supernet)
    finally:
        nni_logger.removeFilter(quiet)


def in_nni_trial() -> bool:
    """True inside an NNI trial that has its parameters (``nni.get_next_parameter()`` was called)."""
    import nni
    from nni.runtime.env_vars import trial_env_vars

    return trial_env_vars.NNI_PLATFORM not in (None, "unittest") and nni.get_current_parameter() is not None


def _scalar(v: Any) -> float | None:
    try:
        f = float(v.detach().cpu()) if isinstance(v, torch.Tensor) and v.numel() == 1 else float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class OneShotRecorder(pl.Callback):
    """Per-epoch record of a one-shot search: losses, validation metrics and architecture probabilities.

    One row before training (``epoch`` 0: the initial α) and one after every training epoch (``epoch`` 1, 2, ...):
    ``train_loss`` and ``arch_loss`` (epoch means logged by the task's module), ``val_<metric>`` from ``evaluate``
    (if given: ``evaluate(supernet) -> {metric: value}``) and ``p/<label>/<value>`` from the one-shot module's
    ``export_probs()``. The CSV is rewritten after every epoch, so an interrupted search leaves its history.

    Args:
        csv_path: where to write the CSV (``oneshot_metrics.csv`` in the run directory).
        evaluate: optional per-epoch validation of the supernet (e.g. ``task.evaluate`` on the val loader).
        default_key: the column reported as NNI's ``default`` (one meaning per experiment); if absent from a row,
            ``-train_loss`` is reported instead.
        on_epoch: optional ``on_epoch(row)`` called after every row (progress, logging).
        report_to_nni: report every row with ``nni.report_intermediate_result``; None: only in an NNI trial.
        extra: optional ``extra(pl_module) -> {column: value}`` added to every row (e.g. ``E_params``/``E_flops``).

    The rows are the callback's Lightning state (``state_dict``: a list of dicts of numbers), so a search resumed
    from a checkpoint continues the same CSV.
    """

    def __init__(self, csv_path: Path, *, evaluate: Callable[[Any], dict[str, float]] | None = None,
                 default_key: str | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 report_to_nni: bool | None = None, extra: Callable[[Any], dict[str, float]] | None = None):
        super().__init__()
        self.csv_path, self.evaluate, self.default_key, self.on_epoch = Path(csv_path), evaluate, default_key, on_epoch
        self.report_to_nni = in_nni_trial() if report_to_nni is None else report_to_nni
        self.extra = extra
        self.rows: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [{str(k): v for k, v in r.items()} for r in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state_dict.get("rows", [])]

    @staticmethod
    def probs(pl_module: Any) -> dict[str, dict[Any, float]]:
        """``{label: {value: probability}}`` of the one-shot module (empty if it has none)."""
        fn = getattr(pl_module, "export_probs", None)
        return {k: {v: float(p) for v, p in d.items()} for k, d in (fn() if fn else {}).items()}

    def _record(self, trainer: pl.Trainer, pl_module: Any, epoch: int, metrics: dict[str, Any]) -> None:
        row: dict[str, Any] = {"epoch": epoch}
        row.update({k: f for k, v in metrics.items() if (f := _scalar(v)) is not None})
        if self.extra is not None:
            row.update({k: f for k, v in self.extra(pl_module).items() if (f := _scalar(v)) is not None})
        for label, dist in self.probs(pl_module).items():
            row.update({prob_column(label, v): p for v, p in dist.items()})
        self.rows.append(row)
        self.write()
        if self.report_to_nni and epoch > 0:
            import nni

            default = row.get(self.default_key) if self.default_key else None
            if default is None:
                default = -row.get("train_loss", row.get("arch_loss", float("nan")))
            nni.report_intermediate_result({"default": default, **{k: v for k, v in row.items() if k != "epoch"}})
        if self.on_epoch is not None:
            self.on_epoch(row)

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not self.rows:
            self._record(trainer, pl_module, 0, {})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        keep = ("train_loss", "arch_loss")
        fresh = getattr(pl_module, "logged_this_epoch", None)     # the engine's module: only this epoch's logs
        metrics = {k: v for k, v in trainer.callback_metrics.items()
                   if (k in keep or k.startswith("penalty/")) and (fresh is None or k in fresh)}
        if self.evaluate is not None:
            was_training = pl_module.training
            try:
                metrics.update({f"val_{k}": v for k, v in self.evaluate(pl_module).items()})
            finally:
                pl_module.train(was_training)
        self._record(trainer, pl_module, trainer.current_epoch + 1, metrics)

    def write(self) -> None:
        """(Re)write the CSV with every row so far; columns: ``epoch``, losses, metrics, then probabilities."""
        cols: list[str] = []
        for row in self.rows:
            cols += [k for k in row if k not in cols]
        cols = [c for c in cols if not c.startswith("p/")] + [c for c in cols if c.startswith("p/")]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.csv_path, buf.getvalue())


def plot_alpha(rows: list[dict[str, Any]], path: Path, title: str = "architecture probabilities",
               groups: Callable[[str], str] | None = None) -> Path | None:
    """``alpha.png``: the probability of each candidate over the epochs (from recorder rows).

    One panel per label; with ``groups`` (``label -> group name``) one panel per group instead, showing for every
    candidate value the mean of its probability over the group's labels (a shaded band: min..max over them), which
    keeps cell spaces with dozens of edges readable.
    """
    cols = [c for c in (rows[0] if rows else {}) if c.startswith("p/")]
    if not cols:
        _logger.warning("no architecture probabilities recorded; %s not written", path)
        return None
    # A Figure without pyplot: no global backend switch, no GUI (renders with Agg).
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels: dict[str, dict[str, list[str]]] = {}          # panel -> value -> columns
    n_labels: dict[str, set[str]] = {}
    for c in cols:
        label, _, value = c[2:].rpartition("/")
        panel = groups(label) if groups is not None else label
        panels.setdefault(panel, {}).setdefault(value, []).append(c)
        n_labels.setdefault(panel, set()).add(label)
    n = len(panels)
    ncol = 2 if n in (2, 4) else min(n, 3)
    nrow = math.ceil(n / ncol)
    # one legend for the figure when every panel has the same candidates (cell spaces: 8 ops x many panels)
    same = len({tuple(v) for v in panels.values()}) == 1 and n > 1
    fig = Figure(figsize=(max(4.6 * ncol, 6.4), 3.4 * nrow + 0.6), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    epochs = [r["epoch"] for r in rows]
    colors: dict[str, str] = {}
    palette = [f"C{i}" for i in range(10) if i != 7]          # C7 (grey) is kept for the uniform line
    for ax, (panel, by_value) in zip(axes.flat, panels.items()):
        top = 0.0
        for value, vcols in by_value.items():
            data = np.array([[r.get(c, float("nan")) for c in vcols] for r in rows], dtype=float)
            color = colors.setdefault(value, palette[len(colors) % len(palette)])
            ax.plot(epochs, data.mean(axis=1), marker="o", ms=3, label=value, color=color)
            if data.shape[1] > 1:
                ax.fill_between(epochs, data.min(axis=1), data.max(axis=1), color=color, alpha=0.12, lw=0)
            top = max(top, float(np.nanmax(data)) if data.size else 0.0)
        ax.axhline(1 / len(by_value), color="0.5", lw=0.9, ls=":", label="uniform")
        k = len(n_labels[panel])
        ax.set_title(panel if k == 1 else f"{panel} (mean of {k} edges; band: min-max)", fontsize=10)
        ax.set_xlabel("epoch (0: initial α)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("p")
        ax.set_ylim(0, 1 if top > 0.6 else min(1.0, max(0.3, 1.15 * top)))   # early searches stay near uniform
        if not same:
            ax.legend(fontsize=7, loc="upper left", ncol=2 if len(by_value) > 4 else 1)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if same:
        handles, labels_ = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels_, loc="outside lower center", ncol=min(len(labels_), 5), fontsize=8)
    fig.suptitle(title, fontsize=11)
    return atomic_savefig(fig, path, dpi=110)


def finalists_from_export(space: Any, sample: dict[str, Any], chosen_as: str,
                          probs: dict[str, dict[Any, float]] | None = None) -> list[dict[str, Any]]:
    """The finalist of an exported sample: canonical (``space.canonicalize``), checked (``space.is_valid``), with
    the final probabilities as ``alpha`` (``{label: {str(value): p}}``) when given."""
    if hasattr(space, "canonicalize"):
        sample = space.canonicalize(sample)
    if hasattr(space, "is_valid"):
        ok, reason = space.is_valid(sample)
        if not ok:
            raise SearchError(f"one-shot search: the exported architecture is invalid ({reason}): {sample}")
    record: dict[str, Any] = {"sample": sample, "chosen_as": chosen_as}
    if probs:
        record["alpha"] = {k: {str(v): round(float(p), 6) for v, p in d.items()} for k, d in probs.items()}
    return [record]

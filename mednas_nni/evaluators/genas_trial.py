"""One GeNAS individual as one NNI trial: train the frozen CNN briefly, report the per-epoch curve and GeNAS-WF.

:func:`genas_trial` is the module-level function the ``genas_wf`` strategy wraps in NNI's ``FunctionalEvaluator``.
It runs in an NNI trial process (local training service) or in the driver process (sequential engine), gets the
frozen :class:`~mednas_nni.search_spaces.genas_cnn.GeNASCNN` and:

1. rebuilds the data set from its plugin name and params (cached per process),
2. re-initialises the weights from ``seed`` (the same seed for every individual: common random numbers) and
   trains ``epochs`` epochs with Adam (cross-entropy; class-weighted when the data set says so, e.g. MHSMA with
   ``imbalance: weighted_loss``; MHSMA's default ``oversample`` is already in its training split),
3. after every epoch evaluates the validation split and reports an NNI *intermediate* result
   ``{'default': val balanced accuracy, 'val_acc', 'val_f05', 'val_auc', 'train_loss', 'epoch'}``,
4. reports the *final* result ``{'default': fitness, 'fitness', last-epoch val metrics, 'best_val_balanced_acc',
   'params', 'seconds', 'history'}`` where the fitness is :data:`~mednas_nni.evaluators.fitness.FITNESS`
   ``[fitness](history, **fitness_params)`` (GeNAS-WF by default).

F0.5 uses **abnormal (label 1) as the positive class** (precision weighted over recall, beta = 0.5).
The training itself is the task's (:meth:`Task.train_curve <mednas_nni.contracts.Task.train_curve>`, by default
:func:`mednas_nni.tasks.training.train_curve`); this module keeps the NNI reporting and the pre-Core-v2 helpers
(:func:`load_data`, :func:`binary_metrics`, :func:`train_curve` taking a ``data`` dict) for existing callers.
If training fails, the reason is written to ``<error_dir>/<arch hash>.txt`` (so the strategy can record it) and the
exception is re-raised, so NNI marks the trial FAILED.
"""
from __future__ import annotations

import json
import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mednas_nni.tasks.training import materialize, split_tensors

__all__ = ["genas_trial", "train_curve", "binary_metrics", "load_data", "materialize"]

_logger = logging.getLogger(__name__)
_DATA_CACHE: dict[str, Any] = {}


def binary_metrics(y_true: np.ndarray, p_abnormal: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, F0.5 (positive = abnormal = 1) and ROC-AUC of binary predictions."""
    from sklearn.metrics import balanced_accuracy_score, fbeta_score, roc_auc_score

    y = np.asarray(y_true).reshape(-1).astype(int)
    p = np.asarray(p_abnormal, dtype=np.float64).reshape(-1)
    pred = (p >= threshold).astype(int)
    out = {"acc": float((pred == y).mean()),
           "balanced_acc": float(balanced_accuracy_score(y, pred)) if len(np.unique(y)) > 1 else float((pred == y).mean()),
           "f05": float(fbeta_score(y, pred, beta=0.5, pos_label=1, zero_division=0)),
           "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) > 1 else 0.5}
    return out


def load_data(data: dict[str, Any]) -> Any:
    """``{"plugin": data set, "task": its task}`` for ``data = {'name': ..., 'params': {...}}``, built once per
    process (the task is the registered plugin named by ``plugin.info.task``)."""
    from mednas_nni.registry import get_plugin

    key = json.dumps(data, sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        plugin = get_plugin("datasets", data["name"])(**data.get("params", {}))
        task = get_plugin("tasks", getattr(plugin.info, "task", None) or "classification")(plugin.info)
        _DATA_CACHE[key] = {"plugin": plugin, "task": task}
    return _DATA_CACHE[key]


def _tensors(entry: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y (N,) long)`` of a split, materialised once per process
    (:func:`~mednas_nni.tasks.training.split_tensors`)."""
    x, y = split_tensors(entry["plugin"], split)
    if y.ndim > 1 and y[0].numel() == 1:   # one label per image: (N, 1) -> (N,), as before Core v2
        y = y.reshape(-1)
    return x, y


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device: str, batch_size: int = 256) -> np.ndarray:
    """P(label 1) of a binary classifier (softmax column 1), in eval mode."""
    model.eval()
    out = [torch.softmax(model(x[i:i + batch_size].to(device)), 1)[:, 1].cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def train_curve(model: nn.Module, data: dict[str, Any], *, epochs: int, batch_size: int = 64, lr: float = 1e-3,
                weight_decay: float = 0.0, seed: int = 0, device: str = "cpu", augment: bool = False,
                max_batches_per_epoch: int | None = None, on_epoch: Any = None) -> list[dict[str, float]]:
    """:meth:`Task.train_curve <mednas_nni.contracts.Task.train_curve>` of the data set named by ``data``."""
    entry = load_data(data)
    return entry["task"].train_curve(model, entry["plugin"], epochs=epochs, batch_size=batch_size, lr=lr,
                                     weight_decay=weight_decay, seed=seed, device=device, augment=augment,
                                     max_batches_per_epoch=max_batches_per_epoch, on_epoch=on_epoch)


def _resolve_device(device: str) -> str:
    if device in ("auto", "cuda") or device.startswith("cuda"):
        return device if device != "auto" and torch.cuda.is_available() else \
            ("cuda" if torch.cuda.is_available() else "cpu")
    return device


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    # NNI stores metrics as JSON: NaN/inf are not valid there.
    return {k: v for k, v in d.items() if not (isinstance(v, float) and not math.isfinite(v))}


def genas_trial(model: nn.Module, *, data: dict[str, Any], epochs: int, fitness: str = "genas_wf",
                fitness_params: dict[str, Any] | None = None, batch_size: int = 64, lr: float = 1e-3,
                weight_decay: float = 0.0, seed: int = 0, device: str = "auto", augment: bool = False,
                max_batches_per_epoch: int | None = None, error_dir: str | None = None,
                torch_threads: int | None = None) -> dict[str, Any]:
    """NNI evaluator function of one GeNAS individual (see the module doc). Returns the final dict it reported."""
    import nni

    from mednas_nni.evaluators.fitness import get_fitness

    t0 = time.perf_counter()
    arch = getattr(model, "arch", None)
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    try:
        score = get_fitness(fitness, fitness_params)

        def on_epoch(rec: dict[str, float]) -> None:
            nni.report_intermediate_result(_finite({
                "default": rec["val_balanced_acc"], "val_acc": rec["val_acc"], "val_f05": rec["val_f05"],
                "val_auc": rec["val_auc"], "train_loss": rec["train_loss"], "epoch": rec["epoch"]}))

        history = train_curve(model, data, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                              seed=seed, device=_resolve_device(device), augment=augment,
                              max_batches_per_epoch=max_batches_per_epoch, on_epoch=on_epoch)
        fit = score(history)
        last = history[-1]
        final = {"default": fit, "fitness": fit,
                 **{k: last[k] for k in ("val_balanced_acc", "val_acc", "val_f05", "val_auc")},
                 "best_val_balanced_acc": max(h["val_balanced_acc"] for h in history),
                 "params": int(sum(p.numel() for p in model.parameters())),
                 "seconds": time.perf_counter() - t0, "history": history}
    except Exception as e:
        if error_dir and arch is not None:
            from mednas_nni.io import atomic_write_text
            from mednas_nni.strategies._utils import arch_hash

            atomic_write_text(Path(error_dir) / f"{arch_hash(arch)}.txt",
                              f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        raise
    nni.report_final_result(_finite(final))
    return final

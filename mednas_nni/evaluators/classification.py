"""Compatibility shim: classification training and metrics moved to the ``classification`` task.

The metrics live in :mod:`mednas_nni.tasks.classification`, the training loop in :func:`mednas_nni.tasks.training.fit`
(``ClassificationTask(info).fit(model, dataset, recipe)``). :func:`train_classifier` and :func:`evaluate_classifier`
keep the old call signatures for scripts written before Core v2 (they now read dict batches).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from mednas_nni.tasks.classification import (classification_metrics, is_multilabel, majority_baseline,
                                             predict_scores)
from mednas_nni.tasks.training import recalibrate_bn

__all__ = ["train_classifier", "evaluate_classifier", "predict_scores", "classification_metrics",
           "majority_baseline", "recalibrate_bn", "is_multilabel"]

_logger = logging.getLogger(__name__)


def evaluate_classifier(model: nn.Module, loader: Any, task: str, device: str = "cpu",
                        max_batches: int | None = None) -> dict[str, float]:
    """:func:`classification_metrics` of :func:`predict_scores` for the MedMNIST task type ``task`` (binary: label 1
    positive, as :func:`train_classifier`'s task, whose classes have no names)."""
    positive = 1 if task == "binary-class" else None
    return classification_metrics(*predict_scores(model, loader, task, device, max_batches), task, positive=positive)


class _Sets:
    """The two data sets of the old signature, seen as a data-set plugin by :func:`~mednas_nni.tasks.training.fit`."""

    def __init__(self, train_set: Any, val_set: Any):
        self.sets = {"train": train_set, "val": val_set}

    def dataset(self, split: str, augment: bool = False) -> Any:
        return self.sets[split]

    def loss_weights(self) -> None:
        return None


def train_classifier(model: nn.Module, train_set: Any, val_set: Any, task: str, *, epochs: int, batch_size: int,
                     lr: float, weight_decay: float = 0.0, milestones: tuple[float, ...] = (0.5, 0.75),
                     gamma: float = 0.1, select_by: str = "val_auc", device: str = "cpu", seed: int = 0,
                     num_workers: int = 0, max_batches_per_epoch: int | None = None,
                     on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                     progress: bool = False, desc: str = "train", bn_batches: int | None = 32) -> dict[str, Any]:
    """The pre-Core-v2 signature of :func:`mednas_nni.tasks.training.fit` (``on_epoch(epoch, record)``)."""
    from mednas_nni.config import EvaluatorConfig
    from mednas_nni.contracts import DatasetInfo
    from mednas_nni.tasks.classification import ClassificationTask
    from mednas_nni.tasks.training import fit

    info = DatasetInfo(name="train_classifier", task_type=task, num_classes=0, in_channels=0, image_size=0,
                       label_names=[])
    recipe = EvaluatorConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                             milestones=list(milestones), gamma=gamma, select_by=select_by, num_workers=num_workers,
                             max_batches_per_epoch=max_batches_per_epoch, bn_batches=bn_batches)
    callback = None if on_epoch is None else (lambda rec: on_epoch(int(rec["epoch"]), rec))
    return fit(ClassificationTask(info), model, _Sets(train_set, val_set), recipe, device=device, seed=seed,
               on_epoch=callback, progress=progress, desc=desc)

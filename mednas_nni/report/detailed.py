"""The winner's detailed metrics merged into ``metrics.json`` (called once by :func:`~mednas_nni.experiment.
choose_best`): the task's :meth:`~mednas_nni.contracts.Task.detailed_metrics` (added to ``val`` / ``test``
without changing any key already there, plus the top-level ``positive_class`` / ``operating_point``), and a
``data`` block (split sizes, class names, per-split class counts) for the report.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["add_detailed_metrics", "data_summary"]

_logger = logging.getLogger(__name__)


def data_summary(dataset: Any, task: Any) -> dict[str, Any]:
    """``{"name", "task_type", "label_names", "split_sizes", "class_counts"}`` (class counts: classification)."""
    info = dataset.info
    out: dict[str, Any] = {"name": info.name, "task_type": info.task_type,
                           "label_names": [str(n) for n in info.label_names], "split_sizes": {}}
    counts: dict[str, list[int]] = {}
    for split in ("train", "val", "test"):
        try:
            y = dataset.arrays(split)[1]
        except Exception as e:  # noqa: BLE001 - a plugin without arrays for a split: sizes unknown, not fatal
            _logger.debug("no arrays for split %s: %s", split, e)
            continue
        out["split_sizes"][split] = int(len(y))
        if task.name == "classification" and not str(info.task_type).startswith("multi-label"):
            counts[split] = np.bincount(np.asarray(y).reshape(-1).astype(int),
                                        minlength=int(info.num_classes)).tolist()
    if counts:
        out["class_counts"] = counts
    return out


def add_detailed_metrics(metrics: dict[str, Any], task: Any, model: Any, dataset: Any, device: str = "cpu",
                         seed: int = 0) -> dict[str, Any]:
    """Merge ``task.detailed_metrics(...)`` and :func:`data_summary` into ``metrics`` (in place; returned).

    Keys the split dicts already hold keep their values (the golden tests pin them); a task whose detailed metrics
    fail logs a warning and the run still finishes with its plain metrics.
    """
    try:
        details = task.detailed_metrics(model, dataset, device, seed)
    except Exception as e:  # noqa: BLE001 - the report must not lose a finished search
        _logger.warning("detailed metrics failed (%s: %s); metrics.json keeps the plain metrics", type(e).__name__, e)
        details = {}
    for key, value in details.items():
        if key in ("val", "test") and isinstance(value, dict):
            split = metrics.setdefault(key, {})
            for k, v in value.items():
                split.setdefault(k, v)
        else:
            metrics.setdefault(key, value)
    metrics.setdefault("data", data_summary(dataset, task))
    return metrics

"""Task plugins (entry-point group ``mednas_nni.tasks``): what a model is trained for and how it is scored.

========================  =====================================================================================
``classification``        :class:`~mednas_nni.tasks.classification.ClassificationTask` (MedMNIST metrics)
``segmentation``          :class:`~mednas_nni.tasks.segmentation.SegmentationTask` (MONAI Dice/IoU/HD95 metrics)
========================  =====================================================================================

The task-generic training loops are in :mod:`mednas_nni.tasks.training`. Names are imported on first use, so
``import mednas_nni.tasks`` stays cheap (no torch) in processes that only list plugins.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ClassificationTask", "SegmentationTask", "fit", "train_curve"]

_WHERE = {"ClassificationTask": "classification", "SegmentationTask": "segmentation", "fit": "training",
          "train_curve": "training"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

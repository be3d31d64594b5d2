"""How the exporter names and compares the task's metrics (in reports, the model card and the CLI summary)."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["metric_label", "higher_is_better", "metric_names", "baseline_of", "fmt"]

_LABELS = {"acc": "ACC", "auc": "AUC", "balanced_acc": "balanced ACC", "f05": "F0.5", "f1": "F1", "dice": "Dice",
           "iou": "IoU", "miou": "mean IoU", "hd95": "HD95", "pixel_acc": "pixel accuracy",
           "pixel_accuracy": "pixel accuracy", "fbeta_positive": "F-beta (positive class)"}
# Distances (smaller is better); every other metric of the built-in tasks is a score in [0, 1].
_LOWER = ("hd95", "hausdorff", "distance", "loss", "asd")


def metric_label(name: str) -> str:
    """Display name of a metric (``balanced_acc`` -> ``balanced ACC``; per-class ``dice_<c>`` -> ``Dice <c>``)."""
    if name in _LABELS:
        return _LABELS[name]
    head, _, tail = name.partition("_")
    return f"{_LABELS[head]} {tail}" if head in _LABELS and tail else name


def higher_is_better(name: str) -> bool:
    return not any(k in name.lower() for k in _LOWER)


def metric_names(task: Any, *reports: dict[str, Any] | None) -> list[str]:
    """The task's metric names (in its order) that appear in one of ``reports``, then the other scalar keys of the
    reports that are not per-class variants of them (``dice_<class>``), e.g. a reported-only ``hd95``."""
    declared = list(getattr(task, "metric_names", ()) or ())
    seen: list[str] = []
    for rep in reports:
        for k, v in (rep or {}).items():
            if k not in seen and isinstance(v, (int, float)) and not isinstance(v, bool):
                seen.append(k)
    extra = [k for k in seen if k not in declared and not any(k.startswith(d + "_") for d in declared)]
    return [k for k in declared if k in seen] + extra


def baseline_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """The trivial baseline's test metrics in ``metrics.json`` (``baseline_test``; older runs:
    ``majority_baseline_test``), or ``{}``."""
    return dict(metrics.get("baseline_test") or metrics.get("majority_baseline_test") or {})


def fmt(v: Any) -> str:
    """A metric value with 4 decimals (``n/a`` for missing, ``inf``/``nan`` as such)."""
    if v is None or not isinstance(v, (int, float)):
        return "n/a"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4f}"

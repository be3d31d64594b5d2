"""Segmentation metrics from MONAI: Dice and IoU per foreground class, 95th-percentile Hausdorff distance, pixel
accuracy, with one explicit rule for classes that are absent from an image.

Per image and foreground class the scores come from ``monai.metrics.DiceMetric``, ``MeanIoU`` and
``HausdorffDistanceMetric(percentile=95)`` (all ``include_background=False``, ``reduction="none"``; Dice and IoU
with ``ignore_empty=False``). Absent classes (Maier-Hein et al., "Metrics reloaded", *Nat. Methods* 21:195, 2024,
doi:10.1038/s41592-023-02151-z, discuss the choice):

* a class absent from **both** the truth and the prediction of an image is left out of that class's average (it
  says nothing about the model; MONAI's ``ignore_empty=True`` would also leave out false positives on an empty
  truth, which hides them, so it is not used);
* a class present in exactly one of them scores Dice = IoU = 0 and HD95 = the image diagonal (MONAI returns NaN
  there; the diagonal is the largest distance possible in the image, so the mean stays finite and bounded);
* a class left out of every image (never present, never predicted) scores Dice = IoU = 1 and HD95 = 0.

Averages: each class is the mean over its images (a mean of per-image scores, as MONAI's ``mean_batch``), and
``dice`` / ``iou`` / ``hd95`` are the unweighted means over the foreground classes. ``pixel_acc`` is the fraction
of all pixels whose predicted class is right (background included). The per-pixel bookkeeping is hand-written
(a few lines of torch); the scores themselves are MONAI's.
"""
from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["one_hot", "segmentation_scores", "SegmentationMeter", "class_keys"]

_logger = logging.getLogger(__name__)


def one_hot(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, 1, H, W)`` or ``(B, H, W)`` class indices -> ``(B, K, H, W)`` float one-hot (MONAI layout)."""
    m = mask.long()
    if m.ndim == 4:
        m = m[:, 0]
    return torch.nn.functional.one_hot(m, num_classes).permute(0, 3, 1, 2).float()


def segmentation_scores(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """Per-image scores of class-index masks ``pred`` and ``truth`` (``(B, 1, H, W)`` or ``(B, H, W)``).

    Returns:
        ``{"dice", "iou", "hd95"}``: ``(B, K - 1)`` float64 tensors (NaN where the class is absent from both
        masks; see the module doc), and ``"correct"`` / ``"pixels"``: 0-d tensors for pixel accuracy.
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU

    if pred.shape != truth.shape:
        raise ValueError(f"segmentation masks: expected prediction and truth of the same shape, got "
                         f"{tuple(pred.shape)} and {tuple(truth.shape)}")
    p, t = one_hot(pred.cpu(), num_classes), one_hot(truth.cpu(), num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # MONAI warns once per empty mask; the rule below handles those cases
        dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(p, t).double()
        iou = MeanIoU(include_background=False, reduction="none", ignore_empty=False)(p, t).double()
        hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(p, t).double()
    in_pred, in_truth = p[:, 1:].flatten(2).any(-1), t[:, 1:].flatten(2).any(-1)
    both_absent = ~in_pred & ~in_truth
    one_absent = in_pred ^ in_truth
    h, w = p.shape[-2:]
    hd = torch.where(one_absent | ~torch.isfinite(hd), torch.full_like(hd, math.hypot(h, w)), hd)
    nan = torch.full_like(dice, float("nan"))
    return {"dice": torch.where(both_absent, nan, dice), "iou": torch.where(both_absent, nan, iou),
            "hd95": torch.where(both_absent, nan, hd),
            "correct": (pred.cpu().long() == truth.cpu().long()).sum(), "pixels": torch.tensor(truth.numel())}


def class_keys(label_names: Sequence[str], num_classes: int) -> list[str]:
    """Metric-name suffixes of the foreground classes 1..K-1 (``label_names`` lower-cased, non-alphanumerics as
    ``_``; ``class<i>`` when names are missing or collide)."""
    names = [str(n) for n in label_names]
    if len(names) == num_classes - 1:       # names given without the background
        names = ["background"] + names
    keys = []
    for c in range(1, num_classes):
        k = re.sub(r"[^0-9a-z]+", "_", names[c].lower()).strip("_") if c < len(names) else ""
        keys.append(k if k and k not in keys else f"class{c}")
    return keys


class SegmentationMeter:
    """Accumulates :func:`segmentation_scores` over batches; :meth:`compute` gives the metric dict."""

    def __init__(self, num_classes: int, label_names: Sequence[str] = ()):
        self.num_classes = int(num_classes)
        self.keys = class_keys(label_names, self.num_classes)
        self._parts: dict[str, list[torch.Tensor]] = {"dice": [], "iou": [], "hd95": []}
        self._correct = 0
        self._pixels = 0

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        s = segmentation_scores(pred, truth, self.num_classes)
        for k in self._parts:
            self._parts[k].append(s[k])
        self._correct += int(s["correct"])
        self._pixels += int(s["pixels"])

    def compute(self) -> dict[str, float]:
        """``{"dice", "iou", "hd95", "pixel_acc", "dice_<class>"...}`` (module doc for the averaging rules)."""
        if not self._pixels:
            raise ValueError("segmentation metrics: expected at least one batch, got none")
        out: dict[str, float] = {}
        per_class: dict[str, list[float]] = {}
        for name, empty_value in (("dice", 1.0), ("iou", 1.0), ("hd95", 0.0)):
            v = torch.cat(self._parts[name])                       # (N, K - 1), NaN = left out
            valid = ~torch.isnan(v)
            counts = valid.sum(0)
            means = torch.where(valid, v, torch.zeros_like(v)).sum(0) / counts.clamp(min=1)
            means = torch.where(counts > 0, means, torch.full_like(means, empty_value))
            per_class[name] = [float(m) for m in means]
            out[name] = float(means.mean()) if len(means) else empty_value
        out["pixel_acc"] = self._correct / self._pixels
        for key, d in zip(self.keys, per_class["dice"]):
            out[f"dice_{key}"] = d
        return out

    def details(self, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
        """The winner's report keys: ``per_class`` (Dice/IoU/HD95 of every foreground class), ``ci95`` (percentile
        bootstrap over images, ``n_boot`` resamples seeded by ``seed``, of ``dice``/``iou``/``hd95`` and every
        ``dice_<class>``), ``per_image_dice`` (each image's mean Dice over the classes it scores; ``None`` where
        no foreground is in truth or prediction) and ``per_image_dice_summary``."""
        if not self._pixels:
            raise ValueError("segmentation metrics: expected at least one batch, got none")
        mats = {k: torch.cat(v).numpy() for k, v in self._parts.items()}          # (N, K - 1), NaN = left out
        empty = {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
        out: dict[str, Any] = {"per_class": {
            key: {name: _class_means(mats[name][None], empty[name])[0, c] for name in mats}
            for c, key in enumerate(self.keys)}}
        for row in out["per_class"].values():
            row.update({k: float(v) for k, v in row.items()})
        n = mats["dice"].shape[0]
        if n_boot > 0 and n:
            # Hand-written resampling of whole images (vectorised over resamples): the per-image matrices are
            # already MONAI's scores; only the averaging rule of :meth:`compute` is re-applied per resample.
            rng = np.random.default_rng(seed)
            ci: dict[str, list[float]] = {}
            for start in range(0, n_boot, 250):
                idx = rng.integers(0, n, size=(min(250, n_boot - start), n))
                for name in mats:
                    means = _class_means(mats[name][idx], empty[name])        # (B, K - 1)
                    ci.setdefault(name, []).extend(means.mean(1).tolist())
                    if name == "dice":
                        for c, key in enumerate(self.keys):
                            ci.setdefault(f"dice_{key}", []).extend(means[:, c].tolist())
            out["ci95"] = {k: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] for k, v in ci.items()}
        else:
            out["ci95"] = {}
        out["ci_n_boot"] = int(n_boot)
        out["ci_method"] = f"percentile bootstrap over images, {n_boot} resamples, seed {seed}"
        d = mats["dice"]
        scored = ~np.isnan(d).all(1) if d.shape[1] else np.zeros(len(d), bool)
        per_image = np.full(len(d), np.nan)
        if scored.any():
            per_image[scored] = np.nanmean(d[scored], axis=1)
        out["per_image_dice"] = [None if np.isnan(v) else float(v) for v in per_image]
        v = per_image[scored]
        out["per_image_dice_summary"] = {
            "n": int(scored.sum()), "n_without_foreground": int((~scored).sum()),
            **({"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                "q25": float(np.quantile(v, 0.25)), "median": float(np.median(v)),
                "q75": float(np.quantile(v, 0.75)), "max": float(v.max())} if len(v) else {})}
        return out


def _class_means(v: np.ndarray, empty_value: float) -> np.ndarray:
    """``(..., N, K - 1)`` per-image scores (NaN = left out) -> ``(..., K - 1)`` class means by :meth:`compute`'s
    rule (a class left out of every image scores ``empty_value``)."""
    valid = ~np.isnan(v)
    counts = valid.sum(-2)
    sums = np.where(valid, v, 0.0).sum(-2)
    return np.where(counts > 0, sums / np.maximum(counts, 1), empty_value)

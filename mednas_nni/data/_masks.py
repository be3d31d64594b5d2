"""Mask values to class indices (label maps) and PIL resizing of image/mask pairs, shared by ``folder`` and ``volume``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from PIL import Image

__all__ = ["auto_label_map", "apply_label_map", "resize_image", "resize_mask", "MAX_AUTO_CLASSES"]

MAX_AUTO_CLASSES = 16
"""Without ``label_map`` or ``label_names``, masks holding ``0..K-1`` are taken as class indices up to this K."""


def auto_label_map(values: Iterable[int], n_names: int | None) -> dict[int, int] | str:
    """The label map implied by the raw mask values, or the reason there is none (a string).

    ``{0, 255}`` (or a subset) with two classes -> ``{0: 0, 255: 1}``; values ``0..K-1`` -> identity, where K is
    ``n_names`` (the number of ``label_names``) or, without names, ``max + 1`` (at most :data:`MAX_AUTO_CLASSES`).
    """
    vals = sorted(int(v) for v in values)
    if set(vals) <= {0, 255} and 255 in vals and n_names in (None, 2):
        return {0: 0, 255: 1}
    k = n_names if n_names is not None else max(max(vals, default=0) + 1, 2)
    if vals and vals[0] >= 0 and vals[-1] < k and (n_names is not None or k <= MAX_AUTO_CLASSES):
        return {i: i for i in range(k)}
    expected = f"class indices 0..{n_names - 1} (label_names has {n_names})" if n_names else \
        f"0/255 (binary) or class indices 0..K-1 (K <= {MAX_AUTO_CLASSES})"
    return f"expected {expected}, got values {_short(vals)}; set label_map: {{raw value: class index}}"


def _short(vals: list[int], n: int = 12) -> str:
    return "[" + ", ".join(map(str, vals[:n])) + (", ...]" if len(vals) > n else "]")


def apply_label_map(mask: np.ndarray, label_map: Mapping[int, int]) -> tuple[np.ndarray, list[int]]:
    """``mask`` (any integer dtype) -> ``uint8`` class indices, plus the raw values that ``label_map`` lacks."""
    vals, inverse = np.unique(mask, return_inverse=True)
    unknown = [int(v) for v in vals if int(v) not in label_map]
    lut = np.asarray([label_map.get(int(v), 0) for v in vals], dtype=np.uint8)
    return lut[inverse.reshape(mask.shape)], unknown


def resize_image(img: np.ndarray, size: int | None) -> np.ndarray:
    """``uint8`` ``(H, W)`` or ``(H, W, 3)`` -> ``(size, size[, 3])``, PIL bilinear (antialiased when shrinking)."""
    if size is None or img.shape[:2] == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


def resize_mask(mask: np.ndarray, size: int | None) -> np.ndarray:
    """Integer ``(H, W)`` mask -> ``(size, size)``, PIL nearest neighbour (raw values are kept, none invented)."""
    if size is None or mask.shape == (size, size):
        return mask
    if mask.dtype == np.uint8:
        return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))
    out = Image.fromarray(mask.astype(np.int32)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(out).astype(mask.dtype)

"""MONAI transform pipelines for 2-D classification images."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import (Compose, EnsureChannelFirst, EnsureType, NormalizeIntensity, RandAffine, RandFlip,
                              ScaleIntensityRange)

__all__ = ["classification_transforms"]


def classification_transforms(channels_last: bool, mean: Sequence[float], std: Sequence[float],
                              augment: bool = False) -> Compose:
    """uint8 ``(H, W)`` or ``(H, W, C)`` -> float tensor ``(C, H, W)``, scaled to [0, 1] then ``(x - mean) / std``.

    With ``augment``: a random horizontal flip and a small random affine (rotation ±0.1 rad, scale ±10 %),
    each with probability 0.5. (The MedMNIST v2 recipe uses no augmentation; it is off by default.)
    """
    ts = [
        EnsureChannelFirst(channel_dim=-1 if channels_last else "no_channel"),
        ScaleIntensityRange(a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0),
        NormalizeIntensity(subtrahend=np.asarray(mean, dtype=np.float32),
                           divisor=np.asarray(std, dtype=np.float32), channel_wise=True),
    ]
    if augment:
        ts += [RandFlip(prob=0.5, spatial_axis=1),
               RandAffine(prob=0.5, rotate_range=0.1, scale_range=0.1, padding_mode="border")]
    ts.append(EnsureType(data_type="tensor", dtype=None, track_meta=False))
    return Compose(ts)

"""MONAI dictionary-transform pipelines turning raw ``uint8`` arrays into ``{"image", "label"}`` training samples.

Both pipelines scale ``uint8`` pixels to [0, 1] and then apply ``(x - mean) / std`` per channel, so that a plugin's
``DatasetInfo.mean``/``std`` fully describe the network input (the exported ``preprocessing.json`` repeats them).
The classification pipeline without ``augment`` gives exactly the tensors of the pre-Core-v2 array pipeline
(``tests/data/test_dict_samples.py`` compares them item by item).

Random transforms are seeded when the pipeline is built, from ``torch.initial_seed()`` unless a seed is given, so
``torch.manual_seed(s)`` before ``plugin.dataset(split, augment=True)`` makes the augmented views reproducible in a
single-process loader (MONAI's own ``DataLoader`` reseeds them per worker).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (Compose, EnsureChannelFirstd, EnsureTyped, NormalizeIntensityd, RandAffined, RandFlipd,
                              ScaleIntensityRanged)

__all__ = ["classification_transforms", "segmentation_transforms"]

IMAGE, LABEL = "image", "label"


def _intensity(channels_last: bool, mean: Sequence[float], std: Sequence[float]) -> list:
    return [
        EnsureChannelFirstd(keys=IMAGE, channel_dim=-1 if channels_last else "no_channel"),
        ScaleIntensityRanged(keys=IMAGE, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0),
        NormalizeIntensityd(keys=IMAGE, subtrahend=np.asarray(mean, dtype=np.float32),
                            divisor=np.asarray(std, dtype=np.float32), channel_wise=True),
    ]


def _seeded(ts: list, seed: int | None) -> Compose:
    return Compose(ts).set_random_state(seed=int(torch.initial_seed() if seed is None else seed) % 2**32)


def classification_transforms(channels_last: bool, mean: Sequence[float], std: Sequence[float],
                              augment: bool = False, seed: int | None = None) -> Compose:
    """``{"image": uint8 (H, W) or (H, W, C), "label": (k,) ints}`` -> float ``(C, H, W)`` image, long ``(k,)`` label.

    With ``augment``: a random horizontal flip and a small random affine (rotation ±0.1 rad, scale ±10 %),
    each with probability 0.5. (The MedMNIST v2 recipe uses no augmentation; it is off by default.)
    """
    ts = _intensity(channels_last, mean, std)
    if augment:
        ts += [RandFlipd(keys=IMAGE, prob=0.5, spatial_axis=1),
               RandAffined(keys=IMAGE, prob=0.5, rotate_range=0.1, scale_range=0.1, padding_mode="border")]
    ts += [EnsureTyped(keys=IMAGE, data_type="tensor", dtype=None, track_meta=False),
           EnsureTyped(keys=LABEL, data_type="tensor", dtype=torch.long, track_meta=False)]
    return _seeded(ts, seed)


def segmentation_transforms(channels_last: bool, mean: Sequence[float], std: Sequence[float],
                            augment: bool = False, seed: int | None = None) -> Compose:
    """``{"image": uint8 (H, W) or (H, W, C), "label": uint8 (H, W) class indices}`` -> float ``(C, H, W)`` image
    and long ``(1, H, W)`` mask.

    With ``augment``: the same random flip and affine as for classification, applied to image and mask together
    (bilinear for the image, nearest for the mask, which is padded with background).
    """
    ts = _intensity(channels_last, mean, std) + [EnsureChannelFirstd(keys=LABEL, channel_dim="no_channel")]
    if augment:
        ts += [RandFlipd(keys=(IMAGE, LABEL), prob=0.5, spatial_axis=1),
               RandAffined(keys=(IMAGE, LABEL), prob=0.5, rotate_range=0.1, scale_range=0.1,
                           mode=("bilinear", "nearest"), padding_mode=("border", "zeros"))]
    ts += [EnsureTyped(keys=IMAGE, data_type="tensor", dtype=torch.float32, track_meta=False),
           EnsureTyped(keys=LABEL, data_type="tensor", dtype=torch.long, track_meta=False)]
    return _seeded(ts, seed)

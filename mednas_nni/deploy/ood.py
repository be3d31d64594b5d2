"""Out-of-distribution checks of ``mednas predict``: does an input look like what the model was trained on?

A model answers for any image; these checks make it say when the answer is meaningless. Each input gets a list
of reasons (empty = nothing noticed), from what the bundle's ``preprocessing.json`` records:

* **DICOM Modality** (``acquisition.dicom_modalities``): a CT or MR file given to an ultrasound model.
* **Volumes**: a slice of a 3-D volume (NIfTI/MHA, a DICOM series, a multi-frame CT/MR) given to a model trained
  on 2-D images (``acquisition.from_volumes`` false).
* **Colour**: a colour image (channels that differ) given to a model trained on grayscale images.
* **Image statistics** (``input_statistics``): the per-image mean and standard deviation of the intensities and
  the shares of near-black (< 5 % of 255) and near-white (> 95 %) pixels, computed on the image as the model sees
  it before normalisation (0..255 at the model's size) and compared with the range of the training images.

The statistics are a coarse screen, written out here because they must run without torch and match the
exporter's numbers exactly (numpy on both sides): they catch blank, inverted, saturated or very differently
exposed images, not every foreign image. A bundle without ``acquisition`` and ``input_statistics`` (format
version < 3) cannot be checked: its records say ``ood: null`` and a note says why.
"""
from __future__ import annotations

import numpy as np

from .image import InputImage
from .preprocessing import AcquisitionSpec, FeatureRange, InputStatistics, Preprocessing

__all__ = ["FEATURES", "image_features", "feature_table", "training_statistics", "acquisition_description",
           "ood_reasons"]

FEATURES = ("mean", "std", "dark_fraction", "bright_fraction")
_DARK, _BRIGHT = 0.05 * 255.0, 0.95 * 255.0
_MIN_MARGIN = {"mean": 2.0, "std": 2.0, "dark_fraction": 0.02, "bright_fraction": 0.02}
_COLOUR_SPREAD = 8.0  # mean max-min over the channels, in grey levels: JPEG chroma noise stays below it


def feature_table(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of ``(N, H, W)`` or ``(N, H, W, C)`` images in 0..255 (channels averaged)."""
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 4:
        a = a.mean(axis=-1)
    flat = a.reshape(len(a), -1)
    return {"mean": flat.mean(1), "std": flat.std(1), "dark_fraction": (flat < _DARK).mean(1),
            "bright_fraction": (flat > _BRIGHT).mean(1)}


def image_features(pixels: np.ndarray) -> dict[str, float]:
    """The statistics of one ``(H, W)`` or ``(H, W, C)`` image in 0..255."""
    return {k: float(v[0]) for k, v in feature_table(np.asarray(pixels)[None]).items()}


def training_statistics(images: np.ndarray, split: str = "train") -> InputStatistics:
    """``input_statistics`` of the raw ``uint8`` training images (at the model's size)."""
    table = feature_table(images)
    features = {}
    for name, v in table.items():
        p0, med, p1 = (float(x) for x in np.percentile(v, [0.5, 50.0, 99.5]))
        margin = max(0.1 * (p1 - p0), _MIN_MARGIN[name])
        low, high = p0 - margin, p1 + margin
        if name.endswith("_fraction"):
            low, high = max(low, 0.0), min(high, 1.0)
        features[name] = FeatureRange(low=round(low, 4), high=round(high, 4), p0_5=round(p0, 4),
                                      median=round(med, 4), p99_5=round(p1, 4))
    shape = "x".join(str(s) for s in np.asarray(images).shape[1:3])
    return InputStatistics(computed_on=f"{split} split: {len(images)} images at {shape}, 0..255",
                           images=len(images), features=features)


def acquisition_description(acq: AcquisitionSpec) -> str:
    """``breast ultrasound (DICOM US), grayscale, 28x28 px, 2-D images``."""
    what = acq.modality or "images of an unrecorded modality"
    codes = f" (DICOM {', '.join(acq.dicom_modalities)})" if acq.dicom_modalities else ""
    colour = "grayscale" if acq.color == "gray" else "RGB"
    source = "slices of 3-D volumes" if acq.from_volumes else "2-D images"
    return f"{what}{codes}, {colour}, {acq.height}x{acq.width} px, {source}"


def _colour_spread(pixels: np.ndarray) -> float:
    a = np.asarray(pixels, dtype=np.float64)[..., :3]
    if pixels.dtype != np.uint8:
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    return float((a.max(axis=-1) - a.min(axis=-1)).mean())


def ood_reasons(img: InputImage, prep: Preprocessing, prepared: np.ndarray
                ) -> tuple[list[str], dict[str, float]]:
    """``(reasons, statistics)`` for one image; ``prepared`` is its ``(H, W, C)`` 0..255 model-size pixels."""
    reasons: list[str] = []
    acq, stats = prep.acquisition, prep.input_statistics
    feats = image_features(prepared)
    if acq is None and stats is None:
        img.notes.append(f"the bundle (format version {prep.version}) records neither acquisition nor training "
                         "image statistics: not checked for being out of distribution")
    if acq is not None:
        trained_on = acq.modality or "other"
        modality = str(img.meta.get("modality") or "")
        if modality and acq.dicom_modalities and modality.upper() not in acq.dicom_modalities:
            reasons.append(f"DICOM Modality {modality}; the model was trained on {trained_on} images "
                           f"(Modality {', '.join(acq.dicom_modalities)})")
        if img.from_volume and not acq.from_volumes:
            reasons.append(f"a slice of a 3-D volume; the model was trained on 2-D {trained_on} images")
        px = img.pixels
        if acq.color == "gray" and px.ndim == 3 and px.shape[-1] >= 3:
            spread = _colour_spread(px)
            if spread > _COLOUR_SPREAD:
                reasons.append(f"a colour image (mean channel spread {spread:.1f} grey levels); the model was "
                               f"trained on grayscale {trained_on} images")
    if stats is not None:
        for name, rng in stats.features.items():
            v = feats.get(name)
            if v is not None and not rng.low <= v <= rng.high:
                reasons.append(f"image {name.replace('_', ' ')} {v:.3g} outside the training images' range "
                               f"[{rng.low:.3g}, {rng.high:.3g}]")
    return reasons, {k: round(v, 4) for k, v in feats.items()}

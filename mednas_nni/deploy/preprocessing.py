"""The ``preprocessing.json`` of a bundle: its schema (defined once, here) and how it is applied to an image.

The exporter builds a :class:`Preprocessing` and writes it with :meth:`Preprocessing.write`; the bundle reads it
back with :meth:`Preprocessing.read`, so writer and reader cannot drift apart. Validation errors are one line
naming the file and the field (``preprocessing.json: input.channels: expected ..., got ...``).

Steps of :func:`preprocess` (the same for every task): images that are not ``uint8`` (16-bit PNG, DICOM, NIfTI,
float arrays) are min-max scaled to 0..255 (a constant image becomes 0; a DICOM with a VOI window maps the
window's range instead); gray<->RGB conversion only where ``channel_conversion`` allows it; bilinear resize (PIL)
to the input size; ``x * scale`` (1/255) and ``(x - mean[c]) / std[c]``. Standard library, numpy, pydantic and
PIL only (no torch).

Besides the steps, the file records the decision rule (``output``: the positive class and the operating
threshold of a binary classifier) and, from format version 3, what the model expects to see (``acquisition``:
modality, DICOM Modality codes, colour, size) and per-image statistics of the training images
(``input_statistics``), which :mod:`~mednas_nni.deploy.ood` compares every input with.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import DataError
from ._util import one_line
from .layout import BUNDLE_FORMAT, BUNDLE_VERSION, INPUT_NAME, MODEL_FILE, OUTPUT_NAME, PREPROCESSING_FILE
from .image import InputImage

__all__ = ["InputSpec", "ResizeSpec", "ChannelConversion", "IntensitySpec", "PositiveClass", "OperatingPoint",
           "OutputSpec", "AcquisitionSpec", "FeatureRange", "InputStatistics", "Preprocessing", "prepare_pixels",
           "normalize", "preprocess"]

# ITU-R 601-2 luma, the weights PIL uses for RGB -> L.
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Section):
    """``input``: the model input tensor."""

    name: str = INPUT_NAME
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    channels: int = Field(ge=1)
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    color: Literal["gray", "rgb"] | None = None
    batch: str = "dynamic"


class ResizeSpec(_Section):
    """``resize``: how an image of another size is brought to ``height x width``."""

    method: Literal["bilinear"] = "bilinear"
    library: str = "PIL Image.resize(..., Image.Resampling.BILINEAR)"
    rule: str = ("resize the whole image to height x width (aspect ratio not kept; the training images are "
                 "square); 8-bit images are resized as 8-bit, others as float")


class ChannelConversion(_Section):
    """``channel_conversion``: which channel conversions the model tolerates."""

    gray_to_rgb: bool = False
    rgb_to_gray: bool = False
    rule: str = ("gray->RGB repeats the channel (only for models trained on gray images stored as RGB); "
                 "RGB->gray uses ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B); anything else is an error")


class IntensitySpec(_Section):
    """``intensity``: ``x[c] = (pixel[c] * scale - mean[c]) / std[c]``."""

    source_range: list[float] = Field(default_factory=lambda: [0.0, 255.0])
    scale: float = 1.0 / 255.0
    mean: list[float]
    std: list[float]
    formula: str = "x[c] = (pixel[c] * scale - mean[c]) / std[c]"
    non_uint8: str = ("images that are not 8-bit (16-bit PNG, DICOM, NIfTI, float arrays) are min-max scaled to "
                      "0..255 first (a DICOM with a VOI window: the window's output range); a constant image "
                      "becomes 0")

    @model_validator(mode="after")
    def _nonzero_std(self) -> IntensitySpec:
        if any(s == 0 for s in self.std):
            raise ValueError(f"expected non-zero std values, got std {self.std}")
        return self


class PositiveClass(_Section):
    """``output.positive_class``: the class a binary decision is about (e.g. ``malignant``)."""

    index: int = Field(ge=0)
    name: str


class OperatingPoint(_Section):
    """``output.operating_point``: the probability threshold on the positive class, chosen on validation data."""

    model_config = ConfigDict(extra="allow")

    rule: str
    threshold: float = Field(ge=0.0, le=1.0)
    chosen_on: str = "val"
    min_sensitivity: float | None = None


class OutputSpec(BaseModel):
    """``output``: what the model output means. The task fills it (``Task.output_spec()``); task-specific keys
    (e.g. ``kind: mask``) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str = OUTPUT_NAME
    activation: Literal["softmax", "sigmoid"]
    decision: str = "argmax"
    threshold: float = 0.5
    num_classes: int | None = Field(None, ge=1)
    label_names: list[str] = Field(min_length=1)
    positive_class: PositiveClass | None = None
    operating_point: OperatingPoint | None = None

    @model_validator(mode="after")
    def _positive_is_a_label(self) -> OutputSpec:
        pc = self.positive_class
        if pc is not None and (pc.index >= len(self.label_names) or self.label_names[pc.index] != pc.name):
            raise ValueError(f"positive_class: expected one of the label names at its index "
                             f"({self.label_names}), got {pc.name!r} at index {pc.index}")
        return self


class AcquisitionSpec(_Section):
    """``acquisition``: what the training images were, so that inputs from elsewhere are flagged (:mod:`.ood`)."""

    modality: str = ""
    dicom_modalities: list[str] = Field(default_factory=list)
    color: Literal["gray", "rgb"]
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    from_volumes: bool = False
    description: str = ""


class FeatureRange(_Section):
    """One image statistic over the training images and the range an input may have (``low``..``high``)."""

    low: float
    high: float
    p0_5: float
    median: float
    p99_5: float


class InputStatistics(_Section):
    """``input_statistics``: per-image statistics of the training images (at the model's size, 0..255)."""

    computed_on: str
    images: int = Field(ge=1)
    features: dict[str, FeatureRange]
    rule: str = ("an input is out of distribution when a statistic lies outside [low, high] = the training "
                 "images' [0.5th, 99.5th] percentiles widened by 10 % of their span (at least 2 grey levels, "
                 "0.02 for fractions) on each side")


class Preprocessing(_Section):
    """The whole ``preprocessing.json`` (format version :data:`~mednas_nni.deploy.layout.BUNDLE_VERSION`).

    ``task`` names the task plugin (``classification`` / ``segmentation``), ``task_type`` refines it (the
    MedMNIST vocabulary, e.g. ``binary-class``). Version-1 files (whose ``task`` held the MedMNIST type) are
    read as version 2.
    """

    format: Literal["mednas-bundle"] = BUNDLE_FORMAT
    version: int = Field(BUNDLE_VERSION, ge=1, le=BUNDLE_VERSION)
    dataset: str | None = None
    task: str
    task_type: str | None = None
    model: str = MODEL_FILE
    model_int8: str | None = None
    input: InputSpec
    resize: ResizeSpec = Field(default_factory=ResizeSpec)
    channel_conversion: ChannelConversion = Field(default_factory=ChannelConversion)
    intensity: IntensitySpec
    output: OutputSpec
    acquisition: AcquisitionSpec | None = None
    input_statistics: InputStatistics | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade_v1(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("version") == 1 and "task_type" not in data:
            data = dict(data)
            task = data.get("task")
            if isinstance(task, str) and task != "segmentation":
                data["task"], data["task_type"] = "classification", task
            else:
                data["task_type"] = task
        return data

    @model_validator(mode="after")
    def _per_channel(self) -> Preprocessing:
        for key in ("mean", "std"):
            v = getattr(self.intensity, key)
            if len(v) != self.input.channels:
                raise ValueError(f"intensity.{key}: expected {self.input.channels} value(s) (one per channel), "
                                 f"got {v!r}")
        return self

    @property
    def segmentation(self) -> bool:
        """True for bundles whose output is a per-pixel class map."""
        return self.task == "segmentation"

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, data: Any, source: str = PREPROCESSING_FILE) -> Preprocessing:
        """Validate ``data``; a :class:`DataError` naming ``source`` and the field otherwise."""
        if not isinstance(data, dict):
            raise DataError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != BUNDLE_FORMAT or not isinstance(data.get("version"), int) \
                or not 1 <= data["version"] <= BUNDLE_VERSION:
            raise DataError(f"{source}: expected format {BUNDLE_FORMAT!r} version <= {BUNDLE_VERSION}, got "
                            f"{data.get('format')!r} version {data.get('version')!r}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise DataError(f"{source}: {_first_error(e)}") from None

    @classmethod
    def read(cls, path: str | os.PathLike) -> Preprocessing:
        """Read and validate a ``preprocessing.json`` file."""
        f = Path(path)
        if not f.is_file():
            raise DataError(f"{f}: file not found; expected the bundle's preprocessing description "
                            "(written by 'mednas export')")
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{f}: expected JSON, got a damaged file ({one_line(e)})") from None
        return cls.from_dict(data, str(f))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (every field, defaults included)."""
        return self.model_dump(mode="json")

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically as ``path`` (validated again first: what is written can be read back)."""
        from ..io import atomic_write_json

        doc = self.to_dict()
        type(self).from_dict(doc, str(path))
        return atomic_write_json(path, doc)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"])
    if err["type"] == "missing":
        return f"{loc}: expected a value, got none"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown field; expected only the fields of format version {BUNDLE_VERSION}"
    if err["type"] == "value_error":  # our own validators: the message already says expected/got
        msg = msg.removeprefix("Value error, ")
        return f"{loc}: {msg}" if loc else msg
    return f"{loc}: {msg.replace('Input should be ', 'expected ')}, got {err.get('input')!r}"


# ---------------------------------------------------------------------------------------------------- applying it
def _to_channels_last_float(img: InputImage) -> tuple[np.ndarray, bool]:
    """``(H, W, C)`` float32 in 0..255 and whether the source was uint8."""
    arr = img.pixels
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"{img.name}: expected a 2-D image (H, W) or (H, W, C), got shape {img.pixels.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32), True
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"{img.name}: expected finite pixel values, got NaN or inf")
    if img.value_range is not None:  # a DICOM VOI LUT's output range: mapped as a viewer would show it
        lo, hi = img.value_range
        return (np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.float32), False
    lo, hi = float(a.min()), float(a.max())
    if hi > lo:
        a = (a - lo) / (hi - lo) * 255.0
        img.notes.append(f"{arr.dtype} intensities min-max scaled from [{lo:g}, {hi:g}] to [0, 255]")
    else:
        a = np.zeros_like(a)
        img.notes.append(f"constant {arr.dtype} image ({lo:g}) mapped to 0")
    return a.astype(np.float32), False


def _convert_channels(img: InputImage, a: np.ndarray, channels: int, conv: ChannelConversion,
                      source: str) -> np.ndarray:
    have = a.shape[-1]
    if have == channels:
        return a
    if have == 1 and channels == 3 and conv.gray_to_rgb:
        img.notes.append("gray image repeated to 3 channels")
        return np.repeat(a, 3, axis=-1)
    if have == 3 and channels == 1 and conv.rgb_to_gray:
        img.notes.append("RGB image converted to gray (ITU-R 601-2 luma)")
        return (a @ _LUMA)[..., None]
    raise DataError(f"{img.name}: expected an image with {channels} channel(s) (or one that {source} allows "
                    f"converting), got {have} channel(s)")


def _resize(img: InputImage, a: np.ndarray, height: int, width: int, uint8: bool) -> np.ndarray:
    from PIL import Image

    h, w = a.shape[:2]
    if (h, w) == (height, width):
        return a
    img.notes.append(f"resized from {h}x{w} to {height}x{width} (bilinear)")
    out = []
    for c in range(a.shape[-1]):
        ch = a[..., c]
        if uint8:  # exactly what a device resizing an 8-bit image with PIL gets
            im = Image.fromarray(np.clip(np.rint(ch), 0, 255).astype(np.uint8))  # mode L
        else:
            im = Image.fromarray(np.ascontiguousarray(ch, dtype=np.float32))  # mode F
        out.append(np.asarray(im.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32))
    return np.stack(out, axis=-1)


def prepare_pixels(img: InputImage, prep: Preprocessing, source: str = PREPROCESSING_FILE) -> np.ndarray:
    """Steps 1-3 of :func:`preprocess`: ``(H, W, C)`` float32 in 0..255 at the model's size (what the
    out-of-distribution statistics are computed on, like the training images)."""
    inp = prep.input
    a, uint8 = _to_channels_last_float(img)
    a = _convert_channels(img, a, inp.channels, prep.channel_conversion, source)
    return _resize(img, a, inp.height, inp.width, uint8 and bool(np.array_equal(a, np.rint(a))))


def normalize(a: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Step 4 of :func:`preprocess`: ``(H, W, C)`` 0..255 -> the model input ``(C, H, W)`` float32."""
    norm = prep.intensity
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(1, 1, -1)
    std = np.asarray(norm.std, dtype=np.float32).reshape(1, 1, -1)
    x = (a * np.float32(norm.scale) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def preprocess(img: InputImage, prep: Preprocessing | dict[str, Any], source: str = PREPROCESSING_FILE
               ) -> np.ndarray:
    """Apply a bundle's preprocessing to one image; returns ``(C, H, W)`` float32 (steps: module docstring).

    Args:
        img: the image (its ``notes`` get one line per conversion made).
        prep: the validated :class:`Preprocessing` (a plain dict is validated first).
        source: the file named in error messages.

    Raises:
        DataError: the image cannot be converted to the model's channels or shape.
    """
    if not isinstance(prep, Preprocessing):
        prep = Preprocessing.from_dict(prep, source)
    return normalize(prepare_pixels(img, prep, source), prep)

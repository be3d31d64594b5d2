"""The common base of the 2-D segmentation data plugins (``folder``, ``volume``): parameters, split, label map,
decode-once cache, ``DatasetInfo``, ``arrays`` and dict samples.

A subclass lists its cases (``stem -> (image path, mask path)``) and reads one case as ``uint8`` images
``(n, S, S[, 3])`` with raw integer masks ``(n, S, S)`` (``n = 1`` for a 2-D image, the slices of a volume);
everything else lives here. Mean and std are measured on the training split (``uint8 / 255``, per channel, rounded
to 4 decimals) unless given as parameters: a fixed 0.5/0.5 would leave dark fluorescence or EM images far from zero
mean, and the measured values travel with ``DatasetInfo`` into the exported preprocessing, so inference matches.
"""
from __future__ import annotations

import abc
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from ..contracts import DatasetInfo, DatasetPlugin, PluginParams
from ..errors import ConfigError, DataError
from ._masks import apply_label_map, auto_label_map
from ._split import SPLITS, file_split, fraction_split

if TYPE_CHECKING:  # pragma: no cover
    import torch.utils.data

__all__ = ["SegmentationParams", "SegmentationDataset"]

_logger = logging.getLogger(__name__)
_CACHE: dict[str, _Decoded] = {}


class SegmentationParams(PluginParams):
    """Parameters common to every 2-D segmentation data plugin (paths are relative to ``root``)."""

    root: Path
    images: str = "images"
    masks: str = "masks"
    size: int | None = Field(128, ge=8, le=4096)
    label_map: dict[int, int] | None = None
    label_names: list[str] | None = None
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    split_files: dict[Literal["train", "val", "test"], str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    name: str | None = None
    licence: str = ""
    citation: str = ""
    modality: str = ""                       # what the images are, e.g. "nuclei fluorescence microscopy"
    dicom_modalities: list[str] = Field(default_factory=list)   # DICOM Modality codes of such images, e.g. [CT]

    @field_validator("split")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"three fractions >= 0 summing to 1 (train, val, test), got {list(v)}")
        return v

    @field_validator("label_map")
    @classmethod
    def _classes(cls, v: dict[int, int] | None) -> dict[int, int] | None:
        if v is not None and (not v or min(v.values()) < 0 or max(v.values()) > 255):
            raise ValueError(f"a non-empty map raw value -> class index 0..255, got {v}")
        return v

    @field_validator("split_files")
    @classmethod
    def _three_files(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and set(v) != set(SPLITS):
            raise ValueError(f"one file for each of train, val and test, got {sorted(v)}")
        return v

    @model_validator(mode="after")
    def _names_cover_map(self) -> SegmentationParams:
        if self.label_map and self.label_names is not None and max(self.label_map.values()) >= len(self.label_names):
            top = max(self.label_map.values())
            raise ValueError(f"label_names: expected a name for every class in label_map (0..{top}), "
                             f"got {len(self.label_names)} names")
        return self


@dataclass
class _Decoded:
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    cases: dict[str, list[str]]
    label_map: dict[int, int]
    mean: list[float]
    std: list[float]
    seconds: float


def _mean_std(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``uint8`` images ``(N, H, W[, C])`` scaled to [0, 1], rounded to 4 decimals
    (exact, from the 256-bin histogram of each channel)."""
    chans = x.reshape(-1, 1) if x.ndim == 3 else x.reshape(-1, x.shape[-1])
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for c in range(chans.shape[1]):
        h = np.bincount(chans[:, c], minlength=256).astype(np.float64)
        m = float((h * levels).sum() / h.sum())
        mean.append(round(m, 4))
        std.append(max(round(float(np.sqrt((h * (levels - m) ** 2).sum() / h.sum())), 4), 1e-3))
    return mean, std


class SegmentationDataset(DatasetPlugin):
    """Base of the 2-D segmentation data sets; subclasses implement :meth:`_cases` and :meth:`_read_case`."""

    default_task: ClassVar[str] = "segmentation"
    Params: ClassVar[type[SegmentationParams]] = SegmentationParams
    _unit: ClassVar[str] = "image"
    _max_cases_field: ClassVar[str] = "max_images"

    def __init__(self, **params: Any):
        try:
            self.params = self.Params(**params)
        except ValidationError as e:   # the config layer reports these itself; direct callers get one line too
            err = e.errors()[0]
            where = ".".join(map(str, err["loc"])) or "params"
            raise ConfigError(f"dataset '{self.name}': {where}: {err['msg']}, got {err.get('input')!r}") from None
        self.root = Path(self.params.root)

    # ------------------------------------------------------------------ subclass API
    @abc.abstractmethod
    def _cases(self) -> dict[str, tuple[Path, Path]]:
        """Every case: stem -> (image path, mask path); raises DataError on unmatched stems or empty folders."""

    @abc.abstractmethod
    def _read_case(self, stem: str, image: Path, mask: Path) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images ``(n, S, S[, C])`` and raw integer masks ``(n, S, S)`` of one case (resized to ``size``)."""

    def _keep(self, masks: np.ndarray) -> np.ndarray:
        """Which of a case's 2-D samples to keep (after label mapping); all by default."""
        return np.ones(len(masks), dtype=bool)

    @property
    def _channels(self) -> int:
        return 1

    # ------------------------------------------------------------------ helpers for subclasses
    def _folder(self, sub: str) -> Path:
        p = Path(sub)
        return p if p.is_absolute() else self.root / p

    def _error(self, msg: str) -> DataError:
        return DataError(f"dataset '{self.name}': {msg}")

    # ------------------------------------------------------------------ decoding (once per process)
    def _decoded(self) -> _Decoded:
        key = f"{type(self).__module__}.{type(self).__name__}:{self.params.model_dump_json()}"
        if key not in _CACHE:
            _CACHE[key] = self._decode()
        return _CACHE[key]

    def _split(self, cases: dict[str, tuple[Path, Path]]) -> dict[str, list[str]]:
        p = self.params
        max_cases = getattr(p, self._max_cases_field, None)
        if p.split_files is None:
            return fraction_split(list(cases), p.split, p.split_seed, max_cases)
        known = {s: s for s in cases}
        known.update({path.name: s for s, pair in cases.items() for path in pair})
        return file_split({s: self._folder(f) for s, f in p.split_files.items()}, known, max_cases)

    def _decode(self) -> _Decoded:
        t0 = time.perf_counter()
        cases = self._cases()
        splits = self._split(cases)
        for s in SPLITS:
            if not splits[s]:
                raise self._error(f"split {s}: expected at least one {self._unit}, got 0 of {len(cases)} "
                                  f"(split {list(self.params.split)}; raise the fraction or "
                                  f"{self._max_cases_field})")
        raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        values: set[int] = set()
        for s in SPLITS:
            for stem in splits[s]:
                img, mask = self._read_case(stem, *cases[stem])
                raw[stem] = (img, mask)
                first = next(iter(raw))
                if img.shape[1:] != raw[first][0].shape[1:]:
                    raise self._error(f"{cases[stem][0]}: expected size {raw[first][0].shape[1:3]} like "
                                      f"{cases[first][0].name}, got {img.shape[1:3]}; set size to resize")
                values.update(int(v) for v in np.unique(mask))
        label_map = self.params.label_map
        if label_map is None:
            names = self._label_names_given()
            found = auto_label_map(values, None if names is None else len(names))
            if isinstance(found, str):
                raise self._error(f"{self._folder(self.params.masks)}: {found}")
            label_map = found
        arrays = {}
        for s in SPLITS:
            xs, ys = [], []
            for stem in splits[s]:
                img, mask = raw.pop(stem)
                y, unknown = apply_label_map(mask, label_map)
                if unknown:
                    raise self._error(f"{cases[stem][1]}: expected mask values in label_map {label_map}, got "
                                      f"{unknown[:8]}")
                keep = self._keep(y)
                xs.append(img[keep])
                ys.append(y[keep])
            arrays[s] = (np.concatenate(xs), np.concatenate(ys))
            if not len(arrays[s][0]):
                raise self._error(f"split {s}: expected at least one 2-D sample, got 0 from {len(splits[s])} "
                                  f"{self._unit}(s)")
        mean, std = _mean_std(arrays["train"][0])
        seconds = time.perf_counter() - t0
        _logger.info("dataset %s: decoded %d %ss in %.1f s", self.name, sum(map(len, splits.values())), self._unit,
                     seconds)
        return _Decoded(arrays, splits, label_map, mean, std, seconds)

    # ------------------------------------------------------------------ contract
    def _label_names_given(self) -> list[str] | None:
        if self.params.label_names is not None:
            return list(self.params.label_names)
        classes = self.root / "classes.json"   # e.g. wbc_seg: {"0": "background", "1": "cytoplasm", ...}
        if classes.is_file():
            try:
                d = json.loads(classes.read_text())
                return [str(d[str(i)]) for i in range(len(d))]
            except (ValueError, KeyError, TypeError) as e:
                raise self._error(f"{classes}: expected {{\"0\": name, \"1\": name, ...}}, got unreadable JSON "
                                  f"({type(e).__name__}: {e})") from None
        return None

    @property
    def num_classes(self) -> int:
        names = self._label_names_given()
        if names is not None:
            return len(names)
        return max(max(self._decoded().label_map.values()) + 1, 2)

    def label_names(self) -> list[str]:
        names = self._label_names_given()
        if names is not None:
            return names
        k = self.num_classes
        return ["background", "foreground"] if k == 2 else ["background"] + [f"class_{i}" for i in range(1, k)]

    @property
    def info(self) -> DatasetInfo:
        d, p = self._decoded(), self.params
        x = d.arrays["train"][0]
        mean = list(p.mean) if p.mean is not None else d.mean
        std = list(p.std) if p.std is not None else d.std
        return DatasetInfo(
            name=p.name or self.root.name, task="segmentation", task_type="segmentation", spatial_dims=2,
            num_classes=self.num_classes, in_channels=self._channels, image_size=int(x.shape[1]),
            label_names=self.label_names(), licence=p.licence, citation=p.citation,
            split_sizes={s: len(d.arrays[s][0]) for s in SPLITS}, mean=mean, std=std,
            extra={"root": str(self.root), "label_map": {str(k): v for k, v in d.label_map.items()},
                   f"{self._unit}s_per_split": {s: len(v) for s, v in d.cases.items()},
                   "decode_seconds": round(d.seconds, 2)},
            modality=p.modality, dicom_modalities=[m.upper() for m in p.dicom_modalities],
            from_volumes=self._unit == "volume",
        )

    def cases(self, split: str) -> list[str]:
        """The sorted case names (image stems / volume names) in ``split``."""
        self._check_split(split)
        return list(self._decoded().cases[split])

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``uint8`` images ``(N, S, S)`` or ``(N, S, S, 3)`` and ``uint8`` class-index masks ``(N, S, S)``."""
        self._check_split(split)
        return self._decoded().arrays[split]

    @staticmethod
    def _check_split(split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")

    def dataset(self, split: str, augment: bool = False) -> torch.utils.data.Dataset:
        """MONAI ``Dataset`` of ``{"image": float (C, S, S), "label": long (1, S, S)}`` samples."""
        from monai.data import Dataset

        from .transforms import segmentation_transforms   # torch and MONAI load only when samples are needed

        x, y = self.arrays(split)
        info = self.info
        tf = segmentation_transforms(channels_last=x.ndim == 4, mean=info.mean, std=info.std, augment=augment)
        return Dataset(data=[{"image": x[i], "label": y[i]} for i in range(len(x))], transform=tf)

    @classmethod
    def check_params(cls, params: SegmentationParams) -> None:
        """Checked by ``mednas validate``: the root, the image and mask folders and any split files exist."""
        root = Path(params.root)
        if not root.is_dir():
            raise ConfigError(f"root: expected an existing folder, got {root} (not found)")
        for field in ("images", "masks"):
            sub = Path(getattr(params, field))
            folder = sub if sub.is_absolute() else root / sub
            if not folder.is_dir():
                raise ConfigError(f"{field}: expected a folder of {cls._unit}s, got {folder} (not found)")
        for s, f in (params.split_files or {}).items():
            path = Path(f) if Path(f).is_absolute() else root / f
            if not path.is_file():
                raise ConfigError(f"split_files.{s}: expected a file with one name a line, got {path} (not found)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, size={self.params.size})"

"""``volume``: 3-D medical volumes with label volumes, sliced to 2-D segmentation samples.

Each case is an image volume in ``images/`` with a mask volume of the same stem in ``masks/``:

* a DICOM series is a folder of ``.dcm`` files, read with MONAI's ``PydicomReader`` (slices ordered by position,
  rescale slope/intercept applied, so CT is in HU);
* NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd`` + raw) and NRRD files are read with SimpleITK
  (MONAI's ``ITKReader``/``NibabelReader`` would need ``itk``/``nibabel``, which mednas-nni does not depend on).

Image and mask must share the voxel grid: size, spacing, origin and direction (checked in physical LPS
coordinates, as ITK and DICOM define them). Volumes are indexed ``(i, j, k)`` = (x, y, z) as in MONAI; ``axis``
picks the slicing axis (default 2, axial for a DICOM series) and each slice is laid out with rows along the later
remaining axis (an axial slice has the rows and columns of the DICOM pixel data).

Parameters (besides the ``folder`` ones: ``root``, ``images``, ``masks``, ``size``, ``label_map``,
``label_names``, ``split``/``split_seed``/``split_files``, ``mean``/``std``, ``name``, ``licence``, ``citation``,
``modality``, ``dicom_modalities``)::

    axis: 2                     # 0, 1 or 2 in (i, j, k) order
    foreground_only: false      # keep only slices whose mask has a non-background pixel
    window: null                # [center, width] (e.g. CT soft tissue [40, 400]): clip and scale to 0..255
    percentiles: [0.5, 99.5]    # without window: per-volume percentiles scaled to 0..255
    max_volumes: null           # a seeded subset of at most this many volumes

The split unit is the volume (no patient in two splits); ``split_sizes`` count slices. Licence and citation are
those of the data set (params); the tests build their volumes from the ISBI 2012 EM slices (non-commercial research
use; Cardona et al., PLoS Biol 8:e1000525, 2010) and pydicom's ``CT_small.dcm`` header (MIT).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from ._masks import resize_image, resize_mask
from ._segbase import SegmentationDataset, SegmentationParams

__all__ = ["VolumeDataset", "VolumeParams", "VOLUME_SUFFIXES", "read_volume"]

_logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


class VolumeParams(SegmentationParams):
    axis: Literal[0, 1, 2] = 2
    foreground_only: bool = False
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    max_volumes: int | None = Field(None, ge=1)

    @field_validator("window")
    @classmethod
    def _width(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[1] <= 0:
            raise ValueError(f"[center, width] with width > 0, got {list(v)}")
        return v

    @field_validator("percentiles")
    @classmethod
    def _order(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 100:
            raise ValueError(f"[lower, upper] with 0 <= lower < upper <= 100, got {list(v)}")
        return v


@dataclass
class Geometry:
    """A voxel grid in physical LPS coordinates: size ``(i, j, k)``, spacing, origin, direction (3x3, columns)."""

    size: tuple[int, ...]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    def differs(self, other: Geometry) -> str | None:
        """The first property that differs (for a one-line error), or None."""
        if self.size != other.size:
            return "size"
        if not np.allclose(self.spacing, other.spacing, rtol=1e-4, atol=1e-4):
            return "spacing"
        if not np.allclose(self.origin, other.origin, atol=1e-3):
            return "origin"
        if not np.allclose(self.direction, other.direction, atol=1e-4):
            return "direction"
        return None

    def describe(self, what: str) -> str:
        v = {"size": self.size, "spacing": self.spacing, "origin": self.origin, "direction": self.direction}[what]
        return str(tuple(round(float(x), 4) for x in np.ravel(v))) if what != "size" else str(v)


def _stem(p: Path) -> str | None:
    if p.is_dir():
        return p.name
    low = p.name.lower()
    return next((p.name[:-len(s)] for s in VOLUME_SUFFIXES if low.endswith(s)), None)


def _read_dicom_series(folder: Path) -> tuple[np.ndarray, Geometry]:
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    with warnings.catch_warnings():   # MONAI warns about an optional GPU decoder it falls back from
        warnings.simplefilter("ignore")
        img = LoadImage(reader=PydicomReader(affine_lps_to_ras=False), image_only=True)(str(folder))
    a = np.asarray(img)
    affine = np.asarray(img.affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return a, Geometry(tuple(a.shape[:3]), spacing, affine[:3, 3], affine[:3, :3] / spacing)


def _read_sitk(path: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    if img.GetNumberOfComponentsPerPixel() != 1 or img.GetDimension() != 3:
        raise ValueError(f"expected a 3-D scalar volume, got {img.GetDimension()}-D with "
                         f"{img.GetNumberOfComponentsPerPixel()} component(s) per voxel")
    a = sitk.GetArrayFromImage(img).transpose(2, 1, 0)      # (k, j, i) -> (i, j, k), MONAI's order
    return a, Geometry(tuple(a.shape), np.asarray(img.GetSpacing()), np.asarray(img.GetOrigin()),
                       np.asarray(img.GetDirection()).reshape(3, 3))


def read_volume(path: Path) -> tuple[np.ndarray, Geometry]:
    """A volume ``(i, j, k)`` and its geometry: a DICOM series folder (MONAI ``PydicomReader``) or a NIfTI/MHA/MHD/
    NRRD file (SimpleITK)."""
    a, geo = _read_dicom_series(path) if path.is_dir() else _read_sitk(path)
    if a.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {a.shape}")
    return a, geo


class VolumeDataset(SegmentationDataset):
    """DICOM series or NIfTI/MHA/MHD volumes with same-grid mask volumes, sliced to 2-D along ``axis``."""

    name: ClassVar[str] = "volume"
    Params: ClassVar[type[VolumeParams]] = VolumeParams
    _unit: ClassVar[str] = "volume"
    _max_cases_field: ClassVar[str] = "max_volumes"
    params: VolumeParams

    def _list(self, sub: str, what: str) -> dict[str, Path]:
        folder = self._folder(sub)
        if not folder.is_dir():
            raise self._error(f"{what} folder {folder}: expected a folder, got no such folder")
        out: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            stem = _stem(p)
            if stem is None or p.name.startswith("."):
                continue
            if stem in out:
                raise self._error(f"{folder}: expected one volume per name, got {out[stem].name} and {p.name}")
            out[stem] = p
        if not out:
            raise self._error(f"{what} folder {folder}: expected DICOM series folders or "
                              f"{'/'.join(s[1:] for s in VOLUME_SUFFIXES)} files, got none")
        return out

    def _cases(self) -> dict[str, tuple[Path, Path]]:
        images = self._list(self.params.images, "image")
        masks = self._list(self.params.masks, "mask")
        for have, lack, what, sub in ((images, masks, "mask", self.params.masks),
                                      (masks, images, "image", self.params.images)):
            missing = sorted(set(have) - set(lack))
            if missing:
                raise self._error(f"{self._folder(sub)}: expected a {what} volume for every name, got "
                                  f"{len(missing)} without one (first: {have[missing[0]].name})")
        return {s: (images[s], masks[s]) for s in sorted(images)}

    def _read(self, path: Path) -> tuple[np.ndarray, Geometry]:
        try:
            return read_volume(path)
        except Exception as e:   # readers raise RuntimeError/OSError/ValueError/InvalidDicomError: report one line
            msg = " ".join(str(e).split())[:300]
            raise self._error(f"{path}: expected a readable 3-D volume, got {type(e).__name__}: {msg}") from None

    def _to_uint8(self, vol: np.ndarray) -> np.ndarray:
        from monai.transforms import ScaleIntensityRange, ScaleIntensityRangePercentiles

        v = vol.astype(np.float32)
        if self.params.window is not None:
            c, w = self.params.window
            tf = ScaleIntensityRange(a_min=c - w / 2, a_max=c + w / 2, b_min=0.0, b_max=255.0, clip=True)
        else:
            lo, hi = self.params.percentiles
            tf = ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=255.0, clip=True)
        return np.round(np.asarray(tf(v))).astype(np.uint8)

    def _slices(self, vol: np.ndarray) -> np.ndarray:
        return np.swapaxes(np.moveaxis(vol, self.params.axis, 0), 1, 2)   # (n, later axis, earlier axis)

    def _read_case(self, stem: str, image: Path, mask: Path) -> tuple[np.ndarray, np.ndarray]:
        vol, geo = self._read(image)
        lab, mgeo = self._read(mask)
        what = geo.differs(mgeo)
        if what:
            raise self._error(f"{mask}: expected the {what} of {image.name}, {geo.describe(what)}, got "
                              f"{mgeo.describe(what)}")
        if lab.dtype.kind == "f":
            if not np.array_equal(lab, np.round(lab)):
                raise self._error(f"{mask}: expected integer label values, got fractional {lab.dtype} values")
            lab = lab.astype(np.int64)
        elif lab.dtype.kind not in "ui":
            raise self._error(f"{mask}: expected integer label values, got {lab.dtype}")
        size = self.params.size
        imgs = [resize_image(np.ascontiguousarray(s), size) for s in self._slices(self._to_uint8(vol))]
        masks = [resize_mask(np.ascontiguousarray(s), size) for s in self._slices(lab)]
        return np.stack(imgs), np.stack(masks)

    def _keep(self, masks: np.ndarray) -> np.ndarray:
        if not self.params.foreground_only:
            return super()._keep(masks)
        return masks.reshape(len(masks), -1).any(axis=1)

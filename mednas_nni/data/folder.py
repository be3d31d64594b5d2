"""``folder``: 2-D segmentation from two folders of images and masks matched by file stem (PNG, TIF, JPEG, BMP).

Parameters (``data.params``; paths relative to ``root``)::

    root: /path/to/set          # required
    images: images              # folder of images
    masks: masks                # folder of masks, one per image, same stem, same height and width
    size: 128                   # resize to size x size (images bilinear, masks nearest); null keeps native sizes
    channels: 1                 # 1 = grey (PIL "L"), 3 = RGB (PIL "RGB"); an alpha channel is dropped
    label_map: {0: 0, 255: 1}   # raw mask value -> class index; default: 0/255 -> 0/1, or masks that already hold
                                # class indices 0..K-1 (K = len(label_names), or max + 1 <= 16 without names)
    label_names: [background, foreground]   # default: root/classes.json ({"0": name, ...}) when present
    split: [0.7, 0.15, 0.15]    # seeded split of the sorted stems (split_seed: 0) ...
    split_files: {train: train.txt, val: val.txt, test: test.txt}   # ... or one stem a line per split
    max_images: null            # a seeded subset of at most this many pairs (small CPU budgets)
    mean: null, std: null       # default: measured on the training split (see _segbase)
    name, licence, citation     # copied into DatasetInfo
    modality: ""                # what the images are ("nuclei microscopy"); the exported bundle records it
    dicom_modalities: []        # DICOM Modality codes of such images ([CT]); mednas predict flags other DICOMs

Images with 16-bit or float pixels are scaled to 0..255 per image (min to max) before the grey/RGB conversion.
Every image and mask is decoded once per process and kept in memory at ``size``.

Real sets it is tested on (``../shared/data``; none ships with mednas-nni): Data Science Bowl 2018 / BBBC038v1
``stage1_train`` (CC0; Caicedo et al., Nat. Methods 16:1247, 2019), Kvasir-SEG (research and educational use;
Jha et al., MMM 2020, LNCS 11962:451), the WBC Image Dataset (repository GPL-3.0, third-party images; Zheng et al.,
Micron 107:55, 2018) and ISBI 2012 EM (non-commercial research use; Cardona et al., PLoS Biol 8:e1000525, 2010).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from ._masks import resize_image, resize_mask
from ._segbase import SegmentationDataset, SegmentationParams

__all__ = ["FolderDataset", "FolderParams", "IMAGE_SUFFIXES"]

_logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


class FolderParams(SegmentationParams):
    channels: Literal[1, 3] = 1
    max_images: int | None = Field(None, ge=1)


class FolderDataset(SegmentationDataset):
    """2-D image + mask pairs from two folders, matched by stem; binary or multi-class masks."""

    name: ClassVar[str] = "folder"
    Params: ClassVar[type[FolderParams]] = FolderParams
    params: FolderParams

    @property
    def _channels(self) -> int:
        return self.params.channels

    def _list(self, sub: str, what: str) -> dict[str, Path]:
        folder = self._folder(sub)
        if not folder.is_dir():
            raise self._error(f"{what} folder {folder}: expected a folder, got no such folder")
        out: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                if p.stem in out:
                    raise self._error(f"{folder}: expected one file per stem, got {out[p.stem].name} and {p.name}")
                out[p.stem] = p
        if not out:
            raise self._error(f"{what} folder {folder}: expected {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files, "
                              "got none")
        return out

    def _cases(self) -> dict[str, tuple[Path, Path]]:
        images = self._list(self.params.images, "image")
        masks = self._list(self.params.masks, "mask")
        for have, lack, what in ((images, masks, "mask"), (masks, images, "image")):
            missing = sorted(set(have) - set(lack))
            if missing:
                folder = self._folder(self.params.masks if what == "mask" else self.params.images)
                raise self._error(f"{folder}: expected a {what} for every stem, got {len(missing)} stem(s) without "
                                  f"one (first: {have[missing[0]].name})")
        return {s: (images[s], masks[s]) for s in sorted(images)}

    def _open(self, path: Path) -> Image.Image:
        try:
            im = Image.open(path)
            im.load()
            return im
        except (UnidentifiedImageError, OSError) as e:
            raise self._error(f"{path}: expected a readable image, got {type(e).__name__}: {e}") from None

    def _read_image(self, path: Path) -> Image.Image:
        im = self._open(path)
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            a = np.asarray(im, dtype=np.float64)
            lo, hi = float(a.min()), float(a.max())
            a = np.zeros_like(a) if hi <= lo else (a - lo) * (255.0 / (hi - lo))
            im = Image.fromarray(np.round(a).astype(np.uint8))
        return im.convert("L" if self.params.channels == 1 else "RGB")

    def _read_mask(self, path: Path) -> np.ndarray:
        m = np.asarray(self._open(path))        # mode "P" gives palette indices, "I;16" uint16, "L" uint8
        if m.ndim == 3:
            if not all(np.array_equal(m[..., 0], m[..., c]) for c in range(1, min(3, m.shape[-1]))):
                raise self._error(f"{path}: expected a single-channel mask (or equal R, G, B), got colour values")
            m = m[..., 0]
        if m.dtype.kind not in "ui":
            raise self._error(f"{path}: expected integer mask values, got {m.dtype}")
        return m

    def _read_case(self, stem: str, image: Path, mask: Path) -> tuple[np.ndarray, np.ndarray]:
        im = self._read_image(image)
        m = self._read_mask(mask)
        if m.shape != (im.height, im.width):
            raise self._error(f"{mask}: expected the size of {image.name}, {im.height}x{im.width} (HxW), "
                              f"got {m.shape[0]}x{m.shape[1]}")
        size = self.params.size
        return resize_image(np.asarray(im), size)[None], resize_mask(m, size)[None]

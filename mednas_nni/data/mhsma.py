"""MHSMA, the Modified Human Sperm Morphology Analysis data set (Javadi & Mirroshandel 2019), read offline.

1,540 grayscale crops of single sperm cells (235 patients), official splits train 1000 / valid 240 / test 300, as
``x_{64,128}_{train,valid,test}.npy`` (uint8 ``(N, S, S)``) and ``y_{acrosome,head,vacuole,tail}_{split}.npy`` with
**0 = normal, 1 = abnormal** (the upstream README calls *normal* "positive"; we do not: our positive class for F0.5
is *abnormal*). Source: ``soroushj/mhsma-dataset`` (folder ``mhsma/``). No download exists: ``root`` is required.

Our split names ``train``/``val``/``test`` map to the files' ``train``/``valid``/``test``. Each label is a separate
binary task (``label``). The classes are imbalanced (abnormal: acrosome 30 %, head 27 %, vacuole 17 %, tail 5 % of
train), so ``imbalance`` chooses how training sees them:

* ``oversample`` (default): ``dataset('train')`` repeats minority-class images until both classes are equally
  frequent (a fixed, seeded index list; with ``augment`` the repeats are different random views). Because this
  happens in the data set, every trainer (GeNAS trials and the core's finalist retraining) gets it. Javadi &
  Mirroshandel also oversample.
* ``weighted_loss``: ``dataset('train')`` is the plain split and :meth:`MHSMADataset.class_weights` gives
  inverse-frequency weights; the GeNAS trial uses them in its cross-entropy (the core retraining uses a plain loss).
* ``none``: nothing.

``arrays(split)`` always returns the official, un-resampled arrays (used for baselines and test metrics).
Licence CC BY-NC-SA 4.0 (non-commercial, share-alike). Cite Javadi & Mirroshandel, Comput. Biol. Med. 109:182-194
(2019), doi:10.1016/j.compbiomed.2019.04.030; the data derive from HSMA-DS (Ghasemian et al. 2015).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..plugins import DatasetInfo, DatasetPlugin, PluginParams
from .transforms import classification_transforms
from ._imbalance import Indexed as _Indexed
from ._imbalance import oversample_indices

__all__ = ["MHSMADataset", "MHSMAParams", "LABELS", "SPLIT_FILES", "oversample_indices"]

_logger = logging.getLogger(__name__)

LABELS = ("acrosome", "head", "vacuole", "tail")
SPLIT_FILES = {"train": "train", "val": "valid", "test": "test"}
"""Our split name -> the split name in the MHSMA file names."""

# Intensity statistics of x_64_train / 255 (measured: mean 0.4932, std 0.0518). The crops use a narrow grey range
# (45..194), so MedMNIST's 0.5/0.5 would leave the inputs in about [-0.2, 0.2].
_MEAN, _STD = 0.4932, 0.0518
CITATION = ("Javadi S, Mirroshandel SA. A novel deep learning method for automatic assessment of human sperm "
            "images. Computers in Biology and Medicine 109:182-194 (2019), doi:10.1016/j.compbiomed.2019.04.030")


class MHSMAParams(PluginParams):
    root: Path
    label: Literal["acrosome", "head", "vacuole", "tail"] = "head"
    size: Literal[64, 128] = 64
    imbalance: Literal["oversample", "weighted_loss", "none"] = "oversample"
    oversample_seed: int = 0


def _files(size: int, label: str) -> list[str]:
    return [f for s in SPLIT_FILES.values() for f in (f"x_{size}_{s}.npy", f"y_{label}_{s}.npy")]


def _missing_message(root: Path, name: str, size: int) -> str:
    msg = f"expected {name} in {root}, got no such file"
    if size == 128:
        have = sorted(p.name for p in root.glob("x_128_*.npy"))
        msg += (f" (only {', '.join(have)} at 128 px here" if have else " (no 128 px file here") + \
               "; the upstream 128 px train/test files are large: copy them from soroushj/mhsma-dataset or use size: 64)"
    return msg


class MHSMADataset(DatasetPlugin):
    """MHSMA sperm morphology (acrosome/head/vacuole/tail normal vs abnormal), 64 or 128 px, official splits."""

    name = "mhsma"
    Params = MHSMAParams

    def __init__(self, *, root: str | Path, label: str = "head", size: int = 64, imbalance: str = "oversample",
                 oversample_seed: int = 0):
        p = MHSMAParams(root=root, label=label, size=size, imbalance=imbalance, oversample_seed=oversample_seed)
        self.root, self.label, self.size = Path(p.root), p.label, int(p.size)
        self.imbalance, self.oversample_seed = p.imbalance, p.oversample_seed
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def check_params(cls, params: MHSMAParams) -> None:
        """Checked by ``mednas validate``: the root and all six files of the chosen size and label are there."""
        if not params.root.is_dir():
            raise ConfigError(f"root: expected the folder holding the MHSMA .npy files, got {params.root} "
                              "(not found; no download exists: copy mhsma/ from soroushj/mhsma-dataset)")
        for name in _files(params.size, params.label):
            if not (params.root / name).is_file():
                raise ConfigError(f"root: {_missing_message(params.root, name, params.size)}")

    # ------------------------------------------------------------------ metadata
    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name=f"mhsma_{self.label}_{self.size}", task="classification", task_type="binary-class", num_classes=2,
            in_channels=1, image_size=self.size, label_names=["normal", "abnormal"], licence="CC BY-NC-SA 4.0",
            citation=CITATION, split_sizes={"train": 1000, "val": 240, "test": 300},
            mean=[_MEAN], std=[_STD],
            extra={"label": self.label, "size": self.size, "root": str(self.root), "imbalance": self.imbalance,
                   "positive_class": "abnormal (1)"},
            positive_class=1,   # abnormal
            modality="sperm cell microscopy (grayscale)", dicom_modalities=["GM"],
        )

    # ------------------------------------------------------------------ arrays
    def _load_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        s = SPLIT_FILES[split]
        if not self.root.is_dir():
            raise DataError(f"dataset 'mhsma': root {self.root} not found; set data.params.root to the folder "
                            "holding the MHSMA .npy files")
        out = []
        for name in (f"x_{self.size}_{s}.npy", f"y_{self.label}_{s}.npy"):
            path = self.root / name
            if not path.is_file():
                raise DataError(f"dataset 'mhsma': {_missing_message(self.root, name, self.size)}")
            try:
                out.append(np.load(path, allow_pickle=False))
            except (OSError, ValueError, EOFError) as e:
                raise DataError(f"dataset 'mhsma': {path}: expected a .npy array, got an unreadable file "
                                f"({type(e).__name__}: {e})") from None
        x, y = out
        path = self.root / f"x_{self.size}_{s}.npy"
        if x.ndim != 3 or x.shape[1:] != (self.size, self.size):
            raise DataError(f"dataset 'mhsma': {path}: expected shape (N, {self.size}, {self.size}), "
                            f"got {tuple(x.shape)}")
        if x.dtype != np.uint8:
            raise DataError(f"dataset 'mhsma': {path}: expected uint8 pixels, got {x.dtype}")
        y = y.reshape(-1)
        if len(y) != len(x):
            raise DataError(f"dataset 'mhsma': {self.root / f'y_{self.label}_{s}.npy'}: expected {len(x)} labels, "
                            f"got {len(y)}")
        if len(y) and not set(np.unique(y).tolist()) <= {0, 1}:
            raise DataError(f"dataset 'mhsma': {self.root / f'y_{self.label}_{s}.npy'}: expected labels 0/1, "
                            f"got {sorted(np.unique(y).tolist())}")
        return x, y.astype(np.int64).reshape(-1, 1)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Official ``uint8`` images ``(N, S, S)`` and labels ``(N, 1)`` (0 normal, 1 abnormal); never resampled."""
        if split not in SPLIT_FILES:
            raise ValueError(f"split: expected one of {tuple(SPLIT_FILES)}, got {split!r}")
        if split not in self._arrays:
            self._arrays[split] = self._load_split(split)
        return self._arrays[split]

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency class weights of the training split, normalised to mean 1 (for ``weighted_loss``)."""
        y = self.arrays("train")[1].reshape(-1)
        counts = np.bincount(y, minlength=2).astype(np.float64)
        w = counts.sum() / (len(counts) * np.maximum(counts, 1.0))
        return torch.as_tensor(w / w.mean(), dtype=torch.float32)

    def loss_weights(self) -> torch.Tensor | None:
        """Class weights a trainer should put in its cross-entropy: only with ``imbalance: weighted_loss``."""
        return self.class_weights() if self.imbalance == "weighted_loss" else None

    def dataset(self, split: str, augment: bool = False) -> torch.utils.data.Dataset:
        """MONAI ``Dataset`` of ``{"image": float (1, S, S), "label": long (1,)}``; ``train`` is oversampled when
        ``imbalance: oversample``. ``augment`` adds the random flip + affine of
        :func:`~mednas_nni.data.transforms.classification_transforms`."""
        from monai.data import Dataset

        x, y = self.arrays(split)
        info = self.info
        tf = classification_transforms(channels_last=False, mean=info.mean, std=info.std, augment=augment)
        ds = Dataset(data=[{"image": x[i], "label": y[i]} for i in range(len(x))], transform=tf)
        if split == "train" and self.imbalance == "oversample":
            return _Indexed(ds, oversample_indices(y, self.oversample_seed))
        return ds

    def __repr__(self) -> str:
        return (f"MHSMADataset(label={self.label!r}, size={self.size}, imbalance={self.imbalance!r}, "
                f"root={str(self.root)!r})")

"""MedMNIST v2 / MedMNIST+ 2-D data sets (Yang et al., Scientific Data 2023) through the ``medmnist`` package.

Any 2-D flag (``breastmnist``, ``pneumoniamnist``, ``retinamnist``, ``pathmnist``, ...) at size 28, 64, 128
or 224. Files are read from ``root`` as ``<flag>.npz`` (28) or ``<flag>_<size>.npz``; nothing is downloaded
unless ``download: true``. With no ``root``, BreastMNIST 28x28 is read from the copy shipped with
mednas-nni (CC BY 4.0; see ``mednas_nni/data/bundled/README.md``). ``imbalance: oversample | weighted_loss``
balances the training split or weights the loss (search trials and retraining alike; default ``none``), and
binary sets name their positive class (BreastMNIST: malignant, label 0; PneumoniaMNIST: pneumonia).
"""
from __future__ import annotations

import logging
import zipfile
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import field_validator

from ..errors import ConfigError, DataError, did_you_mean
from ..plugins import DatasetInfo, DatasetPlugin, PluginParams
from ._imbalance import Indexed, inverse_frequency_weights, oversample_indices
from .transforms import classification_transforms

__all__ = ["MedMNISTDataset", "MedMNISTParams", "bundled_root", "medmnist_2d_flags"]

_logger = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
BUNDLED = {("breastmnist", 28)}
# Binary sets: the class that counts as positive (the finding), by medmnist.INFO's label names.
POSITIVE_CLASS = {"breastmnist": 0, "pneumoniamnist": 1}    # 0 = malignant; 1 = pneumonia
# What each 2-D MedMNIST set's images are (from the MedMNIST v2 paper's table and medmnist.INFO descriptions):
# modality in words, the DICOM Modality codes of such images, and whether the images are slices of volumes.
MODALITIES: dict[str, tuple[str, list[str], bool]] = {
    "pathmnist": ("colon pathology (H&E histology)", ["SM"], False),
    "chestmnist": ("chest X-ray", ["CR", "DX"], False),
    "dermamnist": ("dermatoscopy", ["XC", "DMS"], False),
    "octmnist": ("retinal OCT", ["OPT"], False),
    "pneumoniamnist": ("chest X-ray", ["CR", "DX"], False),
    "retinamnist": ("fundus photography", ["OP"], False),
    "breastmnist": ("breast ultrasound", ["US"], False),
    "bloodmnist": ("blood cell microscopy", ["GM"], False),
    "tissuemnist": ("kidney cortex microscopy", ["GM"], False),
    "organamnist": ("abdominal CT (axial slices)", ["CT"], True),
    "organcmnist": ("abdominal CT (coronal slices)", ["CT"], True),
    "organsmnist": ("abdominal CT (sagittal slices)", ["CT"], True),
}


def bundled_root() -> Path:
    return Path(str(resources.files("mednas_nni") / "data" / "bundled"))


def medmnist_2d_flags() -> list[str]:
    from medmnist import INFO

    return sorted(k for k in INFO if not k.endswith("3d"))


def _file_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


class MedMNISTParams(PluginParams):
    flag: str = "breastmnist"
    size: Literal[28, 64, 128, 224] = 28
    root: Path | None = None
    download: bool = False
    as_rgb: bool = False
    verify: bool = True      # the official MD5 and split sizes (medmnist.INFO); false: a user's own re-export
    # class imbalance, for search trials and retraining alike (see _imbalance): oversample the training split,
    # weight the loss by inverse class frequency, or neither (default, the MedMNIST v2 recipe)
    imbalance: Literal["oversample", "weighted_loss", "none"] = "none"
    oversample_seed: int = 0

    @field_validator("flag")
    @classmethod
    def _known_flag(cls, v: str) -> str:
        flags = medmnist_2d_flags()
        if v not in flags:
            raise ValueError(f"a 2-D MedMNIST flag{did_you_mean(v, flags)} (one of {', '.join(flags)})")
        return v


class MedMNISTDataset(DatasetPlugin):
    """MedMNIST v2 2-D classification sets (any flag, 28/64/128/224 px), read offline from a local root."""

    name = "medmnist"
    Params = MedMNISTParams

    def __init__(self, *, flag: str = "breastmnist", size: int = 28, root: str | Path | None = None,
                 download: bool = False, as_rgb: bool = False, verify: bool = True, imbalance: str = "none",
                 oversample_seed: int = 0):
        from medmnist import INFO

        self.flag, self.size, self.download, self.as_rgb = flag, int(size), download, as_rgb
        self.verify = verify
        self.imbalance, self.oversample_seed = imbalance, int(oversample_seed)
        if imbalance != "none" and INFO[flag]["task"].startswith("multi-label"):
            raise ConfigError(f"dataset 'medmnist': data.params.imbalance: expected 'none' for the multi-label set "
                              f"{flag}, got {imbalance!r}")
        self._meta = INFO[flag]
        if root is None:
            if (flag, self.size) not in BUNDLED:
                raise ConfigError(f"dataset 'medmnist': data.params.root is not set; only breastmnist at size 28 "
                                  f"is bundled, so {flag} at size {self.size} needs root: a folder holding "
                                  f"{_file_name(flag, self.size)}")
            root = bundled_root()
        self.root = Path(root)
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def check_params(cls, params: MedMNISTParams) -> None:
        """Checked by ``mednas validate``: the root and the file are there (unless downloading)."""
        if params.root is None:
            if (params.flag, params.size) not in BUNDLED:
                raise ConfigError(f"root: not set; only breastmnist at size 28 is bundled, so {params.flag} at "
                                  f"size {params.size} needs a folder holding {_file_name(params.flag, params.size)}")
            return
        if not params.root.is_dir():
            if params.download:
                return  # created on first use, then downloaded into
            raise ConfigError(f"root: expected an existing folder, got {params.root} (not found)")
        f = params.root / _file_name(params.flag, params.size)
        if not params.download and not f.is_file():
            raise ConfigError(f"root: expected {f.name} in {params.root}, got no such file "
                              "(set download: true to fetch it)")
        if f.is_file():   # open what the run will read: a renamed, truncated or foreign file fails now
            from ._medmnist_verify import verify_npz

            verify_npz(f, params.flag, params.size, params.verify)

    # ------------------------------------------------------------------ metadata
    @property
    def info(self) -> DatasetInfo:
        labels = self._meta["label"]
        channels = 3 if (self.as_rgb or self._meta["n_channels"] == 3) else 1
        modality, dicom, from_volumes = MODALITIES.get(self.flag, ("", [], False))
        return DatasetInfo(
            name=f"{self.flag}_{self.size}", task="classification", task_type=self._meta["task"],
            num_classes=len(labels),
            in_channels=channels, image_size=self.size,
            label_names=[labels[str(i)] for i in range(len(labels))],
            licence=self._meta.get("license", ""),
            citation=("Yang et al., MedMNIST v2, Scientific Data 10:41 (2023), doi:10.1038/s41597-022-01721-8; "
                      f"source data set of {self._meta['python_class']}: see medmnist.INFO"),
            split_sizes=dict(self._meta["n_samples"]),
            mean=[0.5] * channels, std=[0.5] * channels,
            extra={"flag": self.flag, "size": self.size, "root": str(self.root), "imbalance": self.imbalance},
            positive_class=POSITIVE_CLASS.get(self.flag),
            modality=modality, dicom_modalities=list(dicom), from_volumes=from_volumes,
        )

    # ------------------------------------------------------------------ arrays
    def _load(self) -> None:
        import medmnist

        path = self.root / _file_name(self.flag, self.size)
        if self.download:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise DataError(f"dataset 'medmnist': root {self.root} not found; set data.params.root to the folder "
                            f"holding {path.name}")
        if not path.is_file() and not self.download:
            raise DataError(f"dataset 'medmnist': {path}: file not found; expected {path.name} in the root "
                            "(or set data.params.download: true)")
        if path.is_file():   # (a download is checked by medmnist itself)
            from ._medmnist_verify import verify_npz

            verify_npz(path, self.flag, self.size, self.verify)
        cls = getattr(medmnist, self._meta["python_class"])
        for split in SPLITS:
            try:
                ds = cls(split=split, root=str(self.root), download=self.download, size=self.size)
                x, y = np.asarray(ds.imgs), np.asarray(ds.labels)
            except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
                raise DataError(f"dataset 'medmnist': {path}: expected a MedMNIST .npz with {split}_images and "
                                f"{split}_labels, got an unreadable file ({type(e).__name__}: {e})") from None
            except RuntimeError as e:
                raise DataError(f"dataset 'medmnist': {path}: {e}") from None
            self._check(path, split, x, y)
            self._arrays[split] = (x, y.reshape(len(y), -1))

    def _check(self, path: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
        channels = self._meta["n_channels"]
        want = (self.size, self.size) if channels == 1 else (self.size, self.size, channels)
        if x.ndim < 3 or tuple(x.shape[1:]) != want:
            raise DataError(f"dataset 'medmnist': {path}: {split}_images: expected shape (N, "
                            f"{', '.join(map(str, want))}), got {tuple(x.shape)}")
        if len(x) == 0:
            raise DataError(f"dataset 'medmnist': {path}: {split}_images: expected at least one image, got 0")
        if len(y) != len(x):
            raise DataError(f"dataset 'medmnist': {path}: {split}_labels: expected {len(x)} labels, got {len(y)}")

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if not self._arrays:
            self._load()
        x, y = self._arrays[split]
        if self.as_rgb and x.ndim == 3:
            x = np.repeat(x[..., None], 3, axis=-1)
        return x, y

    def dataset(self, split: str, augment: bool = False) -> torch.utils.data.Dataset:
        """MONAI ``Dataset`` of ``{"image": float (C, S, S), "label": long (k,)}`` samples."""
        from monai.data import Dataset

        x, y = self.arrays(split)
        info = self.info
        tf = classification_transforms(channels_last=x.ndim == 4, mean=info.mean, std=info.std, augment=augment)
        y = y.astype(np.int64)
        ds = Dataset(data=[{"image": x[i], "label": y[i]} for i in range(len(x))], transform=tf)
        if split == "train" and self.imbalance == "oversample":
            return Indexed(ds, oversample_indices(y, self.oversample_seed))
        return ds

    def loss_weights(self) -> torch.Tensor | None:
        """Inverse-frequency class weights of the training split with ``imbalance: weighted_loss``, else None."""
        if self.imbalance != "weighted_loss":
            return None
        return inverse_frequency_weights(self.arrays("train")[1], len(self._meta["label"]))

    def __repr__(self) -> str:
        return f"MedMNISTDataset(flag={self.flag!r}, size={self.size}, root={str(self.root)!r})"

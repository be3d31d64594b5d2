"""Small real dict data sets for the task tests: BreastMNIST (classification) and WBC (3-class segmentation).

Both are plain :class:`~mednas_nni.contracts.DatasetPlugin` subclasses over real images from ``../shared/data``,
written here so the task tests do not depend on the data-set plugins (which another change converts to dicts).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from mednas_nni.contracts import DatasetInfo, DatasetPlugin, NoParams

from conftest import require_data

__all__ = ["BreastDict", "WBCDict", "TupleSet", "DictSet", "small_bn_net", "small_seg_net", "task_dataset"]


class DictSet(Dataset):
    """``{"image": x[i], "label": y[i]}`` over tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], "label": self.y[i]}


class TupleSet(DictSet):
    """The same samples as ``(x[i], y[i])`` pairs (the pre-Core-v2 sample format)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.x[i], self.y[i]


class BreastDict(DatasetPlugin):
    """BreastMNIST 28x28 from the official ``breastmnist.npz``; labels ``(1,)`` long, images ``(x/255 - .5)/.5``."""

    name = "breast_dict"
    Params = NoParams

    def __init__(self, weighted: bool = False):
        d = np.load(require_data("medmnist", "breastmnist.npz"))
        self._arrays = {s: (d[f"{s}_images"], d[f"{s}_labels"]) for s in ("train", "val", "test")}
        self.weighted = weighted

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(name="breast_dict", task_type="binary-class", num_classes=2, in_channels=1,
                           image_size=28, label_names=["malignant", "normal, benign"])

    def arrays(self, split: str):
        return self._arrays[split]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._arrays[split]
        return (torch.as_tensor(x, dtype=torch.float32)[:, None] / 255.0 - 0.5) / 0.5, torch.as_tensor(y).long()

    def dataset(self, split: str, augment: bool = False) -> Dataset:
        return DictSet(*self.tensors(split))

    def loss_weights(self):
        return torch.tensor([2.0, 0.7]) if self.weighted else None


class WBCDict(DatasetPlugin):
    """WBC Dataset 1 (3 classes: background, cytoplasm, nucleus), RGB resized to ``size`` (masks: nearest)."""

    name = "wbc_dict"
    Params = NoParams
    default_task = "segmentation"
    SPLITS = {"train": range(0, 24), "val": range(24, 32), "test": range(32, 40)}

    def __init__(self, size: int = 32):
        from PIL import Image

        root = require_data("wbc_seg")
        names = sorted(p.stem for p in (root / "images").glob("d1_*.png"))[:40]
        self.size = size
        self.x = np.stack([np.asarray(Image.open(root / "images" / f"{n}.png").convert("RGB")
                                      .resize((size, size), Image.Resampling.BILINEAR)) for n in names])
        self.y = np.stack([np.asarray(Image.open(root / "masks" / f"{n}.png")
                                      .resize((size, size), Image.Resampling.NEAREST)) for n in names])

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(name="wbc_dict", task="segmentation", task_type="segmentation", num_classes=3,
                           in_channels=3, image_size=self.size, label_names=["background", "cytoplasm", "nucleus"],
                           mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])

    def arrays(self, split: str):
        idx = list(self.SPLITS[split])
        return self.x[idx], self.y[idx]

    def dataset(self, split: str, augment: bool = False) -> Dataset:
        x, y = self.arrays(split)
        xt = (torch.as_tensor(x, dtype=torch.float32).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
        return DictSet(xt, torch.as_tensor(y).long()[:, None])


def small_bn_net(in_channels: int = 1, classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


def small_seg_net(in_channels: int = 3, classes: int = 3) -> nn.Module:
    """A tiny fully convolutional net (MONAI BasicUNet would be slower on 2 cores)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, classes, 1))


def task_dataset(task_name: str) -> tuple[DatasetPlugin, nn.Module]:
    """A real data set and a fresh tiny network that fit the registered task ``task_name``."""
    if task_name == "classification":
        return BreastDict(), small_bn_net()
    if task_name == "segmentation":
        return WBCDict(), small_seg_net()
    raise KeyError(f"tests/tasks: no test data set for task {task_name!r}; add one to _task_data.py")

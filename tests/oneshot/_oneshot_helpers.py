"""Shared pieces of the one-shot tests: small real dict data sets, tiny LayerChoice spaces, a real RunContext.

The classification data is a slice of the real BreastMNIST (../shared/data/medmnist/breastmnist.npz); the
segmentation data is tiny structured images (bright discs on noise, the disc is the mask). The tasks are the real
``classification`` and ``segmentation`` plugins.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from mednas_nni.contracts import DatasetInfo, DatasetPlugin, NoParams, SearchSpace, Task
from mednas_nni.tasks.classification import ClassificationTask
from mednas_nni.tasks.segmentation import SegmentationTask

__all__ = ["BreastSlice", "DiscSegmentation", "TinyClassifierSpace", "TinySegmenterSpace", "ClassificationTask",
           "SegmentationTask", "make_ctx"]


# ---------------------------------------------------------------------------------------------------- data sets
class _DictSet(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, mask: bool):
        self.images, self.labels, self.mask = images, labels, mask

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(self.images[i]).float().div(255.0).sub(0.5).div(0.5)[None]
        y = torch.from_numpy(np.asarray(self.labels[i])).long()
        return {"image": x, "label": y[None] if self.mask else y.reshape(-1)}


class BreastSlice(DatasetPlugin):
    """The first ``n_train`` / ``n_val`` images of real BreastMNIST 28x28 as dict samples (label ``(1,)`` long)."""

    name = "breast_slice"
    Params = NoParams

    def __init__(self, npz: Path, n_train: int = 96, n_val: int = 48):
        d = np.load(npz)
        self._arrays = {s: (d[f"{s}_images"][:n], d[f"{s}_labels"][:n])
                        for s, n in (("train", n_train), ("val", n_val), ("test", n_val))}

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(name="breastmnist", task_type="binary-class", num_classes=2, in_channels=1,
                           image_size=28, label_names=["malignant", "normal, benign"],
                           split_sizes={s: len(a[0]) for s, a in self._arrays.items()})

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return self._arrays[split]

    def dataset(self, split: str, augment: bool = False) -> torch.utils.data.Dataset:
        return _DictSet(*self._arrays[split], mask=False)


class DiscSegmentation(DatasetPlugin):
    """Bright discs of random centre/radius on noisy background, 32x32; the mask is the disc (classes 0/1)."""

    name = "discs"
    Params = NoParams
    default_task = "segmentation"

    def __init__(self, n_train: int = 48, n_val: int = 24, size: int = 32, seed: int = 0):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:size, :size]
        self._arrays = {}
        for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
            cy, cx = rng.uniform(8, size - 8, (2, n))
            r = rng.uniform(4, 8, n)
            masks = ((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) < r[:, None, None] ** 2
            imgs = np.clip(60 + 120 * masks + rng.normal(0, 25, masks.shape), 0, 255).astype(np.uint8)
            self._arrays[split] = (imgs, masks.astype(np.uint8))
        self.size = size

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(name="discs", task_type="segmentation", num_classes=2, in_channels=1,
                           image_size=self.size, label_names=["background", "disc"], task="segmentation",
                           split_sizes={s: len(a[0]) for s, a in self._arrays.items()})

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return self._arrays[split]

    def dataset(self, split: str, augment: bool = False) -> torch.utils.data.Dataset:
        return _DictSet(*self._arrays[split], mask=True)


# ---------------------------------------------------------------------------------------------------- spaces
class TinyClassifierSpace(ModelSpace, SearchSpace):
    """stem → LayerChoice(conv3 | conv5 | pool) → LayerChoice(relu | tanh) → head; 3 x 2 = 6 architectures."""

    name = "tiny_classifier"

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, image_size: Any = None,
                 width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.op = LayerChoice({"conv3": nn.Conv2d(width, width, 3, padding=1),
                               "conv5": nn.Conv2d(width, width, 5, padding=2),
                               "pool": nn.AvgPool2d(3, stride=1, padding=1)}, label="op")
        self.act = LayerChoice({"relu": nn.ReLU(), "tanh": nn.Tanh()}, label="act")
        self.head = nn.Linear(width, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.op(self.stem(x))).mean((2, 3)))


def _block(c_in: int, c_out: int, k: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.BatchNorm2d(c_out), nn.ReLU())


class TinySegmenterSpace(ModelSpace, SearchSpace):
    """Encoder-decoder: LayerChoice between two conv blocks in the encoder, upsample, 1x1 head to classes."""

    name = "tiny_segmenter"
    tasks = ("segmentation",)

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, image_size: Any = None,
                 width: int = 8):
        super().__init__()
        self.enc = _block(in_channels, width, 3)
        self.down = nn.MaxPool2d(2)
        self.mid = LayerChoice({"conv3": _block(width, width, 3), "conv5x2": nn.Sequential(
            _block(width, width, 5), _block(width, width, 5))}, label="mid")
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec = _block(2 * width, width, 3)
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        return self.head(self.dec(torch.cat([e, self.up(self.mid(self.down(e)))], 1)))


# ---------------------------------------------------------------------------------------------------- context
def make_ctx(tmp_path: Path, data: DatasetPlugin, task: Task, seed: int = 0) -> Any:
    """A real RunContext: the embedded default config (seed set) and a real run directory under ``tmp_path``."""
    from mednas_nni.config import load_config
    from mednas_nni.experiment import RunContext
    from mednas_nni.io import RunDir

    cfg = load_config(overrides=[f"run.seed={seed}"], validate_plugins=False)
    return RunContext(cfg=cfg, run_dir=RunDir.create(tmp_path, "oneshot"), dataset=data, task=task, device="cpu",
                      progress=False)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Autouse in every module that imports it: torch on one thread. On a busy 2-core machine a second OpenMP thread
    mostly spins (a supernet runs many small ops; measured 25x slower with 2 threads under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""medmnist and mhsma return dict samples whose images are bit-identical to the pre-Core-v2 array pipeline.

The golden searches (tests/golden) were recorded with the array pipeline below, copied verbatim from
``mednas_nni/data/transforms.py`` at commit ab02c44; every un-augmented item must still match it exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from conftest import require_data
from monai.transforms import (Compose, EnsureChannelFirst, EnsureType, NormalizeIntensity, RandAffine, RandFlip,
                              ScaleIntensityRange)

from mednas_nni.data.medmnist import MedMNISTDataset
from mednas_nni.data.mhsma import MHSMADataset, oversample_indices


# ---- verbatim copy of the pre-refactor pipeline (git show ab02c44:mednas_nni/data/transforms.py) ----
def classification_transforms(channels_last: bool, mean: Sequence[float], std: Sequence[float],
                              augment: bool = False) -> Compose:
    ts = [
        EnsureChannelFirst(channel_dim=-1 if channels_last else "no_channel"),
        ScaleIntensityRange(a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0),
        NormalizeIntensity(subtrahend=np.asarray(mean, dtype=np.float32),
                           divisor=np.asarray(std, dtype=np.float32), channel_wise=True),
    ]
    if augment:
        ts += [RandFlip(prob=0.5, spatial_axis=1),
               RandAffine(prob=0.5, rotate_range=0.1, scale_range=0.1, padding_mode="border")]
    ts.append(EnsureType(data_type="tensor", dtype=None, track_meta=False))
    return Compose(ts)
# ---- end of copy ----


def _assert_same_as_before(plugin, split: str) -> int:
    x, y = plugin.arrays(split)
    old = classification_transforms(channels_last=x.ndim == 4, mean=plugin.info.mean, std=plugin.info.std)
    ds = plugin.dataset(split, augment=False)
    n = 0
    for i in range(len(x)):
        sample = ds[i]
        assert set(sample) == {"image", "label"}
        ref = old(x[i])
        img = sample["image"]
        assert type(img) is torch.Tensor and type(ref) is torch.Tensor
        assert img.dtype == ref.dtype == torch.float32 and img.shape == ref.shape
        assert torch.equal(img, ref), f"{split} item {i}: image differs from the pre-refactor pipeline"
        assert sample["label"].dtype == torch.long and sample["label"].shape == (y.shape[1],)
        assert torch.equal(sample["label"], torch.as_tensor(y[i].astype(np.int64)))
        n += 1
    return n


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_breastmnist_items_identical(split):
    ds = MedMNISTDataset()                       # the bundled copy
    assert _assert_same_as_before(ds, split) == {"train": 546, "val": 78, "test": 156}[split]
    info = ds.info
    assert (info.task, info.task_type, info.spatial_dims, info.out_channels) == ("classification", "binary-class", 2, 2)


def test_retinamnist_rgb_items_identical(medmnist_root):
    ds = MedMNISTDataset(flag="retinamnist", root=medmnist_root)
    assert _assert_same_as_before(ds, "val") == 120
    assert ds.info.task_type == "ordinal-regression" and ds.info.in_channels == 3


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_mhsma_items_identical(split):
    root = require_data("mhsma")
    ds = MHSMADataset(root=root, label="head", imbalance="none")
    assert _assert_same_as_before(ds, split) == {"train": 1000, "val": 240, "test": 300}[split]
    assert (ds.info.task, ds.info.task_type) == ("classification", "binary-class")


def test_mhsma_oversampled_train_follows_the_same_index_list():
    root = require_data("mhsma")
    ds = MHSMADataset(root=root, label="tail", imbalance="oversample", oversample_seed=0)
    x, y = ds.arrays("train")
    idx = oversample_indices(y, seed=0)
    # the index list recorded before the refactor: its length, class balance and head are fixed
    assert len(idx) == 2 * 954 and np.bincount(y.reshape(-1)[idx]).tolist() == [954, 954]
    assert idx[:8].tolist() == [188, 651, 635, 379, 640, 45, 914, 149]      # as recorded on ab02c44
    train = ds.dataset("train")
    assert np.array_equal(train.indices, idx) and len(train) == len(idx)
    old = classification_transforms(channels_last=False, mean=ds.info.mean, std=ds.info.std)
    for i in (0, 1, len(idx) // 2, len(idx) - 1):
        assert torch.equal(train[i]["image"], old(x[idx[i]]))
        assert int(train[i]["label"]) == int(y[idx[i], 0])


def test_augmented_samples_keep_shapes_and_labels():
    ds = MedMNISTDataset()
    aug = ds.dataset("train", augment=True)
    torch.manual_seed(0)
    batch = next(iter(torch.utils.data.DataLoader(aug, batch_size=8)))
    assert batch["image"].shape == (8, 1, 28, 28) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (8, 1) and batch["label"].dtype == torch.long


def test_augmented_views_follow_the_torch_seed():
    ds = MedMNISTDataset()
    views = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        aug = ds.dataset("train", augment=True)
        views.append(torch.stack([aug[i]["image"] for i in range(16)]))
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])

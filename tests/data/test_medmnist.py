"""The medmnist data plugin on the real files (bundled BreastMNIST and ../shared/data/medmnist)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mednas_nni.data.medmnist import MedMNISTDataset
from mednas_nni.errors import ConfigError, DataError


def test_bundled_breastmnist_offline():
    ds = MedMNISTDataset()                                    # no root: the shipped copy
    info = ds.info
    assert (info.task, info.task_type, info.num_classes, info.in_channels, info.image_size) == \
        ("classification", "binary-class", 2, 1, 28)
    assert info.licence == "CC BY 4.0" and "MedMNIST v2" in info.citation
    for split, n in (("train", 546), ("val", 78), ("test", 156)):
        x, y = ds.arrays(split)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8 and y.shape == (n, 1)
    sample = ds.dataset("train")[0]
    img, label = sample["image"], sample["label"]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32 and label.shape == (1,)
    x0 = ds.arrays("train")[0][0].astype(np.float32)
    assert torch.allclose(img[0], torch.from_numpy((x0 / 255.0 - 0.5) / 0.5), atol=1e-6)   # MedMNIST v2 norm


@pytest.mark.parametrize("flag, channels, classes, n_train", [
    ("pneumoniamnist", 1, 2, 4708), ("retinamnist", 3, 5, 1080), ("breastmnist", 1, 2, 546)])
def test_shared_medmnist_sets(medmnist_root, flag, channels, classes, n_train):
    ds = MedMNISTDataset(flag=flag, root=medmnist_root)
    assert ds.info.in_channels == channels and ds.info.num_classes == classes
    assert len(ds.dataset("train")) == n_train
    img = ds.dataset("test")[3]["image"]
    assert img.shape == (channels, 28, 28)
    aug = ds.dataset("train", augment=True)
    torch.manual_seed(0)
    assert aug[0]["image"].shape == (channels, 28, 28)


def test_missing_root_and_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"root .*nowhere not found; set data\.params\.root"):
        MedMNISTDataset(flag="breastmnist", root=tmp_path / "nowhere").arrays("train")
    with pytest.raises(DataError, match=r"breastmnist\.npz: file not found"):
        MedMNISTDataset(flag="breastmnist", root=tmp_path).arrays("train")
    with pytest.raises(ConfigError, match=r"only breastmnist at size 28 is bundled"):
        MedMNISTDataset(flag="breastmnist", size=64)


def test_corrupt_and_empty_npz(tmp_path):
    (tmp_path / "breastmnist.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"breastmnist\.npz: expected a MedMNIST \.npz .*got an unreadable file"):
        MedMNISTDataset(flag="breastmnist", root=tmp_path).arrays("train")
    empty = {f"{s}_{k}": np.zeros((0, 28, 28) if k == "images" else (0, 1), np.uint8)
             for s in ("train", "val", "test") for k in ("images", "labels")}
    np.savez(tmp_path / "breastmnist.npz", **empty)
    with pytest.raises(DataError, match=r"breastmnist\.npz: expected the official breastmnist file at 28 px"):
        MedMNISTDataset(flag="breastmnist", root=tmp_path).arrays("train")
    with pytest.raises(DataError, match=r"train_images: expected at least one image, got 0"):   # own re-export
        MedMNISTDataset(flag="breastmnist", root=tmp_path, verify=False).arrays("train")
    bad = dict(empty, train_images=np.zeros((4, 32, 32), np.uint8), train_labels=np.zeros((4, 1), np.uint8))
    np.savez(tmp_path / "breastmnist.npz", **bad)
    with pytest.raises(DataError, match=r"train_images: expected shape \(N, 28, 28\), got \(4, 32, 32\)"):
        MedMNISTDataset(flag="breastmnist", root=tmp_path, verify=False).arrays("train")


def test_local_root_copy_works(tmp_path, medmnist_root):
    shutil.copy(medmnist_root / "breastmnist.npz", tmp_path)
    x, _ = MedMNISTDataset(flag="breastmnist", root=tmp_path).arrays("val")
    assert x.shape == (78, 28, 28)

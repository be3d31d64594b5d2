"""The folder segmentation plugin on the real sets in ../shared/data (DSB 2018, Kvasir-SEG, WBC, ISBI 2012 EM)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_data

from mednas_nni.data.folder import FolderDataset
from mednas_nni.data.transforms import segmentation_transforms

SPLITS = ("train", "val", "test")


def _check_common(ds: FolderDataset, size: int, channels: int, classes: set[int], n: dict[str, int]):
    info = ds.info
    assert (info.task, info.task_type, info.spatial_dims) == ("segmentation", "segmentation", 2)
    assert (info.image_size, info.in_channels) == (size, channels)
    assert info.split_sizes == n and len(info.mean) == len(info.std) == channels
    seen: set[int] = set()
    for s in SPLITS:
        x, y = ds.arrays(s)
        want = (n[s], size, size) if channels == 1 else (n[s], size, size, channels)
        assert x.shape == want and x.dtype == np.uint8
        assert y.shape == (n[s], size, size) and y.dtype == np.uint8
        seen |= set(np.unique(y).tolist())
    assert seen == classes
    cases = [set(ds.cases(s)) for s in SPLITS]
    assert not (cases[0] & cases[1] or cases[0] & cases[2] or cases[1] & cases[2])
    sample = ds.dataset("val")[0]
    assert set(sample) == {"image", "label"}
    assert sample["image"].shape == (channels, size, size) and sample["image"].dtype == torch.float32
    assert sample["label"].shape == (1, size, size) and sample["label"].dtype == torch.long
    x, y = ds.arrays("val")
    assert torch.equal(sample["label"][0], torch.as_tensor(y[0], dtype=torch.long))
    ref = (x[0].astype(np.float32) / 255.0 - np.float32(info.mean[0])) / np.float32(info.std[0])
    got = sample["image"][0].numpy()
    assert np.allclose(got, ref if channels == 1 else ref[..., 0], atol=1e-5)
    return info


def test_dsb2018_rgb_subset_seeded_split():
    root = require_data("dsb2018")
    ds = FolderDataset(root=root, size=64, channels=3, max_images=40, licence="CC0")
    info = _check_common(ds, 64, 3, {0, 1}, {"train": 28, "val": 6, "test": 6})
    assert info.label_names == ["background", "foreground"] and info.num_classes == info.out_channels == 2
    assert info.extra["label_map"] == {"0": 0, "255": 1} and info.licence == "CC0"
    again = FolderDataset(root=root, size=32, channels=1, max_images=40)        # same seed: same cases
    assert all(again.cases(s) == ds.cases(s) for s in SPLITS)
    other = FolderDataset(root=root, size=64, channels=3, max_images=40, split_seed=1)
    assert other.cases("train") != ds.cases("train")
    # a few pixels of one mask against a direct PIL read (nearest resize keeps 0/255 -> 0/1)
    stem = ds.cases("train")[0]
    assert (root / "images" / f"{stem}.png").is_file()
    batch = next(iter(torch.utils.data.DataLoader(ds.dataset("train", augment=True), batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["label"].shape == (4, 1, 64, 64)
    assert set(torch.unique(batch["label"]).tolist()) <= {0, 1}


def test_kvasir_jpeg_images_png_masks():
    root = require_data("kvasir_seg")
    ds = FolderDataset(root=root, size=64, channels=3, max_images=30)
    _check_common(ds, 64, 3, {0, 1}, {"train": 21, "val": 4, "test": 5})
    y = np.concatenate([ds.arrays(s)[1] for s in SPLITS])
    assert 0.03 < y.mean() < 0.4                                     # polyps are about 16 % of the pixels


def test_wbc_three_classes_from_classes_json():
    root = require_data("wbc_seg")
    ds = FolderDataset(root=root, size=48, channels=3, max_images=60, split=[0.5, 0.25, 0.25], split_seed=3)
    info = _check_common(ds, 48, 3, {0, 1, 2}, {"train": 30, "val": 15, "test": 15})
    assert info.num_classes == 3 and info.label_names[1:] == ["cytoplasm", "nucleus"]
    assert info.extra["label_map"] == {"0": 0, "1": 1, "2": 2}


def test_isbi_membrane_as_foreground_native_size():
    root = require_data("isbi2012_em")
    ds = FolderDataset(root=root, size=None, label_map={0: 1, 255: 0}, label_names=["cell interior", "membrane"])
    info = _check_common(ds, 512, 1, {0, 1}, {"train": 21, "val": 4, "test": 5})
    y = np.concatenate([ds.arrays(s)[1] for s in SPLITS])
    assert abs(y.mean() - 0.22) < 0.01                                # 255 (interior) is 78.0 % of the pixels
    assert info.label_names == ["cell interior", "membrane"]


def test_isbi_split_files(tmp_path):
    root = require_data("isbi2012_em")
    files = {}
    for s, stems in (("train", ["00", "01.png", "02"]), ("val", ["# val\n", "10"]), ("test", ["20", "21"])):
        files[s] = tmp_path / f"{s}.txt"
        files[s].write_text("\n".join(stems) + "\n")
    ds = FolderDataset(root=root, size=32, split_files={k: str(v) for k, v in files.items()},
                       label_map={0: 1, 255: 0})
    assert ds.cases("train") == ["00", "01", "02"] and ds.cases("val") == ["10"] and ds.cases("test") == ["20", "21"]
    assert ds.info.split_sizes == {"train": 3, "val": 1, "test": 2}


def test_segmentation_transforms_flip_image_and_mask_together():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 16), dtype=np.uint8)
    y = (x > 128).astype(np.uint8)
    tf = segmentation_transforms(channels_last=False, mean=[0.5], std=[0.5], augment=True)
    tf.set_random_state(seed=1)
    for _ in range(8):
        out = tf({"image": x, "label": y})
        assert out["label"].dtype == torch.long and set(torch.unique(out["label"]).tolist()) <= {0, 1}
        assert out["image"].shape == (1, 16, 16) and out["label"].shape == (1, 16, 16)

"""One-line errors of the folder plugin, on small pairs written into tmp_path (no data copied into the repo)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mednas_nni.data.folder import FolderDataset, FolderParams
from mednas_nni.errors import ConfigError, DataError


def _pairs(root, n=6, size=(20, 24), values=(0, 255), ext=".png"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"c{i}{ext}")
        Image.fromarray(rng.choice(np.asarray(values, np.uint8), size)).save(root / "masks" / f"c{i}.png")
    return root


def _one_line(e):
    assert "\n" not in str(e.value)
    return str(e.value)


def test_small_pairs_work_and_round_trip(tmp_path):
    ds = FolderDataset(root=_pairs(tmp_path, ext=".bmp"), size=16, split=[0.5, 0.25, 0.25], name="tiny")
    assert ds.info.name == "tiny" and ds.info.split_sizes == {"train": 3, "val": 2, "test": 1}
    assert ds.arrays("train")[0].shape == (3, 16, 16)


def test_unmatched_stem(tmp_path):
    root = _pairs(tmp_path)
    (root / "masks" / "c3.png").unlink()
    with pytest.raises(DataError, match=r"masks: expected a mask for every stem, got 1 stem\(s\) without one "
                                        r"\(first: c3\.png\)") as e:
        FolderDataset(root=root).info
    _one_line(e)


def test_size_mismatch(tmp_path):
    root = _pairs(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "c2.png")
    with pytest.raises(DataError, match=r"c2\.png: expected the size of c2\.png, 20x24 \(HxW\), got 10x10"):
        FolderDataset(root=root).arrays("train")


def test_unknown_mask_value(tmp_path):
    root = _pairs(tmp_path, values=(0, 128, 255))
    with pytest.raises(DataError, match=r"expected mask values in label_map \{0: 0, 255: 1\}, got \[128\]"):
        FolderDataset(root=root, label_map={0: 0, 255: 1}).arrays("train")
    with pytest.raises(DataError, match=r"masks: expected 0/255 \(binary\) or class indices .*got values "
                                        r"\[0, 128, 255\]; set label_map"):
        FolderDataset(root=root).arrays("train")
    ds = FolderDataset(root=root, label_map={0: 0, 128: 1, 255: 2})
    assert ds.info.num_classes == 3 and ds.info.label_names == ["background", "class_1", "class_2"]


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"image folder .*images: expected png/tif/tiff/jpg/jpeg/bmp files, got none"):
        FolderDataset(root=tmp_path).info
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "a.tif")
    with pytest.raises(DataError, match=r"mask folder .*nope: expected a folder, got no such folder"):
        FolderDataset(root=tmp_path, masks="nope").info


def test_native_sizes_must_agree(tmp_path):
    root = _pairs(tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "c4.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "c4.png")
    with pytest.raises(DataError, match=r"c\d\.png: expected size \((20, 24|8, 8)\) like c\d\.png, "
                                        r"got \((8, 8|20, 24)\); set size to resize"):
        FolderDataset(root=root, size=None).info


def test_split_errors(tmp_path):
    root = _pairs(tmp_path, n=3)
    with pytest.raises(DataError, match=r"split test: expected at least one image, got 0 of 3"):
        FolderDataset(root=root, split=[0.8, 0.2, 0.0]).info
    (tmp_path / "a.txt").write_text("c0\nc9\n")
    (tmp_path / "b.txt").write_text("c1\n")
    with pytest.raises(DataError, match=r"a\.txt, line 2: expected the name of an image/mask pair, got 'c9'"):
        FolderDataset(root=root, split_files={"train": "a.txt", "val": "b.txt", "test": "b.txt"}).info
    (tmp_path / "a.txt").write_text("c0\n")
    with pytest.raises(DataError, match=r"got 'c1' in both val and test"):
        FolderDataset(root=root, split_files={"train": "a.txt", "val": "b.txt", "test": "b.txt"}).info


def test_bad_params_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset 'folder': split: Value error, three fractions") as e:
        FolderDataset(root=tmp_path, split=[0.5, 0.5, 0.5])
    _one_line(e)
    with pytest.raises(ConfigError, match=r"channels"):
        FolderDataset(root=tmp_path, channels=2)


def test_check_params(tmp_path):
    with pytest.raises(ConfigError, match=r"root: expected an existing folder, got .*missing \(not found\)"):
        FolderDataset.check_params(FolderParams(root=tmp_path / "missing"))
    (tmp_path / "images").mkdir()
    with pytest.raises(ConfigError, match=r"masks: expected a folder of images, got .*masks \(not found\)"):
        FolderDataset.check_params(FolderParams(root=tmp_path))
    (tmp_path / "masks").mkdir()
    FolderDataset.check_params(FolderParams(root=tmp_path))
    with pytest.raises(ConfigError, match=r"split_files\.train: expected a file"):
        FolderDataset.check_params(FolderParams(root=tmp_path, split_files={"train": "t", "val": "v", "test": "x"}))

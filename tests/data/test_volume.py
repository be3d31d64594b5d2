"""The volume plugin on small real volumes built in tmp_path: DICOM series written with pydicom (CT_small.dcm as the
header template, ISBI 2012 EM slices as pixels) with SimpleITK masks, and NIfTI/MHA/MHD pairs."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import require_data
from PIL import Image

from mednas_nni.data.volume import VolumeDataset, read_volume
from mednas_nni.errors import DataError

sitk = pytest.importorskip("SimpleITK")
pydicom = pytest.importorskip("pydicom")

ROWS, COLS = 40, 48
THIRDS = [1 / 3, 1 / 3, 1 / 3]


def _isbi(k: int, mask: bool = False) -> np.ndarray:
    """ISBI slice k as (ROWS, COLS) uint8: images bilinear, masks (0 membrane / 255 interior) nearest."""
    root = require_data("isbi2012_em")
    im = Image.open(root / ("masks" if mask else "images") / f"{k:02d}.png")
    return np.asarray(im.resize((COLS, ROWS), Image.Resampling.NEAREST if mask else Image.Resampling.BILINEAR))


def write_series(folder, first: int, n: int = 4, z0: float = 0.0):
    """A CT series of n slices (ISBI images first..first+n-1): stored = 4 * pixel, HU = stored - 1024."""
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(require_data("io_samples", "dicom", "CT_small.dcm"))
    folder.mkdir(parents=True)
    series = generate_uid()
    for k in range(n):
        ds = copy.deepcopy(template)
        a = _isbi(first + k).astype(np.int16) * 4
        ds.Rows, ds.Columns = a.shape
        ds.PixelData = a.tobytes()
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = series, generate_uid(), k + 1
        ds.ImagePositionPatient = [-10.0, -20.0, z0 + 5.0 * k]
        ds.SliceLocation = z0 + 5.0 * k
        ds.save_as(folder / f"IM{n - k:04d}.dcm")     # file names in reverse order: the reader must sort by position


def write_mask_like_series(series_folder, path, first: int, n: int = 4):
    """The ISBI masks of the same slices, on the geometry SimpleITK reads from the series."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_folder)))
    ref = reader.Execute()
    m = sitk.GetImageFromArray(np.stack([_isbi(first + k, mask=True) for k in range(n)]))   # (k, rows, cols)
    m.CopyInformation(ref)
    sitk.WriteImage(m, str(path))


@pytest.fixture
def dicom_root(tmp_path):
    for c, first in enumerate((0, 4, 8)):
        write_series(tmp_path / "images" / f"case{c}", first, z0=100.0 * c)
        (tmp_path / "masks").mkdir(exist_ok=True)
        write_mask_like_series(tmp_path / "images" / f"case{c}", tmp_path / "masks" / f"case{c}.nii.gz", first)
    return tmp_path


def test_dicom_series_slices_window_and_masks(dicom_root):
    # window [-514, 1020] maps HU -1024..-4 (stored 0..1020 = 4 * pixel) back onto the ISBI pixels exactly
    ds = VolumeDataset(root=dicom_root, size=None, window=[-514, 1020], split=THIRDS,
                       label_map={0: 1, 255: 0}, label_names=["interior", "membrane"])
    info = ds.info
    assert (info.task, info.task_type, info.in_channels, info.num_classes) == ("segmentation", "segmentation", 1, 2)
    assert info.split_sizes == {"train": 4, "val": 4, "test": 4} and info.image_size == ROWS
    for s in ("train", "val", "test"):
        (case,) = ds.cases(s)
        first = 4 * int(case[-1])
        x, y = ds.arrays(s)
        assert x.shape == y.shape == (4, ROWS, COLS) and x.dtype == y.dtype == np.uint8
        for k in range(4):     # slices sorted by position although files are named in reverse
            assert np.array_equal(x[k], _isbi(first + k)), (case, k)
            assert np.array_equal(y[k], (_isbi(first + k, mask=True) == 0).astype(np.uint8))
    sample = ds.dataset("train")[2]
    assert sample["image"].shape == (1, ROWS, COLS) and sample["label"].shape == (1, ROWS, COLS)
    assert sample["label"].dtype == torch.long and sample["image"].dtype == torch.float32


def test_dicom_reader_agrees_with_simpleitk(dicom_root):
    vol, geo = read_volume(dicom_root / "images" / "case1")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dicom_root / "images" / "case1")))
    ref = reader.Execute()
    assert np.array_equal(vol, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    assert np.allclose(geo.spacing, ref.GetSpacing()) and np.allclose(geo.origin, ref.GetOrigin())
    assert vol.min() == -1024 + 4 * min(int(_isbi(k).min()) for k in range(4, 8))   # rescale intercept applied


def test_window_clips_and_resize(dicom_root):
    ds = VolumeDataset(root=dicom_root, size=None, window=[-774, 500], split=THIRDS)   # HU -1024..-524 -> 0..255
    x, _ = ds.arrays("train")
    first = 4 * int(ds.cases("train")[0][-1])
    for k in range(4):
        hu = 4.0 * _isbi(first + k) - 1024.0
        ref = np.round(np.clip((hu + 1024.0) / 500.0, 0, 1) * 255.0).astype(np.uint8)
        assert np.abs(x[k].astype(int) - ref).max() <= 1
    assert (x == 255).mean() > 0.2                                 # the bright part is clipped
    small = VolumeDataset(root=dicom_root, size=32, window=[-774, 500], split=THIRDS)
    x, y = small.arrays("train")
    assert x.shape == y.shape == (4, 32, 32)
    assert set(np.unique(y).tolist()) == {0, 1}                    # auto map 0/255 -> 0/1, nearest resize


def test_geometry_mismatch_is_one_line(dicom_root):
    m = sitk.ReadImage(str(dicom_root / "masks" / "case2.nii.gz"))
    m.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(m, str(dicom_root / "masks" / "case2.nii.gz"))
    with pytest.raises(DataError, match=r"masks/case2\.nii\.gz: expected the origin of case2, \(-10\.0, -20\.0, "
                                        r"200\.0\), got \(0\.0, 0\.0, 0\.0\)") as e:
        VolumeDataset(root=dicom_root, split=THIRDS).info
    assert "\n" not in str(e.value)
    sitk.WriteImage(sitk.Image(48, 40, 3, sitk.sitkUInt8), str(dicom_root / "masks" / "case2.nii.gz"))
    with pytest.raises(DataError, match=r"expected the size of case2, \(48, 40, 4\), got \(48, 40, 3\)"):
        VolumeDataset(root=dicom_root, split=THIRDS, size=64).info


def _nifti_pair(root, name, first, n=5, suffix=".nii.gz", mask_suffix=".mha", spacing=(0.5, 0.5, 2.0)):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    vol = np.stack([_isbi(first + k).astype(np.int16) for k in range(n)])        # (k, j, i)
    lab = np.stack([(_isbi(first + k, mask=True) == 0).astype(np.uint8) for k in range(n)])
    lab[0] = 0                                                                    # one slice without foreground
    for arr, path in ((vol, root / "images" / f"{name}{suffix}"), (lab, root / "masks" / f"{name}{mask_suffix}")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        img.SetOrigin((1.0, 2.0, 3.0))
        sitk.WriteImage(img, str(path))
    return vol, lab


def test_nifti_mha_mhd_pairs_percentiles_axis_foreground(tmp_path):
    vols = {}
    vols["a"] = _nifti_pair(tmp_path, "a", 0)
    vols["b"] = _nifti_pair(tmp_path, "b", 5, suffix=".mha", mask_suffix=".nii")
    vols["c"] = _nifti_pair(tmp_path, "c", 10, suffix=".mhd", mask_suffix=".nii.gz")
    ds = VolumeDataset(root=tmp_path, size=None, split=THIRDS, label_names=["background", "membrane"])
    assert ds.info.split_sizes == {"train": 5, "val": 5, "test": 5}
    for s in ("train", "val", "test"):
        (case,) = ds.cases(s)
        vol, lab = vols[case]
        x, y = ds.arrays(s)
        assert np.array_equal(y, lab)
        lo, hi = np.percentile(vol.astype(np.float32), [0.5, 99.5])
        ref = np.round(np.clip((vol - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
        assert np.abs(x.astype(int) - ref).max() <= 1
    fg = VolumeDataset(root=tmp_path, size=None, split=THIRDS, foreground_only=True)
    assert fg.info.split_sizes == {"train": 4, "val": 4, "test": 4}
    side = VolumeDataset(root=tmp_path, size=None, split=THIRDS, axis=0)            # slices along i: (k, j)
    x, y = side.arrays("train")
    assert x.shape == (COLS, 5, ROWS) and y.shape == (COLS, 5, ROWS)
    (case,) = side.cases("train")
    assert np.array_equal(y[7], vols[case][1][:, :, 7])


def test_unmatched_and_unreadable_volumes(tmp_path):
    _nifti_pair(tmp_path, "a", 0, n=2)
    _nifti_pair(tmp_path, "b", 2, n=2)
    _nifti_pair(tmp_path, "c", 4, n=2)
    (tmp_path / "masks" / "b.mha").unlink()
    with pytest.raises(DataError, match=r"masks: expected a mask volume for every name, got 1 without one "
                                        r"\(first: b\.nii\.gz\)"):
        VolumeDataset(root=tmp_path).info
    (tmp_path / "masks" / "b.mha").write_bytes(b"not a volume")
    with pytest.raises(DataError, match=r"b\.mha: expected a readable 3-D volume, got RuntimeError"):
        VolumeDataset(root=tmp_path, split=THIRDS).info

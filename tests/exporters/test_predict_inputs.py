"""``mednas predict`` inputs and safety: DICOM Modality/VOI LUTs, DICOM series folders, folders and globs,
``--skip-errors``, out-of-distribution flags, the bundle hash and SOPInstanceUID in every record."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mednas_nni.cli import main
from mednas_nni.deploy import Bundle, InputImage, expand_inputs, predict_files, read_images
from mednas_nni.deploy.ood import ood_reasons, training_statistics
from mednas_nni.errors import DataError

from deploy_fixtures import exported, make_bundle, tiny_run, trained  # noqa: F401 - pytest fixtures

from conftest import require_data  # tests/conftest.py (the root tests folder is on sys.path)


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


@pytest.mark.data
def test_io_samples_are_flagged_for_a_breastmnist_bundle(exported, tmp_path, capsys):
    """Issue #12's 'done when': the CT and MR files of io_samples are out of distribution for a BreastMNIST bundle
    and, with --skip-errors, every input (a broken one too) gets a record."""
    import pydicom

    io = require_data("io_samples")
    bundle_dir, report = exported
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    out = tmp_path / "pred.json"
    rc, stdout, err = _cli(capsys, "predict", bundle_dir, io, bad, "--skip-errors", "--out", out)
    assert rc == 0, err
    doc = json.loads(out.read_text())
    recs = {r["file"].replace(str(io) + "/", ""): r for r in doc["predictions"]}
    assert sorted(recs) == sorted(["dicom/CT_small.dcm", "dicom/MR_small.dcm", "dicom/MR_small_implicit.dcm",
                                   "nifti/anatomical.nii", "nifti/example4d.nii.gz", "nifti/functional.nii",
                                   str(bad)])
    assert [json.loads(line) for line in stdout.splitlines()] == doc["predictions"]
    assert all(r["bundle_hash"] == report["bundle_hash"] == doc["bundle_hash"] for r in recs.values())
    for name, modality in (("dicom/CT_small.dcm", "CT"), ("dicom/MR_small.dcm", "MR"),
                           ("dicom/MR_small_implicit.dcm", "MR")):
        r = recs[name]
        assert r["ood"] is True and r["modality"] == modality
        assert f"DICOM Modality {modality}; the model was trained on breast ultrasound images (Modality US)" \
            in r["ood_reasons"]
        assert r["sop_instance_uid"] == pydicom.dcmread(io / name, stop_before_pixels=True).SOPInstanceUID
        assert r["class"] in ("malignant", "normal, benign")  # still answered, but flagged
    for name in ("nifti/anatomical.nii", "nifti/example4d.nii.gz", "nifti/functional.nii"):
        assert recs[name]["ood"] is True and any("3-D volume" in x for x in recs[name]["ood_reasons"])
    assert "error" in recs[str(bad)] and str(bad) in recs[str(bad)]["error"]
    assert recs[str(bad)]["bundle_hash"] == report["bundle_hash"]
    assert doc["out_of_distribution"] == 6 and doc["errors"] == 1
    warned = [line for line in err if line.startswith("mednas: warning: ")]
    assert len(warned) == 6 and any("CT_small.dcm: out of distribution" in w for w in warned)
    # without --skip-errors: one line naming the broken file, exit 2, nothing written
    out2 = tmp_path / "p2.json"
    rc, _, err = _cli(capsys, "predict", bundle_dir, io, bad, "--out", out2)
    assert rc == 2 and len(err) == 1 and str(bad) in err[0] and not out2.exists()


@pytest.mark.data
def test_dicom_voi_window_is_applied(exported):
    """MR_small has a VOI window (centre 600, width 1600): pydicom applies it, and the window maps to 0..255."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from mednas_nni.deploy.preprocessing import prepare_pixels

    f = require_data("io_samples") / "dicom" / "MR_small.dcm"
    ds = pydicom.dcmread(f)
    (img,) = read_images(f)
    want = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    np.testing.assert_array_equal(img.pixels, want)
    assert img.value_range == (-32768.0, 32767.0)  # pydicom's windowing output range for signed 16 bit
    a = prepare_pixels(InputImage("mr", None, img.pixels.copy(), value_range=img.value_range),
                       Bundle(exported[0]).prep)
    # by hand: the window [c - w/2, c + w/2] = [-200, 1400] linearly onto 0..255, then PIL's bilinear resize
    from PIL import Image

    px = ds.pixel_array.astype(np.float64)
    by_hand = np.clip((px - (600 - 800)) / 1600, 0, 1) * 255
    small = np.asarray(Image.fromarray(by_hand.astype(np.float32)).resize((28, 28), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(a[..., 0], small, atol=0.3)
    assert any("VOI window centre 600 width 1600" in n for n in img.notes)


def _series(folder, n: int = 5):
    """A real DICOM series: CT_small's header, ``n`` slices 2 mm apart written in shuffled order, slice k's
    pixels offset by 100 k so that the slice read can be told apart."""
    import pydicom
    from pydicom.uid import generate_uid

    src = require_data("io_samples") / "dicom" / "CT_small.dcm"
    folder.mkdir(parents=True)
    series_uid, uids = generate_uid(), []
    for k in [3, 0, 4, 1, 2][:n]:
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 2.0 * k]
        ds.PixelData = (ds.pixel_array + 100 * k).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"IM{k * 7 % 5}", enforce_file_format=True)  # names not in slice order, no suffix
        uids.append((k, ds.SOPInstanceUID))
    return dict(uids)


@pytest.mark.data
def test_dicom_series_folder_is_one_input_its_middle_slice(exported, tmp_path):
    import pydicom

    uids = _series(tmp_path / "study" / "series1")
    (tmp_path / "study" / "README.txt").write_text("not an image")
    expanded = expand_inputs([tmp_path / "study"])
    assert len(expanded.items) == 1 and len(expanded.items[0].series) == 5
    assert expanded.skipped == [tmp_path / "study" / "README.txt"]
    (rec,) = predict_files(Bundle(exported[0]), [tmp_path / "study"])
    assert rec["file"] == str(tmp_path / "study" / "series1") and rec["series_slices"] == 5
    assert rec["sop_instance_uid"] == uids[2]  # the middle of the 5 slices by position
    mid = pydicom.dcmread(rec["series_file"])
    assert mid.SOPInstanceUID == uids[2] and mid.InstanceNumber == 3
    assert rec["ood"] and any("DICOM Modality CT" in x for x in rec["ood_reasons"])
    assert any("3-D volume" in x for x in rec["ood_reasons"])
    assert any("used the middle slice 2" in n for n in rec["notes"])


def test_folders_and_globs(exported, trained, tmp_path, capsys):
    from PIL import Image

    raw, _ = trained.dataset.arrays("test")
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, sub in enumerate(["a", "a", "a/b"]):
        Image.fromarray(raw[i]).save(tmp_path / sub / f"img{i}.png")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"x")
    bundle = Bundle(exported[0])
    by_folder = predict_files(bundle, [tmp_path / "a"])
    assert [r["file"] for r in by_folder] == [str(tmp_path / "a" / f) for f in ("img0.png", "img1.png",
                                                                               "b/img2.png")]
    by_glob = predict_files(bundle, [str(tmp_path / "a" / "**" / "*.png")])
    assert sorted(r["file"] for r in by_glob) == sorted(r["file"] for r in by_folder)
    assert [r["probabilities"] for r in sorted(by_glob, key=lambda r: r["file"])] == \
        [r["probabilities"] for r in sorted(by_folder, key=lambda r: r["file"])]
    with pytest.raises(DataError, match=r"nothing\*\.png: no file matches this pattern"):
        predict_files(bundle, [str(tmp_path / "nothing*.png")])
    (rec,) = predict_files(bundle, [str(tmp_path / "nothing*.png")], skip_errors=True)
    assert "no file matches" in rec["error"] and rec["bundle_hash"] == bundle.hash


def test_skip_errors_keeps_going_on_unconvertible_images(make_bundle, tmp_path, capsys):
    """A file that reads but cannot be converted (4 channels) is an error record too; the others are predicted."""
    d = make_bundle(channels=1, size=8, classes=2)
    np.save(tmp_path / "ok.npy", np.full((8, 8), 100, np.uint8))
    np.save(tmp_path / "rgba.npy", np.zeros((8, 8, 4), np.uint8))
    recs = predict_files(Bundle(d), [tmp_path / "rgba.npy", tmp_path / "gone.png", tmp_path / "ok.npy"],
                         skip_errors=True)
    assert [("error" in r) for r in recs] == [True, True, False]
    assert "got 4 channel(s)" in recs[0]["error"] and "input file not found" in recs[1]["error"]
    assert recs[2]["class"] in ("c0", "c1")
    rc, out, err = _cli(capsys, "predict", d, tmp_path / "rgba.npy", tmp_path / "ok.npy", "--skip-errors",
                        "--format", "table")
    assert rc == 0 and "ERROR" in out and err[-1].endswith("(0 out of distribution, 1 unreadable)")


def test_ood_statistics_and_colour(make_bundle):
    """The training statistics accept images like the training images and flag blank, saturated and colour ones."""
    rng = np.random.default_rng(0)
    train = rng.normal(100, 30, (200, 16, 16)).clip(0, 255).astype(np.uint8)
    stats = training_statistics(train)
    d = make_bundle(channels=1, size=16, classes=2, channel_conversion={"rgb_to_gray": True},
                    acquisition={"modality": "ultrasound", "dicom_modalities": ["US"], "color": "gray",
                                 "height": 16, "width": 16}, input_statistics=stats.model_dump(), version=3)
    prep = Bundle(d).prep

    def reasons(pixels, **kw):
        from mednas_nni.deploy.preprocessing import prepare_pixels

        img = InputImage("x", None, pixels, **kw)
        return ood_reasons(img, prep, prepare_pixels(img, prep))[0]

    assert reasons(train[0]) == [] and reasons(train[199]) == []
    assert any(r.startswith("image mean") for r in reasons(np.zeros((16, 16), np.uint8)))
    assert any(r.startswith("image bright fraction") for r in reasons(np.full((16, 16), 250, np.uint8)))
    colour = np.stack([train[0], train[0] // 2, train[0] // 3], axis=-1)
    assert any(r.startswith("a colour image") for r in reasons(colour))
    assert reasons(np.repeat(train[0][..., None], 3, axis=-1)) == []  # gray stored as RGB is fine
    us = reasons(train[0].astype(np.int16), meta={"modality": "US"}, value_range=(0.0, 255.0))
    ct = reasons(train[0].astype(np.int16), meta={"modality": "CT"}, value_range=(0.0, 255.0))
    assert us == [] and ct == ["DICOM Modality CT; the model was trained on ultrasound images (Modality US)"]


def test_every_medmnist_flag_says_what_its_images_are():
    """The bundle's acquisition comes from the data plugin: every 2-D MedMNIST flag names its modality."""
    from mednas_nni.data.medmnist import MODALITIES, MedMNISTDataset, medmnist_2d_flags

    assert set(MODALITIES) == set(medmnist_2d_flags())
    assert all(words and codes and all(c.isupper() for c in codes) for words, codes, _ in MODALITIES.values())
    info = MedMNISTDataset().info  # bundled BreastMNIST
    assert (info.modality, info.dicom_modalities, info.from_volumes) == ("breast ultrasound", ["US"], False)


@settings(max_examples=25, deadline=None)
@given(center=st.floats(-500, 1500), width=st.floats(2, 4000), slope=st.sampled_from([1.0, 0.5, 2.0]),
       intercept=st.sampled_from([0.0, -1024.0]), signed=st.booleans(), seed=st.integers(0, 2**16))
def test_dicom_window_follows_the_dicom_standard(center, width, slope, intercept, signed, seed):
    """For any Rescale Slope/Intercept and VOI window, the pixels the model sees are the DICOM linear window
    function (PS3.3 C.11.2.1.2) of the modality values, scaled onto 0..255: monotonic and inside 0..255."""
    import tempfile
    from pathlib import Path

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from mednas_nni.deploy.preprocessing import Preprocessing, prepare_pixels

    rng = np.random.default_rng(seed)
    px = rng.integers(-2000 if signed else 0, 3000, (8, 8)).astype(np.int16 if signed else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "w.dcm"
        ds = FileDataset(str(f), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "CT"
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8, 8, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(signed)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.WindowCenter, ds.WindowWidth = round(center, 2), round(width, 2)
        ds.PixelData = px.tobytes()
        ds.save_as(f, enforce_file_format=True)
        (img,) = read_images(f)
    prep = Preprocessing.from_dict({"format": "mednas-bundle", "version": 3, "task": "classification",
                                    "input": {"channels": 1, "height": 8, "width": 8},
                                    "intensity": {"mean": [0.5], "std": [0.5]},
                                    "output": {"activation": "softmax", "label_names": ["a", "b"]}})
    got = prepare_pixels(img, prep)[..., 0].astype(np.float64)
    c, w, x = float(ds.WindowCenter), float(ds.WindowWidth), px.astype(np.float64) * slope + intercept
    want = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0) * 255.0
    np.testing.assert_allclose(got, want, atol=0.01)
    order = np.argsort(px, axis=None)
    assert (np.diff(got.reshape(-1)[order]) >= -1e-6).all() and got.min() >= 0 and got.max() <= 255
    assert img.meta["modality"] == "CT" and img.meta["sop_instance_uid"] == ds.SOPInstanceUID

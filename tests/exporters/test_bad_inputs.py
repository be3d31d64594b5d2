"""Every user mistake around export / predict gives one line naming the file and what was expected."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mednas_nni.cli import main
from mednas_nni.deploy_runtime import Bundle, predict_files, read_images
from mednas_nni.errors import DataError, RunDirError

from deploy_fixtures import exported, make_bundle, tiny_run, trained  # noqa: F401 - pytest fixtures


def _cli(capsys, *argv):
    rc = main(list(argv))
    return rc, capsys.readouterr().err.strip().splitlines()


# --------------------------------------------------------------------------- export: run directories
def test_export_missing_run_dir(tmp_path, capsys):
    rc, err = _cli(capsys, "export", str(tmp_path / "nope"))
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"mednas: {tmp_path / 'nope'}: not a run directory") and "nothing at that path" in err[0]


def test_export_foreign_folder(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hello")
    rc, err = _cli(capsys, "export", str(tmp_path))
    assert rc == 2 and len(err) == 1 and "expected config.resolved.yaml in it" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]  # nothing written


def test_export_run_without_weights(tiny_run, tmp_path, capsys):
    from mednas_nni.experiment import load_trained

    rd = tmp_path / "run"
    shutil.copytree(tiny_run, rd, ignore=shutil.ignore_patterns("bundle", "gradcam", "export*"))
    (rd / "best.pt").unlink()
    with pytest.raises(RunDirError, match=r"run: expected best\.pt \(written when a run finishes\), got none"):
        load_trained(rd)
    rc, err = _cli(capsys, "export", str(rd))
    assert rc == 2 and len(err) == 1 and "expected best.pt" in err[0]
    assert not (rd / "bundle").exists() and not [p for p in rd.iterdir() if p.name.startswith(".")]


def test_export_bad_flag_value(tiny_run, capsys):
    rc, err = _cli(capsys, "export", str(tiny_run), "--atol", "-1", "--out", "/nonexistent/never")
    assert rc == 2 and len(err) == 1 and err[0].startswith("mednas: --atol: expected") and "got -1.0" in err[0]


# --------------------------------------------------------------------------- predict: input files
def test_unsupported_input_file(exported, tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.txt: unsupported input file type '\.txt'; expected one of \.png"):
        read_images(f)
    out = tmp_path / "p.json"
    rc, err = _cli(capsys, "predict", str(exported[0]), str(f), "--out", str(out))
    assert rc == 2 and len(err) == 1 and "unsupported input file type" in err[0] and not out.exists()


def test_missing_and_unreadable_inputs(tmp_path):
    with pytest.raises(DataError, match=r"gone\.png: input file not found"):
        read_images(tmp_path / "gone.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png: expected a readable PNG image, got an unreadable file"):
        read_images(tmp_path / "bad.png")
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 4)), b=np.zeros((4, 4)))
    with pytest.raises(DataError, match=r"two\.npz: expected one array or an array named 'image'/'images', got "
                                        r"arrays a, b"):
        read_images(tmp_path / "two.npz")


def test_dicom_without_pixel_data(exported, tmp_path, capsys):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: no image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    f = tmp_path / "report.dcm"
    ds = FileDataset(str(f), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.PatientName = "Test^NoPixels"
    ds.save_as(str(f), enforce_file_format=True)
    with pytest.raises(DataError, match=r"report\.dcm: DICOM without pixel data; expected an image \(PixelData "
                                        r"element\), got none"):
        read_images(f)
    rc, err = _cli(capsys, "predict", str(exported[0]), str(f))
    assert rc == 2 and len(err) == 1 and "DICOM without pixel data" in err[0]


def test_wrong_channel_count_cannot_be_converted(exported, make_bundle, tmp_path, capsys):
    from PIL import Image

    four = tmp_path / "rgba.npy"
    np.save(four, np.zeros((28, 28, 4), np.uint8))
    with pytest.raises(DataError, match=r"rgba\.npy: expected an image with 1 channel\(s\) \(or one that .*"
                                        r"preprocessing\.json allows converting\), got 4 channel\(s\)"):
        predict_files(Bundle(exported[0]), [four])
    # a gray image for an RGB model that was not trained on gray-as-RGB images
    rgb_bundle = make_bundle(channels=3, size=16)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(gray)
    with pytest.raises(DataError, match=r"gray\.png: expected an image with 3 channel\(s\).*got 1 channel\(s\)"):
        predict_files(Bundle(rgb_bundle), [gray])
    rc, err = _cli(capsys, "predict", str(rgb_bundle), str(gray))
    assert rc == 2 and len(err) == 1


def test_array_of_a_shape_that_is_no_image(exported, tmp_path):
    f = tmp_path / "vol.npy"
    np.save(f, np.zeros((2, 3, 8, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"vol\.npy: array: expected \(H, W\), \(H, W, C\), \(N, H, W\) or "
                                        r"\(N, H, W, C\) with C <= 4 \(channels last\), got shape \(2, 3, 8, 8, 8\)"):
        predict_files(Bundle(exported[0]), [f])
    np.save(f, np.zeros((0, 28), np.uint8))
    with pytest.raises(DataError, match=r"expected a non-empty image array, got shape \(0, 28\)"):
        read_images(f)


# --------------------------------------------------------------------------- predict: bundles
def test_bundle_files_that_disagree(exported, tmp_path, capsys):
    src, _ = exported

    def copy(name):
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    d = copy("size")
    prep = json.loads((d / "preprocessing.json").read_text())
    prep["input"]["height"] = prep["input"]["width"] = 32
    (d / "preprocessing.json").write_text(json.dumps(prep))
    with pytest.raises(DataError, match=r"preprocessing\.json: input 1x32x32 \(CxHxW\) disagrees with model\.onnx "
                                        r"input shape \['batch', 1, 28, 28\]; expected the same size"):
        Bundle(d)

    d = copy("labels")
    prep = json.loads((d / "preprocessing.json").read_text())
    prep["output"]["label_names"].append("extra")
    (d / "preprocessing.json").write_text(json.dumps(prep))
    with pytest.raises(DataError, match=r"output\.label_names has 3 names but model\.onnx gives 2 outputs"):
        Bundle(d)

    d = copy("nomodel")
    (d / "model.onnx").unlink()
    with pytest.raises(DataError, match=r"nomodel/model\.onnx: file not found; expected the bundle's model"):
        Bundle(d)

    d = copy("noprep")
    (d / "preprocessing.json").unlink()
    rc, err = _cli(capsys, "predict", str(d), str(tmp_path))
    assert rc == 2 and len(err) == 1 and "noprep/preprocessing.json: file not found" in err[0]

    d = copy("damaged")
    (d / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"damaged/model\.onnx: expected a loadable ONNX model, got"):
        Bundle(d)
    (d / "preprocessing.json").write_text("{not json")
    with pytest.raises(DataError, match=r"damaged/preprocessing\.json: expected JSON, got a damaged file"):
        Bundle(d)

    with pytest.raises(DataError, match=r"not a bundle; expected a folder written by 'mednas export', got nothing"):
        Bundle(tmp_path / "missing")
    d = copy("noint8")
    (d / "model.int8.onnx").unlink()
    with pytest.raises(DataError, match=r"model\.int8\.onnx: file not found.*; export with --int8"):
        Bundle(d, int8=True)


# --------------------------------------------------------------------------- preprocessing.json schema
@pytest.mark.parametrize("edit,match", [
    (lambda p: p["input"].update(channels=0), r"preprocessing\.json: input\.channels: .*greater than or equal to 1"
                                              r".*got 0"),
    (lambda p: p["intensity"].update(mean=[0.5, 0.5]), r"preprocessing\.json: intensity\.mean: expected 1 value\(s\) "
                                                       r"\(one per channel\), got \[0\.5, 0\.5\]"),
    (lambda p: p["intensity"].update(std=[0.0]), r"preprocessing\.json: intensity: expected non-zero std values"),
    (lambda p: p["output"].update(activation="relu"), r"preprocessing\.json: output\.activation: expected "
                                                      r"'softmax' or 'sigmoid', got 'relu'"),
    (lambda p: p["output"].update(label_names=[]), r"preprocessing\.json: output\.label_names: .*got \[\]"),
    (lambda p: p.update(version=99), r"preprocessing\.json: expected format 'mednas-bundle' version <= 3, got "
                                     r"'mednas-bundle' version 99"),
    (lambda p: p.pop("input"), r"preprocessing\.json: input: expected a value, got none"),
    (lambda p: p["input"].update(colour="gray"), r"preprocessing\.json: input\.colour: unknown field"),
])
def test_damaged_preprocessing_fields(exported, tmp_path, edit, match):
    d = tmp_path / "b"
    shutil.copytree(exported[0], d)
    prep = json.loads((d / "preprocessing.json").read_text())
    edit(prep)
    (d / "preprocessing.json").write_text(json.dumps(prep))
    with pytest.raises(DataError, match=match) as err:
        Bundle(d)
    assert "\n" not in str(err.value)


def test_preprocessing_schema_round_trip(exported, tmp_path):
    """What the exporter writes is exactly what the reader reads (one schema)."""
    from mednas_nni.deploy.preprocessing import Preprocessing

    f = exported[0] / "preprocessing.json"
    prep = Preprocessing.read(f)
    assert prep.to_dict() == json.loads(f.read_text())
    prep.write(tmp_path / "p.json")
    assert Preprocessing.read(tmp_path / "p.json") == prep


def test_segmentation_bundle_with_a_class_output_is_refused(make_bundle):
    d = make_bundle(task="segmentation", channels=1, size=8, classes=2)
    import onnx

    from deploy_fixtures import _mean_cls_model

    onnx.save(_mean_cls_model(1, 8, 2), str(d / "model.onnx"))  # a classifier graph declared as segmentation
    with pytest.raises(DataError, match=r"task segmentation needs a per-pixel output \(batch, K, H, W\), but "
                                        r"model\.onnx gives shape \['batch', 2\]; expected 4 axes"):
        Bundle(d)

"""``mednas predict``: onnxruntime-only inference on real images, agreeing with PyTorch; DICOM / NIfTI; no torch."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mednas_nni.cli import main
from mednas_nni.deploy_runtime import Bundle, predict_files, read_images

from deploy_fixtures import exported, make_bundle, tiny_run, trained  # noqa: F401 - pytest fixtures

from conftest import require_data  # tests/conftest.py (the root tests folder is on sys.path)

N_IMAGES = 8


@pytest.fixture(scope="module")
def test_images(trained, tmp_path_factory):
    """8 real BreastMNIST test images as PNGs and as one .npy stack, plus PyTorch's probabilities for them."""
    import torch
    from PIL import Image

    model, dataset = trained.model, trained.dataset
    raw, _ = dataset.arrays("test")
    d = tmp_path_factory.mktemp("inputs")
    pngs = []
    for i in range(N_IMAGES):
        Image.fromarray(raw[i]).save(d / f"test{i}.png")
        pngs.append(d / f"test{i}.png")
    np.save(d / "stack.npy", raw[:N_IMAGES])
    ds = dataset.dataset("test")
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack([ds[i]["image"] for i in range(N_IMAGES)]).float()), 1).numpy()
    return pngs, d / "stack.npy", probs


def _probs(records, names):
    return np.asarray([[r["probabilities"][n] for n in names] for r in records])


def test_predict_matches_pytorch_on_real_test_images(exported, test_images, tmp_path):
    bundle_dir, _ = exported
    pngs, npy, ref = test_images
    bundle = Bundle(bundle_dir)
    out = tmp_path / "pred.json"
    records = predict_files(bundle, [*pngs, npy], out=out)
    assert len(records) == 2 * N_IMAGES
    from_png, from_npy = records[:N_IMAGES], records[N_IMAGES:]
    assert [r["index"] for r in from_npy] == list(range(N_IMAGES))
    # binary BreastMNIST: malignant (index 0) when p(malignant) >= the bundle's operating threshold
    threshold = bundle.prep.output.operating_point.threshold
    want = np.where(ref[:, 0] >= threshold, 0, 1).tolist()
    assert 0 < threshold < 1 and bundle.prep.output.threshold == threshold
    for recs in (from_png, from_npy):
        assert [r["class_index"] for r in recs] == want
        np.testing.assert_allclose(_probs(recs, bundle.label_names), ref, atol=1e-4)
        assert all(r["class"] == bundle.label_names[r["class_index"]] for r in recs)
        assert all(r["positive_class"] == "malignant" and r["threshold"] == threshold for r in recs)
        assert [r["positive_probability"] for r in recs] == pytest.approx(ref[:, 0].tolist(), abs=1e-4)
        assert not any("notes" in r for r in recs)  # 28x28 uint8 gray: nothing converted
        assert all(r["bundle_hash"] == bundle.hash and r["bundle_hash"].startswith("sha256:") for r in recs)
        assert all(r["ood"] is False and r["ood_reasons"] == [] for r in recs)  # real test images: in range
    doc = json.loads(out.read_text())
    assert doc["predictions"] == json.loads(json.dumps(records))
    assert doc["task"] == "classification" and doc["task_type"] == "binary-class"
    assert doc["bundle_hash"] == bundle.hash and doc["errors"] == 0 and doc["out_of_distribution"] == 0


def test_cli_predict_prints_json_lines_and_writes_out(exported, test_images, tmp_path, capsys):
    bundle_dir, _ = exported
    pngs, _, ref = test_images
    out = tmp_path / "p.json"
    assert main(["predict", str(bundle_dir), str(pngs[0]), str(pngs[1]), "--out", str(out)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in lines] == [str(pngs[0]), str(pngs[1])]
    assert [r["class_index"] for r in lines] == [r["class_index"] for r in predict_files(Bundle(bundle_dir),
                                                                                        pngs[:2])]
    assert len(json.loads(out.read_text())["predictions"]) == 2
    assert main(["predict", str(bundle_dir), str(pngs[0]), "--format", "table", "--int8"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["file", "class", "probabilities"] and str(pngs[0]) in table[1]


def test_predict_runs_without_torch_and_nni(exported, test_images, tmp_path):
    """The bundle runtime must work where importing torch or nni fails."""
    bundle_dir, _ = exported
    pngs, npy, ref = test_images
    code = textwrap.dedent("""
        import sys

        class _NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "nni", "torchvision", "monai", "pytorch_lightning"):
                    raise ImportError(f"blocked for this test: {name}")
                return None

        sys.meta_path.insert(0, _NoTorch())
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch blocked", file=sys.stderr)
        from mednas_nni.cli import main

        rc = main(sys.argv[1:])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "nni"))
        assert not heavy, heavy
        sys.exit(rc)
    """)
    out = tmp_path / "p.json"
    (tmp_path / "bad.png").write_bytes(b"not a png")
    proc = subprocess.run([sys.executable, "-c", code, "predict", str(bundle_dir), str(pngs[0]), str(npy),
                           str(tmp_path / "bad.png"), "--skip-errors", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "torch blocked" in proc.stderr
    recs = json.loads(out.read_text())["predictions"]
    want = [r["class_index"] for r in predict_files(Bundle(bundle_dir), [pngs[0], npy])]
    assert [r["class_index"] for r in recs[:-1]] == want and "error" in recs[-1]


def test_dicom_and_nifti_inputs(exported, tmp_path):
    io = require_data("io_samples")
    bundle_dir, _ = exported
    bundle = Bundle(bundle_dir)  # 1-channel 28x28 bundle: the 128x128 CT and the 3-D MR volume are converted
    files = [io / "dicom" / "CT_small.dcm", io / "nifti" / "anatomical.nii"]
    recs = predict_files(bundle, files, out=tmp_path / "p.json")
    assert len(recs) == 2 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in recs)
    ct, mr = recs
    assert any("min-max scaled" in n for n in ct["notes"]) and any("128x128 to 28x28" in n for n in ct["notes"])
    assert any("Modality LUT applied" in n for n in ct["notes"])
    assert any("middle slice" in n for n in mr["notes"])
    # the CT slice is the DICOM pixel data through the Modality LUT (HU): compare with pydicom directly
    import pydicom

    ds = pydicom.dcmread(files[0])
    (img,) = read_images(files[0])
    np.testing.assert_array_equal(img.pixels, ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope)
                                  + float(ds.RescaleIntercept))
    assert img.meta == {"modality": "CT", "sop_instance_uid": ds.SOPInstanceUID,
                        "series_instance_uid": ds.SeriesInstanceUID} and img.value_range is None
    # the NIfTI middle slice is the one SimpleITK gives
    import SimpleITK as sitk

    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(files[1])))
    (sl,) = read_images(files[1])
    np.testing.assert_array_equal(sl.pixels, vol[vol.shape[0] // 2])


def test_preprocessing_conversions(make_bundle, tmp_path):
    """16-bit and float inputs are min-max scaled; RGB->gray and resizing happen only as allowed."""
    from PIL import Image

    from mednas_nni.deploy_runtime import InputImage, preprocess

    d = make_bundle(task="multi-class", channels=1, size=8, classes=2, channel_conversion={"rgb_to_gray": True})
    prep = Bundle(d).prep
    assert prep.version == 1 and prep.task == "classification" and prep.task_type == "multi-class"  # v1 read
    ramp16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    x16 = preprocess(InputImage("a", None, ramp16), prep)
    assert x16.shape == (1, 8, 8) and x16.min() == 0 and x16.max() == pytest.approx(1.0)
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 255
    im = InputImage("b", None, rgb)
    x = preprocess(im, prep)
    assert x.shape == (1, 8, 8) and np.allclose(x, 0.299 * 255 / 255, atol=1e-3)
    assert any("gray" in n for n in im.notes) and any("resized from 16x16 to 8x8" in n for n in im.notes)
    Image.fromarray(rgb).save(tmp_path / "red.png")
    (rec,) = predict_files(Bundle(d), [tmp_path / "red.png"])
    assert rec["class"] in ("c0", "c1") and len(rec["notes"]) == 3 and rec["ood"] is None
    assert "not checked for being out of distribution" in rec["notes"][-1]  # a version-1 bundle records nothing

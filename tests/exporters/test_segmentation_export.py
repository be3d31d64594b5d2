"""A segmentation run (``unet`` on real ISBI 2012 EM images at 32 px) -> ONNX bundle -> ``mednas predict`` masks."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from mednas_nni.cli import main
from mednas_nni.errors import ExportError

from deploy_fixtures import seg_exported, seg_run, seg_trained  # noqa: F401 - pytest fixtures


def test_segmentation_bundle_files_parity_and_card(seg_exported, seg_run):
    out, report = seg_exported
    assert {p.name for p in out.iterdir()} == {"model.onnx", "model.int8.onnx", "preprocessing.json",
                                               "model_card.md", "parity.json"}
    parity = json.loads((out / "parity.json").read_text())
    assert parity["task"] == "segmentation" and parity["images"] == 5  # the whole test split (30 x 0.15)
    assert parity["mask_dice_ort_vs_pytorch"] == 1.0 and parity["mask_dice_end_to_end"] == 1.0
    assert parity["max_abs_diff_logits"] <= 1e-4 and "argmax_agreement" not in parity
    # the task's metrics, PyTorch == onnxruntime, and equal to what the run measured
    run_test = json.loads((seg_run / "metrics.json").read_text())["test"]
    m_pt, m_ort = parity["metrics"]["pytorch"], parity["metrics"]["onnxruntime_fp32"]
    assert {"dice", "iou", "hd95", "pixel_acc"} <= set(m_pt)
    assert m_pt["dice"] == pytest.approx(m_ort["dice"]) and m_pt["dice"] == pytest.approx(run_test["dice"])
    i8 = parity["int8"]
    assert 0.0 <= i8["mask_dice_vs_fp32"] <= 1.0 and "dice" in i8["drop_points_vs_pytorch"]
    assert "hd95" not in i8["drop_points_vs_pytorch"]  # a distance, not a score
    prep = json.loads((out / "preprocessing.json").read_text())
    assert prep["task"] == "segmentation" and prep["version"] == 3
    acq = prep["acquisition"]  # from the config's data.params.modality / dicom_modalities
    assert (acq["color"], acq["modality"], acq["dicom_modalities"]) == ("gray", "electron microscopy (ISBI 2012)",
                                                                          ["GM"])
    assert set(prep["input_statistics"]["features"]) == {"mean", "std", "dark_fraction", "bright_fraction"}
    assert prep["output"]["positive_class"] is None and prep["output"]["operating_point"] is None
    assert prep["output"]["kind"] == "mask" and prep["output"]["label_names"] == ["background", "foreground"]
    assert prep["input"]["height"] == prep["input"]["width"] == 32
    card = (out / "model_card.md").read_text()
    for needle in ("It segments a 32x32 gray image into 2 classes", "all-background baseline", "| Dice |",
                   "| IoU |", "| HD95 |", "| pixel accuracy |", "Dice between onnxruntime and PyTorch masks 1.0000",
                   "mask Dice vs fp32", "`unet`"):
        assert needle in card, needle
    assert "Grad-CAM (" not in card and "It classifies" not in card and "majority baseline" not in card
    assert not (seg_run / "gradcam").exists() and report["gradcam"]["files"] == []


def test_predict_writes_masks_equal_to_pytorch(seg_exported, seg_trained, tmp_path, capsys):
    import torch
    from PIL import Image

    out, _ = seg_exported
    raw, _ = seg_trained.dataset.arrays("test")
    files = []
    for i in range(3):
        Image.fromarray(raw[i]).save(tmp_path / f"em{i}.png")
        files.append(str(tmp_path / f"em{i}.png"))
    ds = seg_trained.dataset.dataset("test")
    with torch.no_grad():
        ref = seg_trained.model(torch.stack([ds[i]["image"] for i in range(3)]).float()).argmax(1).numpy()
    pred = tmp_path / "pred.json"
    assert main(["predict", str(out), *files, "--out", str(pred)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in lines] == files
    for i, rec in enumerate(lines):
        mask = np.asarray(Image.open(rec["mask"]))
        assert rec["mask"] == str(tmp_path / "pred_masks" / f"em{i}_mask.png")
        assert mask.dtype == np.uint8 and mask.shape == (32, 32)
        np.testing.assert_array_equal(mask, ref[i])  # class indices, exactly PyTorch's argmax
        assert rec["class_pixels"] == {"background": int((mask == 0).sum()), "foreground": int((mask == 1).sum())}
    doc = json.loads(pred.read_text())
    assert doc["task"] == "segmentation" and len(doc["predictions"]) == 3


def test_segmentation_predict_runs_without_torch(seg_exported, seg_trained, tmp_path):
    out, _ = seg_exported
    raw, _ = seg_trained.dataset.arrays("test")
    np.save(tmp_path / "stack.npy", raw[:2])
    code = ("import sys\n"
            "class B:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'nni', 'monai'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, B())\n"
            "from mednas_nni.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'nni')]\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, "predict", str(out), str(tmp_path / "stack.npy"),
                           "--mask-dir", str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["stack_0_mask.png", "stack_1_mask.png"]


def test_mask_parity_failure_is_one_line_and_writes_nothing(seg_trained, tmp_path, monkeypatch):
    """Logits within a (too loose) atol but masks that differ: the export fails on the mask Dice."""
    import copy

    import torch

    import mednas_nni.exporters.onnx as mod

    real = mod.export_onnx

    class Flipped(torch.nn.Module):  # swaps background and foreground logits: every mask pixel changes
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).flip(1)

    monkeypatch.setattr(mod, "export_onnx", lambda model, path, shape, opset=17:
                        real(Flipped(copy.deepcopy(model)), path, shape, opset))
    out = tmp_path / "b"
    with warnings.catch_warnings(), pytest.raises(ExportError, match=r"onnx mask parity failed for .*model\.onnx: "
                                                                     r"expected Dice 1\.0 between onnxruntime and "
                                                                     r"PyTorch masks on 5 test images, got") as err:
        warnings.simplefilter("ignore")
        mod.ONNXExporter(atol=1e6, latency_runs=2).export(seg_trained, out)
    assert "\n" not in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_mask_dice():
    from mednas_nni.exporters._parity import mask_dice

    a = np.zeros((2, 4, 4), np.uint8)
    assert mask_dice(a, a, 2) == 1.0  # no foreground anywhere: identical
    b = a.copy()
    b[0, 0, :2] = 1
    assert mask_dice(a, b, 2) == 0.0
    c = b.copy()
    c[0, 0, 1] = 0
    assert mask_dice(c, b, 3) == pytest.approx((2 / 3 + 1.0) / 2)  # class 2 absent from both counts as 1

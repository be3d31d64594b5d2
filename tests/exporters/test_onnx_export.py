"""ONNX export: parity on every registered search space, the bundle of a real run, int8, atomicity."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mednas_nni.errors import ConfigError, ExportError
from mednas_nni.registry import get_plugin, list_plugins

from deploy_fixtures import exported, random_sample, tiny_run, trained  # noqa: F401 - pytest fixtures

SPACES = [i.name for i in list_plugins("search_spaces", load=False)]


@pytest.mark.parametrize("space_name", SPACES)
@pytest.mark.parametrize("in_channels,num_classes,seed", [(1, 2, 0), (3, 5, 1)])
def test_every_space_exports_with_ort_parity(space_name, in_channels, num_classes, seed, tmp_path):
    import torch

    from mednas_nni.exporters.onnx import export_onnx, onnx_parity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = get_plugin("search_spaces", space_name)(spatial_dims=2, in_channels=in_channels,
                                                        out_channels=num_classes, image_size=28)
        torch.manual_seed(seed)
        model = space.freeze(random_sample(space, seed)).eval()
        path = export_onnx(model, tmp_path / "m.onnx", (in_channels, 28, 28), opset=17)
    # batch 3 differs from the export batch (2): the batch axis must be dynamic
    x = np.random.default_rng(seed).standard_normal((3, in_channels, 28, 28)).astype(np.float32)
    diff, ref, got = onnx_parity(path, model, x)
    assert got.shape[:2] == (3, num_classes)  # (N, K) classifiers, (N, K, H, W) segmentation networks
    assert diff <= 1e-4, f"{space_name}: max |Δ| {diff}"
    import onnx

    m = onnx.load(str(path))
    assert [i.name for i in m.graph.input] == ["image"] and [o.name for o in m.graph.output] == ["logits"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_bundle_of_a_real_run(exported, tiny_run):
    """The bundle of a real (tiny) mstf_cell run on BreastMNIST: files, parity, metrics from the task, card."""
    out, report = exported
    names = {p.name for p in out.iterdir()}
    assert names == {"model.onnx", "model.int8.onnx", "preprocessing.json", "model_card.md", "parity.json",
                     "gradcam", "calibration.png"}
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["max_abs_diff_logits"] <= 1e-4 and parity["max_abs_diff_end_to_end"] <= 1e-4
    assert parity["images"] == 156  # the whole BreastMNIST test split
    assert {"acc", "auc", "balanced_acc", "f05"} <= set(parity["metrics"]["pytorch"])  # the task's metrics
    assert parity["metrics"]["pytorch"]["acc"] == pytest.approx(parity["metrics"]["onnxruntime_fp32"]["acc"])
    assert parity["argmax_agreement"] == 1.0 and parity["task"] == "classification"
    # metrics.json of the run was computed by the task on the same test split
    run_metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert parity["metrics"]["pytorch"]["auc"] == pytest.approx(run_metrics["test"]["auc"], abs=1e-6)
    prep = json.loads((out / "preprocessing.json").read_text())
    assert prep["input"] == {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": 1, "height": 28,
                             "width": 28, "color": "gray", "batch": "dynamic"}
    assert prep["intensity"]["scale"] == pytest.approx(1 / 255) and prep["intensity"]["mean"] == [0.5]
    assert prep["output"]["activation"] == "softmax" and prep["output"]["label_names"] == ["malignant",
                                                                                           "normal, benign"]
    assert prep["version"] == 3 and prep["task"] == "classification" and prep["task_type"] == "binary-class"
    assert prep["dataset"] == "breastmnist_28"
    card = (out / "model_card.md").read_text()
    for needle in ("not a medical device", "CC BY 4.0", "majority baseline", "zc_nsga2", "Parameters:",
                   "FLOPs per image", "onnxruntime batch 1", "Grad-CAM", "train 546",
                   "It classifies a 28x28 gray image into one of 2 classes (malignant, normal, benign).",
                   "| ACC |", "| AUC |", "| balanced ACC |", "| F0.5 |"):
        assert needle in card, needle
    assert "| Dice |" not in card
    assert report["flops"] > 0 and report["params_count"] > 0
    # Grad-CAM PNGs of each class inside the bundle; the run directory gets none
    gradcam = json.loads((out / "gradcam" / "index.json").read_text())
    assert len(gradcam["files"]) == 2 and all((out / "gradcam" / f["file"]).stat().st_size > 1000
                                               for f in gradcam["files"])
    assert gradcam["layer"] == report["gradcam"]["layer"] and not (tiny_run / "gradcam").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_bundle_carries_the_runs_clinical_keys(exported, tiny_run):
    """metrics.json's positive class, operating point, confusion matrix, CIs and calibration reach
    preprocessing.json and the model card; the acquisition and training statistics are recorded; every picture
    is inside the bundle and linked relatively."""
    from mednas_nni.deploy import bundle_hash
    from mednas_nni.deploy.ood import feature_table
    from mednas_nni.data.medmnist import MedMNISTDataset

    out, report = exported
    m = json.loads((tiny_run / "metrics.json").read_text())
    prep = json.loads((out / "preprocessing.json").read_text())
    o = prep["output"]
    assert o["positive_class"] == {"index": 0, "name": "malignant"} == m["positive_class"]
    assert o["operating_point"]["threshold"] == o["threshold"] == m["operating_point"]["threshold"]
    assert o["operating_point"]["rule"] == "youden" and o["operating_point"]["chosen_on"] == "val"
    acq = prep["acquisition"]
    assert (acq["modality"], acq["dicom_modalities"], acq["color"], acq["from_volumes"]) == (
        "breast ultrasound", ["US"], "gray", False)
    stats = prep["input_statistics"]
    raw, _ = MedMNISTDataset().arrays("train")
    means = feature_table(raw)["mean"]
    assert stats["images"] == len(raw) == 546
    assert stats["features"]["mean"]["median"] == pytest.approx(float(np.median(means)), abs=1e-3)
    assert stats["features"]["mean"]["low"] < means.min() + 10 and means.max() - 40 < stats["features"]["mean"]["high"]
    # the model card: confusion matrix (the run's counts), sensitivity/specificity with CIs, calibration
    card = (out / "model_card.md").read_text()
    cm = m["test"]["confusion_matrix"]
    assert f"| **malignant** | {cm[0][0]} | {cm[0][1]} |" in card
    assert f"| **normal, benign** | {cm[1][0]} | {cm[1][1]} |" in card
    sens = cm[0][0] / (cm[0][0] + cm[0][1])
    assert f"Sensitivity for **malignant**: **{sens:.3f}** ({cm[0][0]}/{cm[0][0] + cm[0][1]}), Wilson 95 % CI" in card
    assert "Specificity for **malignant**" in card
    lo, hi = m["test"]["ci95"]["auc"]
    assert f"[{lo:.3f}, {hi:.3f}]" in card
    assert f"Brier score {m['test']['calibration']['brier']:.4f}" in card
    assert f"Operating threshold p(malignant) >= **{m['operating_point']['threshold']:.4f}**" in card
    assert "Trained on: breast ultrasound (DICOM US), grayscale, 28x28 px, 2-D images." in card
    # the hash in the card and the report is the bundle's; links are relative and resolve inside the bundle
    assert report["bundle_hash"] == bundle_hash(out) and bundle_hash(out) in card
    import re

    links = re.findall(r"\]\(([^)]+)\)", card)
    assert len(links) == 5 and all(not link.startswith("/") and (out / link).is_file() for link in links)
    assert "![Reliability diagram (test split)](calibration.png)" in card
    assert str(tiny_run) not in card and str(out) not in card


def test_card_of_an_older_run_without_clinical_keys(trained, tmp_path):
    """Runs from before the metrics half of issue #12: no clinical section, no positive class, still a bundle."""
    from mednas_nni.contracts import TrainedModel
    from mednas_nni.exporters.onnx import ONNXExporter

    old = {k: v for k, v in trained.metrics.items() if k not in ("positive_class", "operating_point")}
    old["test"] = {k: v for k, v in old["test"].items()
                   if k not in ("confusion_matrix", "per_class", "fbeta_positive", "ci95", "calibration")}
    t = TrainedModel(model=trained.model, task=trained.task, dataset=trained.dataset, sample=trained.sample,
                     cfg=trained.cfg, run_dir=tmp_path, metrics=old, space=trained.space)  # no calibration.png
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ONNXExporter(gradcam_per_class=0, latency_runs=2).export(t, tmp_path / "b")
    prep = json.loads((tmp_path / "b" / "preprocessing.json").read_text())
    card = (tmp_path / "b" / "model_card.md").read_text()
    assert prep["output"].get("operating_point") is None and prep["output"]["threshold"] == 0.5
    # the data set's positive class, when the data plugin names one, else none
    pc = getattr(trained.info, "positive_class", None)
    assert (prep["output"].get("positive_class") is not None) == (pc is not None)
    assert "## Clinical metrics" not in card and "Probabilities are not calibrated." in card
    assert "| 95 % CI (run) |" in card and "n/a" in card and "calibration.png" not in card
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["model.onnx", "model_card.md", "parity.json",
                                                                   "preprocessing.json"]


def test_int8_drop_is_written(exported):
    out, _ = exported
    i8 = json.loads((out / "parity.json").read_text())["int8"]
    assert {"acc", "auc", "balanced_acc", "f05"} <= set(i8["drop_points_vs_pytorch"])
    assert np.isfinite(i8["max_abs_diff_logits"]) and 0 <= i8["argmax_agreement"] <= 1
    assert i8["metrics"]["acc"] >= 0 and "int8" in (out / "model_card.md").read_text()
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_of_a_default_size_model_is_smaller_and_close(tmp_path):
    """The default space size (3 blocks x 5 nodes x 16 channels). (The tiny test run's 8-channel model is mostly
    graph structure, so QDQ nodes make its int8 file larger; real models shrink about 2x.)"""
    import torch

    from mednas_nni.data.medmnist import MedMNISTDataset
    from mednas_nni.exporters._quant import quantize_int8
    from mednas_nni.exporters.onnx import export_onnx, onnx_parity, ort_session, stack_split

    ds = MedMNISTDataset()  # bundled BreastMNIST 28x28
    calib, _, _ = stack_split(ds, "train", limit=32)
    x, _, _ = stack_split(ds, "test", limit=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        space = get_plugin("search_spaces", "mstf_cell")(in_channels=1, out_channels=2, image_size=28)
        torch.manual_seed(0)
        model = space.freeze(random_sample(space, 3)).eval()
        fp32 = export_onnx(model, tmp_path / "m.onnx", (1, 28, 28))
    settings = quantize_int8(fp32, tmp_path / "m.int8.onnx", calib)
    assert settings["format"] == "QDQ"
    assert (tmp_path / "m.int8.onnx").stat().st_size < 0.7 * fp32.stat().st_size
    _, ref, _ = onnx_parity(fp32, model, x)
    got = ort_session(tmp_path / "m.int8.onnx").run(None, {"image": x})[0]
    assert np.isfinite(got).all()
    # int8 noise is small relative to the spread of the logits
    assert np.abs(got - ref).max() < 0.2 * (np.abs(ref).max() + 1e-3)


def test_parity_failure_writes_nothing(tiny_run, trained, tmp_path, monkeypatch, capsys):
    """An exporter bug (the ONNX graph computes something else) must fail the export with one line."""
    import copy

    import torch

    import mednas_nni.exporters.onnx as mod

    real = mod.export_onnx

    def buggy(model, path, input_shape, opset=17):
        wrong = copy.deepcopy(model)
        with torch.no_grad():
            next(wrong.parameters()).add_(0.5)
        return real(wrong, path, input_shape, opset)

    monkeypatch.setattr(mod, "export_onnx", buggy)
    out = tmp_path / "b"
    with pytest.raises(ExportError, match=r"onnx parity failed for .*model.onnx: max \|Δ\| .* > atol 0.0001"
                       ) as err:
        mod.ONNXExporter(gradcam_per_class=1, latency_runs=2).export(trained, out)
    assert "\n" not in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert not [p for p in tiny_run.iterdir() if p.name.startswith(".gradcam")]
    # the same through the CLI: one line on stderr, exit code 1 (a runtime failure), nothing written
    from mednas_nni.cli import main

    capsys.readouterr()
    rc = main(["export", str(tiny_run), "--out", str(out), "--gradcam-per-class", "0", "--latency-runs", "2"])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("mednas: onnx parity failed for ")
    assert list(tmp_path.iterdir()) == []


def test_reexport_replaces_a_bundle_but_not_a_foreign_folder(trained, tmp_path):
    from mednas_nni.exporters.onnx import ONNXExporter

    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    exporter = ONNXExporter(gradcam_per_class=0, latency_runs=2)
    with pytest.raises(ExportError, match="exists and is not a bundle"):
        exporter.export(trained, out)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exporter.export(trained, out)
        (out / "marker").write_text("from the first export")
        report = exporter.export(trained, out)  # an earlier bundle is replaced as a whole
    assert not (out / "marker").exists() and (out / "model.onnx").is_file()
    assert "model.int8.onnx" not in report["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_export_section_of_a_config_is_validated_and_runs(trained, tmp_path):
    """What ``run_search`` does for ``export: {name: onnx, params: ...}``: the exporter gets the TrainedModel the
    core holds (experiment.py)."""
    from mednas_nni.config import load_config

    cfg = load_config(None, ["export.name=onnx", "export.params.latency_runs=2", "export.params.gradcam_per_class=0"])
    assert cfg.export.params["opset"] == 17 and cfg.export.params["atol"] == 1e-4
    with pytest.raises(ConfigError, match=r"export\.params\.opst: unknown key; did you mean 'opset'"):
        load_config(None, ["export.name=onnx", "export.params.opst=17"])
    with pytest.raises(ConfigError, match=r"export\.params\.atol"):
        load_config(None, ["export.name=onnx", "export.params.atol=-1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = get_plugin("exporters", cfg.export.name)(**cfg.export.params).export(trained, tmp_path / "export")
    json.dumps(report)  # JSON-able
    assert report["parity"]["passed"] and (tmp_path / "export" / "model.onnx").is_file()


def test_export_does_not_reload_or_move_the_callers_model(trained, tmp_path, monkeypatch):
    """The exporter works on what the caller holds: no run-directory loading, the model stays where it was."""
    import mednas_nni.experiment as experiment
    from mednas_nni.exporters.onnx import ONNXExporter

    def no_reload(*a, **k):
        raise AssertionError("the exporter must not reload the run")

    monkeypatch.setattr(experiment, "load_trained", no_reload)
    monkeypatch.setattr(experiment, "load_trained_model", no_reload)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ONNXExporter(gradcam_per_class=0, latency_runs=2).export(trained, tmp_path / "b")
    after = trained.model.state_dict()
    assert all((before[k] == after[k]).all() for k in before) and not trained.model.training
    with pytest.raises(TypeError, match="expected a TrainedModel"):
        ONNXExporter().export(str(tmp_path), tmp_path / "c")


def test_cli_export_prints_the_bundle_hash(tiny_run, tmp_path, capsys):
    from mednas_nni.cli import main
    from mednas_nni.deploy import bundle_hash

    out = tmp_path / "b"
    assert main(["export", str(tiny_run), "--out", str(out), "--gradcam-per-class", "0", "--latency-runs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"bundle: {out}"
    assert f"bundle hash: {bundle_hash(out)} (in every 'mednas predict' record)" in lines
    report = json.loads((tiny_run / "export_report.json").read_text())
    assert report["bundle_hash"] == bundle_hash(out) and report["gradcam"]["files"] == []

"""Fixtures of the export / predict tests: one real tiny search + one exported bundle per session, and a factory
for hand-made bundles (ONNX graphs built with ``onnx.helper``, no torch).

Not a ``conftest.py``: the other test folders import the root ``tests/conftest.py`` as ``conftest``, and a second
non-package ``conftest.py`` would shadow it. Test modules import these fixtures by name; the session results are
cached here so that several modules share one search and one export.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

TINY_OVERRIDES = [
    "strategy.params.pop_size=4", "strategy.params.generations=1", "evaluator.epochs=1",
    "evaluator.max_batches_per_epoch=2", "space.params.num_blocks=1", "space.params.num_nodes=2",
    "space.params.channels=8", "run.progress=false",
]


_CACHE: dict[str, object] = {}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run directory of a real (tiny) search on the bundled BreastMNIST 28x28 (real MedMNIST data)."""
    if "run" not in _CACHE:
        _CACHE["run"] = _tiny_run(tmp_path_factory)
    return _CACHE["run"]


def _tiny_run(tmp_path_factory) -> Path:
    from mednas_nni.config import load_config
    from mednas_nni.experiment import run_search

    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setenv("NNI_CONFIG_DIR", str(tmp_path_factory.mktemp("nni-config")))
        cfg = load_config(None, [f"run.out_dir={root}", *TINY_OVERRIDES])
        rd = run_search(cfg)
    return rd.path


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory) -> tuple[Path, dict]:
    """``(bundle folder, report)``: the tiny run exported with int8 (small calibration / latency budgets)."""
    if "exported" not in _CACHE:
        _CACHE["exported"] = _export(tiny_run, tmp_path_factory)
    return _CACHE["exported"]


def _export(tiny_run, tmp_path_factory) -> tuple[Path, dict]:
    from mednas_nni.exporters.onnx import ONNXExporter

    out = tmp_path_factory.mktemp("export") / "bundle"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ONNXExporter(int8=True, calibration_images=32, latency_runs=5, gradcam_per_class=1).export(
            tiny_run, out)
    return out, report


@pytest.fixture(scope="session")
def trained(tiny_run):
    """``(model, cfg, dataset)`` of the tiny run (PyTorch reference)."""
    from mednas_nni.experiment import load_trained_model

    if "trained" not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CACHE["trained"] = load_trained_model(tiny_run)
    return _CACHE["trained"]


def _conv_seg_model(channels: int, classes: int):
    """``image (N,C,H,W) -> logits (N,K,H,W)``: a 1x1 conv; class k's logit is ``(2k-1) * (mean_c x - 0.5)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((classes, channels, 1, 1), np.float32)
    b = np.zeros((classes,), np.float32)
    for k in range(classes):
        w[k, :, 0, 0] = (2 * k - 1) / channels
        b[k] = -(2 * k - 1) * 0.5
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "W", "B"], ["logits"])], "seg",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, None, None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes, None, None])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _mean_cls_model(channels: int, size: int, classes: int):
    """``image (N,C,S,S) -> logits (N,K)``: per-channel mean, times a fixed matrix."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.linspace(-1, 1, channels * classes, dtype=np.float32).reshape(channels, classes)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["m", "W"], ["logits"])], "cls",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def make_bundle(tmp_path):
    """Factory: ``make_bundle(task=..., channels=..., size=..., classes=..., **prep_overrides) -> folder``."""
    import onnx

    def make(task: str = "multi-class", channels: int = 3, size: int = 16, classes: int = 3,
             name: str = "hand", model_size: int | None = None, **overrides) -> Path:
        d = tmp_path / name
        d.mkdir()
        if task == "segmentation":
            model = _conv_seg_model(channels, classes)
        else:
            model = _mean_cls_model(channels, model_size or size, classes)
        onnx.save(model, str(d / "model.onnx"))
        prep = {
            "format": "mednas-bundle", "version": 1, "dataset": "hand-made", "task": task,
            "model": "model.onnx", "model_int8": None,
            "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": channels,
                      "height": size, "width": size},
            "channel_conversion": {"gray_to_rgb": False, "rgb_to_gray": False},
            "intensity": {"scale": 1 / 255, "mean": [0.0] * channels, "std": [1.0] * channels},
            "output": {"name": "logits", "activation": "softmax", "threshold": 0.5,
                       "label_names": [f"c{k}" for k in range(classes)]},
        }
        for key, value in overrides.items():
            section, _, field = key.partition("__")
            if field:
                prep[section][field] = value
            else:
                prep[section] = value
        (d / "preprocessing.json").write_text(json.dumps(prep))
        return d

    return make

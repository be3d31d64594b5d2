"""Fixtures of the export / predict tests: tiny *finished run directories* written the cheap way (a real config, a
real network of a registered space trained a few steps on real data, ``best_arch.json``, ``best.pt``,
``metrics.json`` with the task's baseline) instead of a search, loaded with the core's
:func:`mednas_nni.experiment.load_trained`; their exported bundles; and a factory for hand-made bundles (ONNX graphs
built with ``onnx.helper``, no torch).

Not a ``conftest.py``: the other test folders import the root ``tests/conftest.py`` as ``conftest``, and a second
non-package ``conftest.py`` would shadow it. Test modules import these fixtures by name; the session results are
cached here so that several modules share one run and one export.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

CLS_OVERRIDES = ["space.params.num_blocks=1", "space.params.num_nodes=2", "space.params.channels=8",
                 "evaluator.epochs=1", "run.progress=false", "run.device=cpu"]
SEG_SIZE = 32

_CACHE: dict[str, object] = {}


def random_sample(space, seed: int) -> dict:
    """A seeded random valid architecture from ``space.simplify()`` (Categorical: uniform), canonicalized."""
    from nni.mutable import Categorical

    rng = np.random.default_rng(seed)
    for _ in range(200):
        sample = {}
        for label, mutable in space.simplify().items():
            if isinstance(mutable, Categorical):
                sample[label] = mutable.values[int(rng.integers(len(mutable.values)))]
            else:  # any other mutable type: NNI's own seeded random draw
                sample.update(mutable.random(random_state=np.random.RandomState(int(rng.integers(2**31)))))
        sample = space.canonicalize(sample) if hasattr(space, "canonicalize") else sample
        ok = space.is_valid(sample) if hasattr(space, "is_valid") else True
        if (ok[0] if isinstance(ok, tuple) else ok):
            return sample
    raise AssertionError(f"{type(space).__name__}: no valid sample in 200 draws")


def _train_steps(model, task, dataset, steps: int, batch_size: int, seed: int) -> None:
    import torch
    from torch.utils.data import DataLoader

    torch.manual_seed(seed)
    loss_fn = task.loss(dataset)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(dataset.dataset("train"), batch_size=batch_size, shuffle=True)
    model.train()
    done = 0
    while done < steps:
        for batch in loader:
            opt.zero_grad()
            loss = loss_fn(model(batch["image"].float()), task.target(torch.as_tensor(batch["label"])))
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    model.eval()


def _probabilities(model, dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    ds = dataset.dataset(split)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))]).float()
    with torch.no_grad():
        p = torch.softmax(model(x), 1).numpy()
    return p, dataset.arrays(split)[1].reshape(-1)


def clinical_keys(model, dataset, positive: int = 0, seed: int = 0) -> dict:
    """The keys the metrics half of issue #12 writes into ``metrics.json`` (``positive_class``,
    ``operating_point``; in ``test``: ``confusion_matrix``, ``per_class``, ``fbeta_positive``, ``ci95``,
    ``calibration``), computed here with scikit-learn from the model's real probabilities: the threshold by
    Youden's J on val, applied to test; 200 seeded bootstrap resamples for the CIs of ACC and AUC."""
    from sklearn.metrics import brier_score_loss, confusion_matrix, fbeta_score, roc_auc_score, roc_curve

    names = dataset.info.label_names
    pv, yv = _probabilities(model, dataset, "val")
    fpr, tpr, thr = roc_curve(yv == positive, pv[:, positive])
    threshold = float(np.clip(thr[int(np.argmax(tpr - fpr))], 0.0, 1.0))
    pt, yt = _probabilities(model, dataset, "test")
    pred = np.where(pt[:, positive] >= threshold, positive, 1 - positive)
    cm = confusion_matrix(yt, pred, labels=[0, 1])
    per_class = {}
    for c, name in enumerate(names):
        tp, fn = cm[c, c], cm[c].sum() - cm[c, c]
        fp, tn = cm[:, c].sum() - cm[c, c], cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]
        per_class[name] = {"sensitivity": tp / max(tp + fn, 1), "specificity": tn / max(tn + fp, 1),
                           "ppv": tp / max(tp + fp, 1), "npv": tn / max(tn + fn, 1),
                           "f1": 2 * tp / max(2 * tp + fp + fn, 1), "support": int(tp + fn)}
    rng = np.random.default_rng(seed)
    boot = {"acc": [], "auc": []}
    for _ in range(200):
        i = rng.integers(0, len(yt), len(yt))
        if len(np.unique(yt[i])) == 2:
            boot["acc"].append(float((pt[i].argmax(1) == yt[i]).mean()))  # test.acc is argmax accuracy
            boot["auc"].append(float(roc_auc_score(yt[i] == positive, pt[i, positive])))
    bins = np.minimum((pt.max(1) * 10).astype(int), 9)
    conf, hit = pt.max(1), pt.argmax(1) == yt
    ece = sum(abs(conf[bins == b].mean() - hit[bins == b].mean()) * (bins == b).mean() for b in range(10)
              if (bins == b).any())
    test = {"confusion_matrix": cm.tolist(), "per_class": per_class,
            "fbeta_positive": float(fbeta_score(yt, pred, beta=0.5, pos_label=positive, zero_division=0.0)),
            "ci95": {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in boot.items()},
            "calibration": {"brier": float(brier_score_loss(yt == positive, pt[:, positive])), "ece": float(ece),
                            "n_bins": 10}}
    return {"positive_class": {"index": positive, "name": names[positive]},
            "operating_point": {"rule": "youden", "min_sensitivity": None, "threshold": threshold,
                                "chosen_on": "val"}, "test": test}


def write_run(root: Path, config: Path | None, overrides: list[str], *, steps: int = 12, batch_size: int = 32,
              seed: int = 0, clinical: bool = False) -> Path:
    """A finished run directory, written without a search (what ``run_search`` leaves behind at ``done``)."""
    import torch
    from torch.utils.data import DataLoader

    from mednas_nni.config import dump_config, load_config
    from mednas_nni.experiment import RunContext
    from mednas_nni.io import RunDir, atomic_torch_save, atomic_write_json, atomic_write_text

    cfg = load_config(config, [f"run.out_dir={root}", *overrides])
    rd = RunDir.create(root, "tiny")
    atomic_write_text(rd / RunDir.CONFIG, dump_config(cfg))
    ctx = RunContext.build(cfg, rd)
    space = ctx.build_space()
    sample = random_sample(space, seed)
    torch.manual_seed(seed)
    model = space.freeze(sample)
    _train_steps(model, ctx.task, ctx.dataset, steps, batch_size, seed)
    atomic_torch_save(model.state_dict(), rd / RunDir.BEST_WEIGHTS)
    atomic_write_json(rd / RunDir.BEST_ARCH, sample)

    def scores(split):
        return ctx.task.evaluate(model, DataLoader(ctx.dataset.dataset(split), batch_size=64), "cpu")

    metrics = {"dataset": ctx.dataset.info.name, "task": ctx.task.name, "space": cfg.space.name,
               "strategy": cfg.strategy.name, "best_finalist": 0, "selected_by": "val_" + ctx.select_key,
               "best_epoch": 1, "val": scores("val"), "test": scores("test"),
               "baseline_test": ctx.task.baseline(ctx.dataset, "test"),
               "params": int(sum(p.numel() for p in model.parameters())),
               "search": {"evaluated": 1, "failed": 0, "pruned": 0, "seconds": 0.0},
               "retrain": {"epochs": 1, "seconds": 0.0}, "device": "cpu", "seed": seed}
    if clinical:
        from PIL import Image

        extra = clinical_keys(model, ctx.dataset, seed=seed)
        metrics["test"].update(extra.pop("test"))
        metrics.update(extra)
        # a stand-in for the run's reliability diagram (written by the run report): the exporter copies it
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(rd / "calibration.png")
    atomic_write_json(rd / RunDir.METRICS, metrics)
    rd.set_status(phase="done")
    return rd.path


def load(run_dir: Path):
    from mednas_nni.experiment import load_trained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_trained(run_dir)


# ---------------------------------------------------------------------------------------- classification
@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run directory: an ``mstf_cell`` network trained a few steps on the bundled BreastMNIST 28x28,
    whose ``metrics.json`` has the clinical keys (:func:`clinical_keys`; malignant is the positive class) and
    a ``calibration.png``."""
    if "run" not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CACHE["run"] = write_run(tmp_path_factory.mktemp("runs"), None, CLS_OVERRIDES, clinical=True)
    return _CACHE["run"]


@pytest.fixture(scope="session")
def trained(tiny_run):
    """The :class:`~mednas_nni.contracts.TrainedModel` of the tiny run (the PyTorch reference)."""
    if "trained" not in _CACHE:
        _CACHE["trained"] = load(tiny_run)
    return _CACHE["trained"]


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory) -> tuple[Path, dict]:
    """``(bundle folder, report)``: the tiny run exported with int8 (small calibration / latency budgets)."""
    if "exported" not in _CACHE:
        from mednas_nni.exporters.onnx import ONNXExporter

        out = tmp_path_factory.mktemp("export") / "bundle"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = ONNXExporter(int8=True, calibration_images=32, latency_runs=5, gradcam_per_class=1).export(
                trained, out)
        _CACHE["exported"] = (out, report)
    return _CACHE["exported"]


# ---------------------------------------------------------------------------------------- segmentation
SEG_CONFIG = """\
# ISBI 2012 EM (30 real image/mask pairs) at {size}x{size} through the folder plugin, a small unet space
data:
  name: folder
  params: {{root: {root}, images: images, masks: masks, size: {size}, name: isbi2012_em,
            modality: electron microscopy (ISBI 2012), dicom_modalities: [gm]}}
task: {{name: segmentation}}
space:
  name: unet
  params: {{depths: [2, 3], widths: [8], dropouts: [0.0]}}
strategy: {{name: random, params: {{}}}}
evaluator: {{epochs: 1, batch_size: 8}}
run: {{progress: false, device: cpu}}
"""


def seg_config(folder: Path, data_root: Path) -> Path:
    """A real segmentation config file (written into ``folder``)."""
    f = folder / "seg.yml"
    f.write_text(SEG_CONFIG.format(root=data_root, size=SEG_SIZE))
    return f


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory) -> Path:
    """A finished segmentation run directory (``unet`` on ISBI 2012 EM at 32 px, trained a few steps)."""
    from conftest import require_data

    data = require_data("isbi2012_em")
    if "seg_run" not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root = tmp_path_factory.mktemp("segruns")
            _CACHE["seg_run"] = write_run(root, seg_config(root, data), [], steps=8, batch_size=8)
    return _CACHE["seg_run"]


@pytest.fixture(scope="session")
def seg_trained(seg_run):
    if "seg_trained" not in _CACHE:
        _CACHE["seg_trained"] = load(seg_run)
    return _CACHE["seg_trained"]


@pytest.fixture(scope="session")
def seg_exported(seg_trained, tmp_path_factory) -> tuple[Path, dict]:
    """``(bundle folder, report)`` of the segmentation run, with int8."""
    if "seg_exported" not in _CACHE:
        from mednas_nni.exporters.onnx import ONNXExporter

        out = tmp_path_factory.mktemp("segexport") / "bundle"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = ONNXExporter(int8=True, calibration_images=8, latency_runs=3).export(seg_trained, out)
        _CACHE["seg_exported"] = (out, report)
    return _CACHE["seg_exported"]


# ---------------------------------------------------------------------------------------- hand-made bundles
def _conv_seg_model(channels: int, classes: int):
    """``image (N,C,H,W) -> logits (N,K,H,W)``: a 1x1 conv; class k's logit is ``(2k-1) * (mean_c x - 0.5)``."""
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
    """Factory: ``make_bundle(task=..., channels=..., size=..., classes=..., **prep_overrides) -> folder``.

    Writes a format-version-1 ``preprocessing.json`` (``task`` = the old MedMNIST type or ``segmentation``), so
    these bundles also check that old bundles still load.
    """
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

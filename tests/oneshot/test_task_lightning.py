"""TaskLightningModule on its own (NNI's Lightning evaluator, no one-shot strategy) and the one-shot helpers."""
from __future__ import annotations

import csv

import nni
import pytest
import torch
from _oneshot_helpers import one_torch_thread  # noqa: F401 (autouse fixture: torch on one thread)
from _oneshot_helpers import (BreastSlice, ClassificationTask, DiscSegmentation, SegmentationTask, TinyClassifierSpace,
                              TinySegmenterSpace)
from nni.nas.evaluator.pytorch import Lightning, LightningModule, Trainer

from mednas_nni.engines.oneshot import (OneShotRecorder, build_evaluator, finalists_from_export, in_nni_trial,
                                        make_loader, plot_alpha, trainer_device)
from mednas_nni.errors import SearchError
from mednas_nni.tasks.lightning import TaskLightningModule, replay_metrics



@pytest.mark.data
def test_task_module_trains_and_validates_with_the_tasks_metrics(tmp_path, monkeypatch, medmnist_root):
    monkeypatch.chdir(tmp_path)                      # no model.onnx, no lightning_logs in the current folder
    data = BreastSlice(medmnist_root / "breastmnist.npz", n_train=64, n_val=40)
    task = ClassificationTask(data.info)
    module = task.lightning_module(lr=3e-3, weight_decay=0.0, dataset=data)
    assert isinstance(module, TaskLightningModule) and isinstance(module, LightningModule)
    torch.manual_seed(0)
    net = TinyClassifierSpace().freeze({"op": "conv3", "act": "relu"})
    train = make_loader(data.dataset("train"), 16, shuffle=True, seed=0)
    val = make_loader(data.dataset("val"), 16, shuffle=False, seed=0)    # 40 images: a ragged last batch
    ev = build_evaluator(task, train, val, run_dir=tmp_path / "run", device="cpu", max_epochs=1, lr=3e-3,
                         weight_decay=0.0, dataset=data)
    assert isinstance(ev, Lightning) and isinstance(ev.trainer, Trainer)
    ev.evaluate(net)

    logged = {k: float(v) for k, v in ev.trainer.callback_metrics.items()}
    assert logged["train_loss"] > 0 and logged["val_loss"] > 0 and "arch_loss" not in logged
    direct = task.evaluate(net, val, device="cpu")
    for name in task.metric_names:
        assert logged[f"val_{name}"] == pytest.approx(direct[name], abs=1e-6), name
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("lightning_logs"))


def test_task_module_segmentation_validation_equals_task_evaluate(tmp_path):
    data = DiscSegmentation(n_train=16, n_val=10)
    task = SegmentationTask(data.info)
    torch.manual_seed(0)
    net = TinySegmenterSpace().freeze({"mid": "conv3"})
    train = make_loader(data.dataset("train"), 8, shuffle=True, seed=0)
    val = make_loader(data.dataset("val"), 4, shuffle=False, seed=0)
    ev = build_evaluator(task, train, val, run_dir=tmp_path, device="cpu", max_epochs=1, lr=3e-3, weight_decay=0.0)
    ev.evaluate(net)
    logged = {k: float(v) for k, v in ev.trainer.callback_metrics.items()}
    direct = task.evaluate(net, val, device="cpu")
    assert {f"val_{k}" for k in direct} <= set(logged)
    for k, v in direct.items():
        assert logged[f"val_{k}"] == pytest.approx(v, abs=1e-5, nan_ok=True), k


def test_replay_metrics_equal_task_evaluate_and_check_counts():
    from mednas_nni.contracts import DatasetInfo

    info = DatasetInfo(name="t", task_type="multi-class", num_classes=3, in_channels=1, image_size=4,
                       label_names=["a", "b", "c"])
    task = ClassificationTask(info)
    g = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(n, 1, 4, 4, generator=g), "label": torch.randint(0, 3, (n, 1), generator=g)}
               for n in (5, 5, 3)]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        outputs = [net(b["image"]) for b in batches]
    assert replay_metrics(task, batches, outputs) == pytest.approx(task.evaluate(net, batches))
    with pytest.raises(ValueError, match="one output per batch"):
        replay_metrics(task, batches, outputs[:2])


class _Probs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.step = 0

    def export_probs(self):
        return {"op": {"a": 0.5 + 0.1 * self.step, "b": 0.5 - 0.1 * self.step}, "k": {3: 1.0}}


class _Trainer:
    def __init__(self, epoch, metrics):
        self.current_epoch, self.callback_metrics = epoch, metrics


def test_recorder_writes_csv_and_reports_to_nni(tmp_path, monkeypatch):
    reports = []
    monkeypatch.setattr(nni, "report_intermediate_result", reports.append)
    assert not in_nni_trial()                        # plain pytest: never report unless told
    rec = OneShotRecorder(tmp_path / "m.csv", evaluate=lambda m: {"auc": 0.7}, default_key="val_auc",
                          report_to_nni=True)
    mod = _Probs()
    rec.on_train_start(None, mod)
    for e in range(2):
        mod.step = e + 1
        rec.on_train_epoch_end(_Trainer(e, {"train_loss": torch.tensor(0.5 - 0.1 * e), "arch_loss": torch.tensor(0.6),
                                            "prob/op/a": torch.tensor(0.0)}), mod)
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert list(rows[0])[-3:] == ["p/op/a", "p/op/b", "p/k/3"] and "prob/op/a" not in rows[0]
    assert float(rows[2]["p/op/a"]) == pytest.approx(0.7) and float(rows[1]["val_auc"]) == pytest.approx(0.7)
    assert [r["default"] for r in reports] == [0.7, 0.7] and reports[1]["train_loss"] == pytest.approx(0.4)
    assert plot_alpha(rec.rows, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_alpha([{"epoch": 0}], tmp_path / "none.png") is None


def test_finalists_are_canonical_checked_and_json_ready():
    space = TinyClassifierSpace()
    (fin,) = finalists_from_export(space, {"act": "tanh", "op": "pool"}, "DARTS argmax",
                                   {"op": {"pool": 0.6, "conv3": 0.2, "conv5": 0.2}})
    assert list(fin["sample"]) == ["op", "act"] and fin["alpha"]["op"]["pool"] == 0.6

    class Invalid(TinyClassifierSpace):
        def is_valid(self, sample):
            return False, "pool not allowed"

    with pytest.raises(SearchError, match="pool not allowed"):
        finalists_from_export(Invalid(), {"op": "pool", "act": "relu"}, "DARTS argmax")


def test_trainer_device():
    assert trainer_device("cpu") == {"accelerator": "cpu", "devices": 1}
    assert trainer_device("cuda") == {"accelerator": "gpu", "devices": 1}
    assert trainer_device("cuda:1") == {"accelerator": "gpu", "devices": [1]}

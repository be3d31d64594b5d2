"""Every registered task plugin honours the Task contract on real data (looped over the registry, timm-style)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from _task_data import task_dataset
from mednas_nni.config import EvaluatorConfig
from mednas_nni.contracts import Task
from mednas_nni.errors import ConfigError
from mednas_nni.registry import get_plugin, list_plugins

TASKS = [p.name for p in list_plugins("tasks")]

pytestmark = pytest.mark.data


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_both_builtin_tasks_are_registered():
    assert {"classification", "segmentation"} <= set(TASKS)
    assert all(p.status == "ok" for p in list_plugins("tasks")), list_plugins("tasks")


@pytest.fixture(params=TASKS)
def setup(request):
    cls = get_plugin("tasks", request.param)
    data, net = task_dataset(request.param)
    return cls, cls(data.info), data, net


def _reports_all(metrics: dict, task: Task, prefix: str = "") -> None:
    for m in task.metric_names:
        assert isinstance(metrics[prefix + m], float) and np.isfinite(metrics[prefix + m]), (m, metrics)


def test_class_attributes(setup):
    cls, task, _, _ = setup
    assert issubclass(cls, Task) and cls.name in TASKS and task.name == cls.name
    assert task.metric_names and task.default_select_by in {f"val_{m}" for m in task.metric_names}
    assert task.select_key(None) == task.default_select_by.removeprefix("val_")
    with pytest.raises(Exception, match="extra"):
        cls(task.info, no_such_param=1)


def test_fit_trains_and_reports_every_metric(setup):
    _, task, data, net = setup
    seen = []
    recipe = EvaluatorConfig(epochs=2, batch_size=16, lr=3e-3, bn_batches=2, max_batches_per_epoch=4)
    out = task.fit(net, data, recipe, seed=0, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [1, 2] and len(out["history"]) == 2
    for rec in out["history"]:
        assert np.isfinite(rec["train_loss"]) and rec["seconds"] >= 0
        _reports_all(rec, task, "val_")
    _reports_all(out["val"], task)
    key = task.select_key(None)
    assert out["best_epoch"] == 1 + int(np.argmax([h[f"val_{key}"] for h in out["history"]]))
    test = task.evaluate(net, DataLoader(data.dataset("test"), batch_size=256))
    _reports_all(test, task)
    json.dumps(test)   # metrics go to metrics.json


def test_train_curve_and_baseline(setup):
    _, task, data, net = setup
    hist = task.train_curve(net, data, epochs=1, batch_size=8, lr=3e-3, seed=0, max_batches_per_epoch=3)
    assert len(hist) == 1 and hist[0]["epoch"] == 1
    _reports_all(hist[0], task, "val_")
    base = task.baseline(data, "test")
    _reports_all(base, task)
    json.dumps(base)


def test_output_spec_fits_the_deploy_schema(setup):
    _, task, data, _ = setup
    spec = task.output_spec()
    assert spec["name"] == "logits" and spec["activation"] in ("softmax", "sigmoid")
    assert len(spec["label_names"]) == data.info.num_classes
    assert spec["kind"] in ("class scores", "mask")
    try:
        from mednas_nni.deploy.preprocessing import OutputSpec
    except ImportError:     # the schema module is being written by another change
        return
    OutputSpec(**spec)


def test_card_sentence(setup):
    _, task, data, _ = setup
    s = task.card_sentence()
    assert s.startswith("It ") and s.endswith(".") and "\n" not in s
    assert all(str(n) in s for n in data.info.label_names)


def test_select_key_error_is_one_line_naming_field_choices_and_value(setup):
    _, task, _, _ = setup
    with pytest.raises(ConfigError) as e:
        task.select_key("val_no_such_metric")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("evaluator.select_by")
    assert all(f"val_{m}" in msg for m in task.metric_names) and "'val_no_such_metric'" in msg


def test_write_figures(setup, tmp_path):
    _, task, data, net = setup
    paths = task.write_figures(net, data, tmp_path)
    for p in paths:
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if task.name == "segmentation":
        assert [p.name for p in paths] == ["overlays.png", "dice_per_image.png"]
        assert sorted(f.name for f in tmp_path.iterdir()) == ["dice_per_image.png", "overlays.png"]   # no temp


def test_fit_in_channels_last_layout_trains_the_same_network(setup):
    """``evaluator.memory_format=channels_last`` changes only the weights' layout: the same epochs, finite metrics
    the same loss and weights within Adam's step of the default layout's (convolution order differs, so not equal)."""
    import copy

    _, task, data, net = setup
    recipe = EvaluatorConfig(epochs=1, batch_size=16, lr=3e-3, bn_batches=2, max_batches_per_epoch=1)
    twin = copy.deepcopy(net)
    a = task.fit(net, data, recipe, seed=0)
    b = task.fit(twin, data, recipe.model_copy(update={"memory_format": "channels_last"}), seed=0)
    convs = [m.weight for m in twin.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert a["history"][0]["train_loss"] == pytest.approx(b["history"][0]["train_loss"], rel=1e-4)
    # one Adam step moves each weight by at most lr, whatever the gradient's rounding: within 2 lr of each other
    for (k, v), (k2, v2) in zip(net.named_parameters(), twin.named_parameters()):
        assert k == k2 and (v - v2).abs().max() <= 2 * recipe.lr + 1e-5, k


def test_channels_last_leaves_3d_weights_alone():
    from mednas_nni.tasks.training import apply_memory_format

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Conv2d(2, 2, 3), torch.nn.Linear(2, 2))
    apply_memory_format(net, "channels_last")
    assert net[0].weight.is_contiguous() and net[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert not net[1].weight.is_contiguous()

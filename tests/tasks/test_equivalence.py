"""The task-generic loops reproduce the pre-Core-v2 classification loops exactly (same seeds -> same numbers).

The references are verbatim copies of the old loops (``_legacy_loops.py``) reading ``(x, y)`` tuples; the new
loops read the same tensors as dict samples. Histories, best epochs and final weights must be identical (not
approximately equal): the golden search results depend on it.
"""
from __future__ import annotations

import pytest
import torch

import _legacy_loops as legacy
from _task_data import BreastDict, TupleSet, small_bn_net
from mednas_nni.config import EvaluatorConfig
from mednas_nni.tasks.classification import ClassificationTask
from mednas_nni.tasks.training import fit, train_curve

pytestmark = pytest.mark.data


class _AsTuples:
    """The same data set, serving ``(x, y)`` samples as every data set did before Core v2."""

    def __init__(self, plugin: BreastDict):
        self.plugin = plugin

    def dataset(self, split: str, augment: bool = False) -> TupleSet:
        return TupleSet(*self.plugin.tensors(split))

    def loss_weights(self):
        return self.plugin.loss_weights()


#: keys the legacy loops never reported: the time, and the positive class's F-beta (added with the clinical metrics)
_NEW_KEYS = {"seconds", "val_fbeta_positive", "fbeta_positive"}


def _strip(history):
    return [{k: v for k, v in h.items() if k not in _NEW_KEYS} for h in history]


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("select_by, bn_batches", [(None, 3), ("val_balanced_acc", None)])
def test_fit_equals_train_classifier(select_by, bn_batches):
    ds = BreastDict()
    old_seen, new_seen = [], []
    old_net, new_net = small_bn_net(), small_bn_net()
    old = legacy.train_classifier(old_net, TupleSet(*ds.tensors("train")), TupleSet(*ds.tensors("val")),
                                  "binary-class", epochs=3, batch_size=64, lr=3e-3, weight_decay=1e-4,
                                  milestones=(0.5, 0.75), gamma=0.1, select_by=select_by or "val_auc", seed=7,
                                  bn_batches=bn_batches, on_epoch=lambda e, r: old_seen.append(r))
    recipe = EvaluatorConfig(epochs=3, batch_size=64, lr=3e-3, weight_decay=1e-4, select_by=select_by,
                             bn_batches=bn_batches)
    new = fit(ClassificationTask(ds.info), new_net, ds, recipe, seed=7, on_epoch=new_seen.append)
    assert _strip(new["history"]) == _strip(old["history"])
    assert new["best_epoch"] == old["best_epoch"] and _strip([new["val"]]) == [old["val"]]
    assert _same_state(new["best_state"], old["best_state"]) and _same_state(new_net.state_dict(),
                                                                               old_net.state_dict())
    assert _strip(new_seen) == _strip(old_seen) and [r["epoch"] for r in new_seen] == [1, 2, 3]


@pytest.mark.parametrize("weighted, augment", [(False, False), (True, False), (False, True)])
def test_train_curve_equals_genas_train_curve(weighted, augment):
    ds = BreastDict(weighted=weighted)
    old_net, new_net = small_bn_net(), small_bn_net()
    old = legacy.train_curve(old_net, _AsTuples(ds), epochs=2, batch_size=32, lr=2e-3, seed=3, augment=augment,
                             max_batches_per_epoch=6)
    new = train_curve(ClassificationTask(ds.info), new_net, ds, epochs=2, batch_size=32, lr=2e-3, seed=3,
                      augment=augment, max_batches_per_epoch=6)
    # the trial's binary_metrics and the task's MedMNIST metrics agree (no score is exactly 0.5 here)
    assert _strip(new) == _strip(old)
    assert _same_state(new_net.state_dict(), old_net.state_dict())


def test_train_curve_is_seeded_and_resets_weights():
    ds = BreastDict()
    task = ClassificationTask(ds.info)
    a = train_curve(task, small_bn_net(), ds, epochs=1, batch_size=64, seed=1, max_batches_per_epoch=3)
    net = small_bn_net()
    torch.nn.init.constant_(net[0].weight, 3.0)      # other starting weights: reset from the seed anyway
    b = train_curve(task, net, ds, epochs=1, batch_size=64, seed=1, max_batches_per_epoch=3)
    c = train_curve(task, small_bn_net(), ds, epochs=1, batch_size=64, seed=2, max_batches_per_epoch=3)
    assert _strip(a) == _strip(b) and _strip(a) != _strip(c)

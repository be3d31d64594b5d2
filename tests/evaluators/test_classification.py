"""The classification shim and metrics: BatchNorm recalibration, best-epoch selection, MedMNIST metrics, baselines.

``mednas_nni.evaluators.classification`` re-exports the ``classification`` task's functions; its
``train_classifier`` runs :func:`mednas_nni.tasks.training.fit` (dict or tuple samples).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mednas_nni.data.medmnist import MedMNISTDataset
from mednas_nni.evaluators.classification import (classification_metrics, evaluate_classifier, majority_baseline,
                                                  predict_scores, recalibrate_bn, train_classifier)
from mednas_nni.tasks import classification as task_module
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
from _legacy_loops import binary_metrics  # noqa: E402 - the pre-Core-v2 trial metrics, verbatim


def _small_bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def _image(sample):
    return sample["image"] if isinstance(sample, dict) else sample[0]


def test_shim_reexports_the_task_functions():
    assert classification_metrics is task_module.classification_metrics
    assert majority_baseline is task_module.majority_baseline and predict_scores is task_module.predict_scores
    assert recalibrate_bn is task_module.recalibrate_bn


@pytest.mark.parametrize("bn_batches, recalibrated", [(None, True), (0, False)])
def test_bn_statistics_are_recalibrated_before_validation(bn_batches, recalibrated):
    torch.set_num_threads(1)
    ds = MedMNISTDataset()
    net = _small_bn_net()
    train_classifier(net, ds.dataset("train"), ds.dataset("val"), "binary-class", epochs=1, batch_size=128,
                     lr=1e-3, bn_batches=bn_batches)
    # true per-channel variance of each BN layer's input over the training set (train-mode stats)
    x = torch.stack([torch.as_tensor(_image(ds.dataset("train")[i])) for i in range(546)]).float()
    ratios = []
    for i, m in enumerate(net):
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                inp = net[:i](x)
            true_var = inp.var((0, 2, 3), unbiased=True)
            ratios.append((m.running_var / true_var).mean().item())
    close = all(0.8 < r < 1.25 for r in ratios)
    assert close == recalibrated, ratios     # 5 momentum updates alone leave the initial variance 1.0 dominant


def test_best_epoch_state_is_kept_and_reported():
    torch.set_num_threads(1)
    ds = MedMNISTDataset()
    seen = []
    net = _small_bn_net()
    out = train_classifier(net, ds.dataset("train"), ds.dataset("val"), "binary-class", epochs=3,
                           batch_size=128, lr=1e-3, on_epoch=lambda e, rec: seen.append((e, rec)))
    aucs = [h["val_auc"] for h in out["history"]]
    assert [e for e, _ in seen] == [1, 2, 3] and [r["epoch"] for _, r in seen] == [1, 2, 3]
    assert out["best_epoch"] == int(np.argmax(aucs)) + 1
    assert out["val"]["auc"] == max(aucs)
    from torch.utils.data import DataLoader

    again = evaluate_classifier(net, DataLoader(ds.dataset("val"), batch_size=256), "binary-class")
    assert again == out["val"]                      # the model holds the best epoch's weights


def test_metrics_follow_medmnist_definitions():
    y = np.array([[0], [1], [1], [0]])
    score = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = classification_metrics(y, score, "binary-class")
    assert m["auc"] == pytest.approx(0.75)          # ROC-AUC of the last column
    assert m["acc"] == pytest.approx(0.5)           # threshold 0.5 on the last column
    assert m["balanced_acc"] == pytest.approx(0.5)
    assert m["f05"] == pytest.approx(0.5)          # precision 1/2, recall 1/2 for label 1
    y3 = np.array([[0], [1], [2], [2]])
    s3 = np.eye(3)[[0, 1, 2, 1]]
    m3 = classification_metrics(y3, s3, "multi-class")
    assert m3["acc"] == pytest.approx(0.75) and "f05" not in m3
    assert classification_metrics(np.array([[1], [1]]), score[:2], "binary-class")["auc"] == 0.5  # one class


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0.001, 0.999).filter(lambda p: p != 0.5)),
                min_size=4, max_size=40).filter(lambda r: len({y for y, _ in r}) == 2))
def test_binary_metrics_equal_the_former_trial_metrics(rows):
    y = np.array([[a] for a, _ in rows])
    p1 = np.array([p for _, p in rows], dtype=np.float32)
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), "binary-class")
    assert m == pytest.approx(binary_metrics(y, p1))


def test_majority_baseline():
    b = majority_baseline(np.array([[1], [1], [0]]), np.array([[1], [0], [0], [0]]), "binary-class")
    assert b == {"acc": 0.25, "auc": 0.5, "balanced_acc": 0.5, "majority_class": 1}

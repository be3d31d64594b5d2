"""Retraining recipe and metrics: BatchNorm recalibration, best-epoch selection, MedMNIST metrics, baselines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mednas_nni.data.medmnist import MedMNISTDataset
from mednas_nni.evaluators.classification import classification_metrics, majority_baseline, train_classifier


def _small_bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


@pytest.mark.parametrize("bn_batches, recalibrated", [(None, True), (0, False)])
def test_bn_statistics_are_recalibrated_before_validation(bn_batches, recalibrated):
    ds = MedMNISTDataset()
    net = _small_bn_net()
    train_classifier(net, ds.dataset("train"), ds.dataset("val"), "binary-class", epochs=1, batch_size=128,
                     lr=1e-3, bn_batches=bn_batches)
    # true per-channel variance of each BN layer's input over the training set (train-mode stats)
    x = torch.stack([ds.dataset("train")[i][0] for i in range(546)])
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
    ds = MedMNISTDataset()
    seen = []
    out = train_classifier(_small_bn_net(), ds.dataset("train"), ds.dataset("val"), "binary-class", epochs=3,
                           batch_size=128, lr=1e-3, on_epoch=lambda e, rec: seen.append(rec))
    aucs = [h["val_auc"] for h in out["history"]]
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert out["best_epoch"] == int(np.argmax(aucs)) + 1
    assert out["val"]["auc"] == max(aucs)


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
    assert classification_metrics(y3, s3, "multi-class")["acc"] == pytest.approx(0.75)


def test_majority_baseline():
    b = majority_baseline(np.array([[1], [1], [0]]), np.array([[1], [0], [0], [0]]), "binary-class")
    assert b == {"acc": 0.25, "auc": 0.5, "balanced_acc": 0.5, "majority_class": 1}

"""Imbalance from the data config reaches a search trial's training and the finalists' retraining alike: both
train on ``dataset("train")`` with ``task.loss(dataset)`` (bundled BreastMNIST: 147 malignant, 399 benign)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mednas_nni.data.medmnist import MedMNISTDataset
from mednas_nni.errors import ConfigError
from mednas_nni.tasks.classification import ClassificationTask
from mednas_nni.tasks.training import materialize


def test_oversample_balances_the_training_split_only():
    ds = MedMNISTDataset(imbalance="oversample")
    y_train = materialize(ds.dataset("train"))[1].view(-1).numpy()    # what train_curve and fit iterate over
    assert np.bincount(y_train).tolist() == [399, 399]
    assert np.bincount(ds.arrays("train")[1].reshape(-1)).tolist() == [147, 399]   # baselines see the original
    assert len(ds.dataset("val")) == 78 and len(ds.dataset("test")) == 156
    assert ClassificationTask(ds.info).loss(ds).weight is None


def test_weighted_loss_weights_the_task_loss():
    ds = MedMNISTDataset(imbalance="weighted_loss")
    w = ClassificationTask(ds.info).loss(ds).weight
    assert w is not None and w.mean().item() == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(399 / 147)                          # malignant weighs more
    assert len(ds.dataset("train")) == 546
    plain = MedMNISTDataset()
    assert plain.loss_weights() is None and len(plain.dataset("train")) == 546


def test_imbalance_is_refused_for_multilabel_sets(tmp_path):
    with pytest.raises(ConfigError, match="imbalance: expected 'none' for the multi-label set chestmnist"):
        MedMNISTDataset(flag="chestmnist", root=tmp_path, imbalance="oversample")

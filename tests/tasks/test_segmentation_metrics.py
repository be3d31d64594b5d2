"""Segmentation metrics: perfect and all-background predictions on real WBC masks, the absent-class rule, and
properties of the per-image scores (hypothesis)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from _task_data import WBCDict
from mednas_nni.errors import ConfigError
from mednas_nni.tasks.metrics_segmentation import SegmentationMeter, class_keys, segmentation_scores
from mednas_nni.tasks.segmentation import SegmentationTask


@pytest.fixture(scope="module")
def wbc():
    return WBCDict(size=32)


def _meter(pred, truth, k=3, names=("background", "cytoplasm", "nucleus")):
    m = SegmentationMeter(k, names)
    m.update(pred, truth)
    return m.compute()


@pytest.mark.data
def test_perfect_prediction_scores_one(wbc):
    y = torch.as_tensor(wbc.arrays("val")[1]).long()[:, None]
    m = _meter(y.clone(), y)
    assert m == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "pixel_acc": 1.0, "dice_cytoplasm": 1.0,
                 "dice_nucleus": 1.0}


@pytest.mark.data
def test_all_background_baseline(wbc):
    task = SegmentationTask(wbc.info)
    base = task.baseline(wbc, "test")
    y = wbc.arrays("test")[1]
    assert base["dice"] == 0.0 and base["iou"] == 0.0 and base["dice_nucleus"] == 0.0
    assert base["pixel_acc"] == pytest.approx((y == 0).mean())
    assert base["hd95"] == pytest.approx(math.hypot(32, 32))   # a missed class costs the image diagonal
    assert base["prediction"] == "all background"


def test_class_absent_from_both_masks_is_left_out():
    truth = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    truth[0, 0, 2:5, 2:5] = 1           # image 0: class 1 only; image 1: background only
    m = _meter(truth.clone(), truth)
    assert m["dice"] == 1.0 and m["hd95"] == 0.0    # class 2 absent everywhere: not NaN, perfect
    s = segmentation_scores(truth, truth, 3)
    assert torch.isnan(s["dice"][1]).all() and torch.isnan(s["dice"][0, 1])


def test_false_positive_on_empty_truth_counts_as_zero():
    truth = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    pred = truth.clone()
    pred[0, 0, 0, 0] = 2
    s = segmentation_scores(pred, truth, 3)
    assert torch.isnan(s["dice"][0, 0]) and s["dice"][0, 1] == 0.0 and s["hd95"][0, 1] == math.hypot(8, 8)
    m = _meter(pred, truth)
    assert m["dice_nucleus"] == 0.0 and m["dice_cytoplasm"] == 1.0 and m["dice"] == 0.5


def test_dice_of_a_known_overlap():
    truth = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    truth[0, 0, 0:4, 0:5] = 1            # 20 pixels
    pred = torch.zeros_like(truth)
    pred[0, 0, 0:4, 0:3] = 1             # 12 pixels, all inside
    m = _meter(pred, truth, k=2, names=("background", "lesion"))
    assert m["dice"] == pytest.approx(2 * 12 / 32) and m["iou"] == pytest.approx(12 / 20)
    assert m["pixel_acc"] == pytest.approx(92 / 100) and "dice_lesion" in m


masks = arrays(np.int64, (2, 1, 6, 6), elements=st.integers(0, 2))


@settings(max_examples=25, deadline=None)
@given(masks, masks)
def test_scores_are_bounded_symmetric_and_consistent(a, b):
    pa, pb = torch.as_tensor(a), torch.as_tensor(b)
    s, r = segmentation_scores(pa, pb, 3), segmentation_scores(pb, pa, 3)
    for k in ("dice", "iou", "hd95"):
        assert torch.equal(torch.isnan(s[k]), torch.isnan(r[k]))
        assert torch.allclose(s[k].nan_to_num(-1), r[k].nan_to_num(-1))       # swap-symmetric
    d, i = s["dice"], s["iou"]
    ok = ~torch.isnan(d)
    assert ((d[ok] >= 0) & (d[ok] <= 1)).all() and torch.allclose(i[ok], d[ok] / (2 - d[ok]))
    assert ((s["hd95"][ok] >= 0) & (s["hd95"][ok] <= math.hypot(6, 6))).all()
    m = _meter(pa, pb)
    assert all(math.isfinite(v) for v in m.values())


def test_class_keys():
    assert class_keys(["background", "Cytoplasm", "nucleus (dark)"], 3) == ["cytoplasm", "nucleus_dark"]
    assert class_keys(["lesion"], 2) == ["lesion"]                  # names given without the background
    assert class_keys(["bg", "x", "x"], 3) == ["x", "class2"]        # collisions get the index


@pytest.mark.data
def test_hd95_cannot_select_and_loss_options(wbc):
    task = SegmentationTask(wbc.info)
    with pytest.raises(ConfigError, match=r"^evaluator\.select_by: .*val_dice.*got 'val_hd95' \(lower is better"):
        task.select_key("val_hd95")
    assert task.select_key("val_dice_nucleus") == "dice_nucleus"       # one class's Dice can select
    logits = torch.randn(2, 3, 8, 8)
    y = task.target(torch.randint(0, 3, (2, 8, 8)))
    assert y.shape == (2, 1, 8, 8) and y.dtype == torch.long
    losses = {name: float(SegmentationTask(wbc.info, loss=name).loss(wbc)(logits, y)) for name in
              ("dice_ce", "dice", "ce")}
    ce = float(torch.nn.functional.cross_entropy(logits, y[:, 0]))
    assert losses["ce"] == pytest.approx(ce, rel=1e-5)
    assert losses["dice_ce"] == pytest.approx(losses["dice"] + ce, rel=1e-5)

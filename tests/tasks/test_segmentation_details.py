"""The segmentation winner's report keys (SegmentationMeter.details, SegmentationTask.detailed_metrics): per-class
scores equal the plain metrics, bootstrap CIs over images, the per-image Dice and its figure."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _task_data import WBCDict, small_seg_net
from mednas_nni.tasks.metrics_segmentation import SegmentationMeter, segmentation_scores
from mednas_nni.tasks.segmentation import SegmentationTask


def _random_masks(seed: int, n: int = 12, k: int = 3, size: int = 16):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, k, (n, 1, size, size), generator=g)
    noise = torch.randint(0, k, (n, 1, size, size), generator=g)
    keep = torch.rand((n, 1, size, size), generator=g) < 0.7
    pred = torch.where(keep, truth, noise)
    truth[0] = 0                      # an image without foreground in either mask
    pred[0] = 0
    return pred, truth


def test_details_match_the_plain_metrics_and_bracket_them():
    pred, truth = _random_masks(0)
    m = SegmentationMeter(3, ["background", "cytoplasm", "nucleus"])
    m.update(pred[:5], truth[:5])
    m.update(pred[5:], truth[5:])
    plain, d = m.compute(), m.details(n_boot=300, seed=1)
    assert d["per_class"]["cytoplasm"]["dice"] == pytest.approx(plain["dice_cytoplasm"])
    assert d["per_class"]["nucleus"]["dice"] == pytest.approx(plain["dice_nucleus"])
    assert np.mean([v["iou"] for v in d["per_class"].values()]) == pytest.approx(plain["iou"])
    for k in ("dice", "iou", "dice_nucleus", "dice_cytoplasm"):
        lo, hi = d["ci95"][k]
        assert lo <= plain[k] <= hi, k
    lo, hi = d["ci95"]["hd95"]
    assert lo <= plain["hd95"] <= hi
    assert d["ci_n_boot"] == 300 and "seed 1" in d["ci_method"]
    assert d == m.details(n_boot=300, seed=1)                     # seeded
    # per image: the mean Dice over the classes it scores; the empty image has none
    per = d["per_image_dice"]
    assert len(per) == 12 and per[0] is None
    dice = segmentation_scores(pred[3:4], truth[3:4], 3)["dice"].numpy()
    assert per[3] == pytest.approx(float(np.nanmean(dice)))
    s = d["per_image_dice_summary"]
    assert s["n"] == 11 and s["n_without_foreground"] == 1 and s["min"] <= s["median"] <= s["max"]
    assert m.details(n_boot=0)["ci95"] == {}


@pytest.mark.data
def test_task_detailed_metrics_and_dice_figure(tmp_path):
    wbc = WBCDict(size=32)
    task = SegmentationTask(wbc.info, ci_n_boot=100)
    torch.manual_seed(0)
    model = small_seg_net()
    d = task.detailed_metrics(model, wbc, seed=0)
    assert set(d) == {"val", "test"}
    assert set(d["test"]["per_class"]) == {"cytoplasm", "nucleus"}
    assert len(d["test"]["per_image_dice"]) == len(wbc.arrays("test")[1])
    paths = task.write_figures(model, wbc, tmp_path)
    assert [p.name for p in paths] == ["overlays.png", "dice_per_image.png"]

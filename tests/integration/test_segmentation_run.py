"""`mednas search examples/unet_dsb2018.yml` at a tiny budget on real DSB 2018 images, then `mednas export` and
`mednas predict`: a complete segmentation run directory, task metrics and baseline, mask parity, mask PNGs."""
from __future__ import annotations

import json
import numpy as np
import pytest

from conftest import REPO, require_data
from mednas_nni.cli import main
from mednas_nni.io import read_jsonl

__all__: list[str] = []

CONFIG = REPO / "examples" / "unet_dsb2018.yml"
# 2 x 2 GeNAS-WF, one short epoch per U-Net, 48 px, 30 images (21 train / 4 val / 5 test), narrow U-Nets.
TINY = ["data.params.size=48", "data.params.max_images=30", "space.params.widths=[4,8]",
        "strategy.params.population_size=2", "strategy.params.generations=2", "strategy.params.tournament_size=2",
        "strategy.params.epochs_per_trial=1", "strategy.params.max_batches_per_epoch=2",
        "strategy.params.batch_size=4", "evaluator.epochs=1", "evaluator.batch_size=4",
        "evaluator.max_batches_per_epoch=3", "evaluator.bn_batches=2", "task.params.overlay_images=2",
        "run.name=seg-tiny"]
RUN_FILES = ("config.resolved.yaml", "archs.jsonl", "strategy_state.json", "search_summary.json", "best_arch.json",
             "best.pt", "metrics.json", "overlays.png", "search.log", "status.json", "export_report.json")


@pytest.mark.slow
@pytest.mark.data
def test_unet_dsb2018_search_export_predict(tmp_path, capsys):
    import torch
    from PIL import Image

    torch.set_num_threads(2)
    dsb = require_data("dsb2018")
    out_dir = tmp_path / "runs"
    assert main(["search", str(CONFIG), *TINY, f"data.params.root={dsb}", f"run.out_dir={out_dir}",
                 "--no-progress"]) == 0
    (rd,) = [p for p in out_dir.iterdir() if p.is_dir()]
    for f in RUN_FILES:
        assert (rd / f).is_file(), f
    assert (rd / "finalists").is_dir() and any((rd / "finalists").iterdir())
    assert not list(rd.rglob(".*.tmp"))
    assert json.loads((rd / "status.json").read_text())["phase"] == "done"
    overlays = Image.open(rd / "overlays.png")
    assert overlays.width > 300 and overlays.height > 300

    archs = read_jsonl(rd / "archs.jsonl")
    ok = [r for r in archs if r["status"] == "ok"]
    assert ok and len({r["hash"] for r in archs}) == len(archs)
    assert all(0.0 <= r["metrics"]["val_dice"] <= 1.0 and np.isfinite(r["metrics"]["fitness"]) for r in ok)
    assert set(json.loads((rd / "best_arch.json").read_text())) >= {"depth", "width", "unit", "norm", "dropout"}

    m = json.loads((rd / "metrics.json").read_text())
    assert m["selected_by"] == "val_dice"
    for split in ("val", "test"):
        assert {"dice", "iou", "hd95", "pixel_acc", "dice_nucleus"} <= set(m[split]), split
        assert 0.0 <= m[split]["dice"] <= 1.0
    base = m["baseline_test"]
    # all-background baseline: Dice/IoU 0 (every image has nuclei), pixel accuracy = background share (~87 %)
    assert base["dice"] == 0.0 and base["iou"] == 0.0 and 0.5 < base["pixel_acc"] < 1.0
    summary = capsys.readouterr().out
    assert f"run directory: {rd}" in summary

    # the config's export section already exported at the end of the search (RUN_DIR/export)
    assert json.loads((rd / "export" / "parity.json").read_text())["mask_dice_ort_vs_pytorch"] == 1.0
    # mednas export: ONNX bundle with a mask output; onnxruntime and PyTorch masks agree on the whole test split
    assert main(["export", str(rd), "--latency-runs", "2"]) == 0
    bundle = rd / "bundle"
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity["task"] == "segmentation" and parity["images"] >= 4   # the whole test split
    assert parity["mask_dice_ort_vs_pytorch"] == 1.0 and parity["mask_dice_end_to_end"] == 1.0
    prep = json.loads((bundle / "preprocessing.json").read_text())
    assert prep["task"] == "segmentation" and prep["output"]["label_names"] == ["background", "nucleus"]
    assert "It segments a 48x48 RGB image into 2 classes" in (bundle / "model_card.md").read_text()

    # predict on original (RGBA, full-size) DSB images: one mask PNG per image, class indices 0/1, native size
    images = sorted((dsb / "images").glob("*.png"))[:2]
    masks = tmp_path / "masks"
    assert main(["predict", str(bundle), *map(str, images), "--mask-dir", str(masks), "--threads", "2",
                 "--out", str(tmp_path / "pred.json")]) == 0
    for img in images:
        a = np.asarray(Image.open(masks / f"{img.stem}_mask.png"))
        assert a.dtype == np.uint8 and set(np.unique(a)) <= {0, 1}
        assert a.shape == Image.open(img).size[::-1]          # back at the source image's size
    pred = json.loads((tmp_path / "pred.json").read_text())
    assert pred["task"] == "segmentation" and len(pred["predictions"]) == len(images)


def test_fitness_metric_follows_the_task():
    from types import SimpleNamespace

    from mednas_nni.strategies._train_trial import fitness_params_for

    seg = SimpleNamespace(name="segmentation", metric_names=("dice", "iou", "pixel_acc", "dice_nucleus"))
    cls = SimpleNamespace(name="classification", metric_names=("acc", "auc", "balanced_acc", "f05"))
    assert fitness_params_for("genas_wf", {}, seg, "dice") == {"metric": "dice"}
    assert fitness_params_for("genas_wf", {"penalty": 0.5}, cls, "auc") == {"penalty": 0.5}   # balanced_acc
    assert fitness_params_for("genas_wf", {"metric": "iou"}, seg, "dice") == {"metric": "iou"}
    with pytest.raises(ValueError, match="fitness_params.metric: expected a metric of the segmentation task"):
        fitness_params_for("last_epoch", {"metric": "balanced_acc"}, seg, "dice")

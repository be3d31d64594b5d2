"""Complexity-constrained DARTS (``cc_darts`` on ``lw_misn``): the penalty drives the derived net lighter on real
DSB 2018 images; the whole run (search -> retrain -> export -> predict masks); Cutout, BCE+Dice, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _oneshot_helpers import one_torch_thread  # noqa: F401 (autouse fixture: torch on one thread)
from _oneshot_helpers import make_ctx
from conftest import REPO, require_data

from mednas_nni.cli import main
from mednas_nni.errors import ConfigError
from mednas_nni.search_spaces.lw_misn import LWMISNSpace
from mednas_nni.strategies.cc_darts import CCDARTS, bce_dice_loss, cutout_transform

CONFIG = REPO / "examples" / "cc_darts_dsb2018.yml"
TINY_SPACE = dict(encoder_blocks=1, middle_blocks=1, decoder_blocks=1, channels=4)



def _dsb(n_images: int, size: int):
    from mednas_nni.data.folder import FolderDataset

    root = require_data("dsb2018")
    return FolderDataset(root=str(root), masks="masks", size=size, channels=3, label_map={0: 0, 255: 1},
                         label_names=["background", "nucleus"], split=[0.6, 0.2, 0.2], split_seed=0,
                         max_images=n_images, name="dsb2018")


@pytest.mark.slow
@pytest.mark.data
def test_large_lambda_derives_fewer_params_than_lambda_zero_on_real_images(tmp_path):
    from mednas_nni.tasks.segmentation import SegmentationTask

    data = _dsb(20, 32)
    task = SegmentationTask(data.info)
    params = {}
    for lam in (0.0, 2.0):
        torch.manual_seed(0)
        space = LWMISNSpace(in_channels=3, out_channels=2, image_size=32, **TINY_SPACE)
        ctx = make_ctx(tmp_path / str(lam), data, task, seed=0)
        strategy = CCDARTS(lambda_params=lam, lambda_flops=lam, epochs=2, batch_size=4, max_batches_per_epoch=3,
                           arc_learning_rate=0.05, cutout=8, val_every_epoch=False, checkpoint=False)
        (fin,) = strategy.search(space, task, data, ctx)
        net = space.freeze(fin["sample"])
        params[lam] = sum(p.numel() for p in net.parameters())
        assert fin["searched_cost"]["params"] >= 0 and fin["chosen_as"] == "cc-DARTS derivation"
        rows = list(csv_rows(ctx.run_dir / "oneshot_metrics.csv"))
        e0, e_end = float(rows[0]["E_params"]), float(rows[-1]["E_params"])
        if lam > 0:
            assert e_end < e0                              # the expected cost fell during the search
            assert float(rows[-1]["penalty/E_params_rel"]) < 1.0
        assert (ctx.run_dir / "cell.png").stat().st_size > 10_000
    assert params[2.0] < params[0.0], params


def csv_rows(path):
    import csv

    with open(path, newline="") as f:
        yield from csv.DictReader(f)


@pytest.mark.slow
@pytest.mark.data
def test_cc_darts_run_dir_export_and_predict_masks(tmp_path, capsys):
    from PIL import Image

    dsb = require_data("dsb2018")
    out_dir = tmp_path / "runs"
    tiny = ["data.params.size=32", "data.params.max_images=24", "space.params.encoder_blocks=1",
            "space.params.middle_blocks=1", "space.params.decoder_blocks=1", "space.params.channels=4",
            "strategy.params.epochs=2", "strategy.params.max_batches_per_epoch=2", "strategy.params.max_val_batches=1",
            "strategy.params.cutout=8", "evaluator.epochs=1", "evaluator.max_batches_per_epoch=2",
            "evaluator.bn_batches=1", "task.params.overlay_images=2", "export=null", "run.name=ccd-tiny",
            f"data.params.root={dsb}", f"run.out_dir={out_dir}"]
    assert main(["search", str(CONFIG), *tiny, "--no-progress"]) == 0
    (rd,) = [p for p in out_dir.iterdir() if p.is_dir()]
    for f in ("best_arch.json", "best.pt", "metrics.json", "alpha.png", "overlays.png", "cell.png",
              "oneshot_metrics.csv", "finalists.json", "oneshot/last.ckpt"):
        assert (rd / f).is_file(), f
    m = json.loads((rd / "metrics.json").read_text())
    assert m["strategy"] == "cc_darts" and m["space"] == "lw_misn" and m["params"] > 0
    assert {"dice", "iou", "hd95"} <= set(m["test"]) and 0.0 <= m["test"]["dice"] <= 1.0
    sample = json.loads((rd / "best_arch.json").read_text())
    for j in range(4):                                     # exactly two inputs per node in the winner
        assert sum(sample[f"cell/node{j}/edge{i}"] != "zero" for i in range(j + 2)) == 2
    rows = list(csv_rows(rd / "oneshot_metrics.csv"))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert all(r["val_dice"] != "" and float(r["E_flops"]) > 0 for r in rows[1:])
    assert torch.load(rd / "oneshot" / "last.ckpt", weights_only=True)["epoch"] == 1
    out = capsys.readouterr().out
    assert "search: one-shot supernet trained to epoch 2" in out and "architectures evaluated" not in out

    assert main(["export", str(rd), "--latency-runs", "2"]) == 0
    bundle = rd / "bundle"
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity["mask_dice_ort_vs_pytorch"] == 1.0
    images = sorted((dsb / "images").glob("*.png"))[:2]
    masks = tmp_path / "masks"
    assert main(["predict", str(bundle), *map(str, images), "--mask-dir", str(masks), "--threads", "1"]) == 0
    for img in images:
        a = np.asarray(Image.open(masks / f"{img.stem}_mask.png"))
        assert set(np.unique(a)) <= {0, 1} and a.shape == Image.open(img).size[::-1]


def test_negative_lambda_is_a_one_line_config_error(tmp_path):
    from mednas_nni.config import load_config

    with pytest.raises(ConfigError, match=r"strategy\.params\.lambda_params.*greater than or equal to 0") as e:
        load_config(CONFIG, overrides=["strategy.params.lambda_params=-0.1"])
    assert "\n" not in str(e.value)


def test_cc_darts_refuses_a_space_without_op_costs_in_one_line(tmp_path):
    from _oneshot_helpers import DiscSegmentation, SegmentationTask, TinySegmenterSpace

    data = DiscSegmentation(n_train=8, n_val=4)
    task = SegmentationTask(data.info)
    with pytest.raises(ConfigError, match="strategy cc_darts: search space 'tiny_segmenter' has no op costs") as e:
        CCDARTS(epochs=1).search(TinySegmenterSpace(), task, data, make_ctx(tmp_path, data, task))
    assert "\n" not in str(e.value)


def test_cutout_zeroes_one_seeded_square():
    x = {"image": torch.ones(3, 32, 32), "label": torch.zeros(1, 32, 32, dtype=torch.long)}
    a, b = cutout_transform(8, seed=3)(dict(x)), cutout_transform(8, seed=3)(dict(x))
    assert type(a["image"]) is torch.Tensor and torch.equal(a["image"], b["image"])
    zero = (a["image"] == 0).all(0)
    assert zero.sum() == 64 and torch.equal(a["label"], x["label"])
    ys, xs = torch.nonzero(zero, as_tuple=True)
    assert ys.max() - ys.min() == 7 and xs.max() - xs.min() == 7


def test_bce_dice_is_binary_cross_entropy_plus_foreground_dice():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8)
    y = (torch.rand(2, 1, 8, 8) > 0.6).long()
    p = torch.softmax(logits, 1)[:, 1:]
    bce = torch.nn.functional.binary_cross_entropy(p, y.float())
    inter = (p * y).sum((2, 3))
    dice = (1 - (2 * inter + 1e-5) / (p.sum((2, 3)) + y.sum((2, 3)) + 1e-5)).mean()
    assert bce_dice_loss()(logits, y).item() == pytest.approx((bce + dice).item(), rel=1e-4)

"""Smoke tests: NNI's plain DARTS through the one-shot contract (``DARTSSearch.search(space, task, data, ctx)``).

Tiny LayerChoice spaces, 2 epochs of a few batches on real BreastMNIST images (classification) and on structured
disc images (segmentation), a real RunContext with a real run directory.
"""
from __future__ import annotations

import csv
import json

import pytest
import torch
from _oneshot_helpers import one_torch_thread  # noqa: F401 (autouse fixture: torch on one thread)
from _oneshot_helpers import (BreastSlice, ClassificationTask, DiscSegmentation, SegmentationTask,
                              TinyClassifierSpace, TinySegmenterSpace, make_ctx)
from pydantic import ValidationError

from mednas_nni.contracts import OneShotStrategy
from mednas_nni.engines.oneshot import ALPHA_PNG, METRICS_CSV
from mednas_nni.strategies.darts import DARTSSearch



def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_outputs(ctx, labels: dict[str, list[str]], epochs: int) -> list[dict[str, str]]:
    rows = _rows(ctx.run_dir / METRICS_CSV)
    assert [int(r["epoch"]) for r in rows] == list(range(epochs + 1))     # initial α, then one row per epoch
    for label, values in labels.items():
        cols = [f"p/{label}/{v}" for v in values]
        for r in rows:
            assert sum(float(r[c]) for c in cols) == pytest.approx(1.0, abs=1e-5)
        first, last = [float(rows[0][c]) for c in cols], [float(rows[-1][c]) for c in cols]
        assert max(abs(a - b) for a, b in zip(first, last)) > 1e-3, f"α of {label} did not move: {first} -> {last}"
    for r in rows[1:]:
        assert float(r["train_loss"]) > 0 and float(r["arch_loss"]) > 0
    png = (ctx.run_dir / ALPHA_PNG).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    return rows


@pytest.mark.slow
@pytest.mark.data
def test_darts_classification_breastmnist(tmp_path, monkeypatch, medmnist_root):
    monkeypatch.chdir(tmp_path)                      # Lightning must write nothing into the current folder
    data = BreastSlice(medmnist_root / "breastmnist.npz", n_train=96, n_val=48)
    task = ClassificationTask(data.info)
    space = TinyClassifierSpace(in_channels=1, out_channels=2)
    before = {k: v.clone() for k, v in space.state_dict().items()}
    ctx = make_ctx(tmp_path, data, task, seed=3)
    strategy = DARTSSearch(epochs=2, batch_size=16, arc_learning_rate=0.05, lr=3e-3, max_batches_per_epoch=4)
    assert isinstance(strategy, OneShotStrategy) and strategy.name == "darts"

    finalists = strategy.search(space, task, data, ctx)

    assert len(finalists) == 1 and finalists[0]["chosen_as"] == "DARTS argmax"
    sample = finalists[0]["sample"]
    assert set(sample) == {"op", "act"} and sample["op"] in ("conv3", "conv5", "pool")
    net = space.freeze(sample)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 2)
    probs = finalists[0]["alpha"]
    assert max(probs["op"], key=probs["op"].get) == sample["op"]
    json.dumps(finalists)                           # the core stores finalists as JSON
    # The caller's space is not turned into a supernet.
    assert {k: v for k, v in space.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(space.state_dict()[k], v) for k, v in before.items())

    rows = _check_outputs(ctx, {"op": ["conv3", "conv5", "pool"], "act": ["relu", "tanh"]}, epochs=2)
    metric = f"val_{task.select_key(None)}"
    assert all(metric in r and r[metric] != "" for r in rows[1:])
    assert not (tmp_path / "lightning_logs").exists() and not (ctx.run_dir / "lightning_logs").exists()
    assert not list(tmp_path.glob("*.onnx")) and not list(ctx.run_dir.path.rglob("*.onnx"))


@pytest.mark.slow
@pytest.mark.data
def test_darts_is_seeded(tmp_path, medmnist_root):
    """Same seed (and the same initial weights, as the core seeds before building the space): same α history and
    the same exported architecture."""
    data = BreastSlice(medmnist_root / "breastmnist.npz", n_train=32, n_val=16)
    task = ClassificationTask(data.info)
    histories = []
    for run in range(2):
        ctx = make_ctx(tmp_path / str(run), data, task, seed=11)
        torch.manual_seed(0)
        space = TinyClassifierSpace()
        torch.manual_seed(run)                       # DARTS must reseed everything it draws itself
        fin = DARTSSearch(epochs=2, batch_size=8, arc_learning_rate=0.05, val_every_epoch=False).search(
            space, task, data, ctx)
        histories.append((fin[0]["sample"], [{k: v for k, v in r.items() if k.startswith("p/")}
                                             for r in _rows(ctx.run_dir / METRICS_CSV)]))
    assert histories[0] == histories[1]


@pytest.mark.slow
def test_darts_segmentation_discs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = DiscSegmentation(n_train=32, n_val=16)
    task = SegmentationTask(data.info)
    space = TinySegmenterSpace(in_channels=1, out_channels=2)
    ctx = make_ctx(tmp_path, data, task, seed=0)
    finalists = DARTSSearch(epochs=2, batch_size=8, arc_learning_rate=0.05, lr=3e-3).search(space, task, data, ctx)

    sample = finalists[0]["sample"]
    assert sample["mid"] in ("conv3", "conv5x2")
    assert space.freeze(sample)(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)
    rows = _check_outputs(ctx, {"mid": ["conv3", "conv5x2"]}, epochs=2)
    metric = f"val_{task.select_key(None)}"
    assert all(r[metric] != "" for r in rows[1:])
    assert not (tmp_path / "lightning_logs").exists()


def test_darts_params_are_validated():
    with pytest.raises(ValidationError, match="warmup_epochs"):
        DARTSSearch(epochs=2, warmup_epochs=2)
    with pytest.raises(ValidationError):
        DARTSSearch(epoch=3)                         # unknown key
    assert "arc_learning_rate=0.0003" in repr(DARTSSearch())

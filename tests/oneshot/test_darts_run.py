"""DARTS through the core: ``run_search`` with ``strategy: darts`` writes a complete run directory."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from _oneshot_helpers import DiscSegmentation, SegmentationTask, TinyClassifierSpace, make_ctx

from mednas_nni.errors import ConfigError
from mednas_nni.strategies.darts import DARTSSearch


@pytest.fixture
def tiny_space_registered():
    from mednas_nni.registry import register, unregister

    register("search_spaces", "tiny_classifier", TinyClassifierSpace)
    yield "tiny_classifier"
    unregister("search_spaces", "tiny_classifier")


@pytest.mark.slow
def test_run_search_with_darts_on_bundled_breastmnist(tmp_path, monkeypatch, tiny_space_registered):
    from mednas_nni.config import load_config
    from mednas_nni.experiment import run_search

    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    cfg = load_config(overrides=[
        f"space.name={tiny_space_registered}", "space.params={}", "strategy.name=darts",
        "strategy.params={epochs: 2, batch_size: 32, max_batches_per_epoch: 3, max_val_batches: 2, "
        "arc_learning_rate: 0.05}",
        "evaluator.epochs=1", "evaluator.max_batches_per_epoch=2", f"run.out_dir={tmp_path / 'runs'}",
        "run.progress=false"])
    rd = run_search(cfg)

    assert rd.status()["phase"] == "done"
    (fin,) = json.loads((rd / "finalists.json").read_text())
    assert fin["chosen_as"] == "DARTS argmax" and set(fin["sample"]) == {"op", "act"} and fin["hash"]
    assert json.loads((rd / "best_arch.json").read_text())                     # retrained and tested by the core
    rows = list(csv.DictReader(open(rd / "oneshot_metrics.csv")))
    assert len(rows) == 3 and rows[-1]["val_auc"] != ""
    assert (rd / "alpha.png").stat().st_size > 5000
    assert "DARTS epoch 2/2" in (rd / "search.log").read_text()
    assert not (tmp_path / "lightning_logs").exists()


def test_darts_refuses_a_space_it_cannot_relax_in_one_line(tmp_path):
    from mednas_nni.search_spaces.unet import UNetSpace

    data = DiscSegmentation(n_train=8, n_val=4)
    task = SegmentationTask(data.info)
    space = UNetSpace(spatial_dims=2, in_channels=1, out_channels=2, image_size=32)
    with pytest.raises(ConfigError, match="strategy darts: search space 'unet' has no choice DARTS can relax") as e:
        DARTSSearch(epochs=1).search(space, task, data, make_ctx(tmp_path, data, task))
    assert "\n" not in str(e.value)


def test_darts_refuses_numerical_choices_in_one_line(tmp_path):
    import nni
    from nni.nas.nn.pytorch import ModelSpace, MutableDropout

    class Numeric(TinyClassifierSpace):
        def __init__(self):
            super().__init__()
            self.drop = MutableDropout(nni.uniform("drop", 0.0, 0.5))

    data = DiscSegmentation(n_train=8, n_val=4)
    task = SegmentationTask(data.info)
    assert isinstance(Numeric(), ModelSpace)
    with pytest.raises(ConfigError, match="has choices DARTS cannot relax.*categorical") as e:
        DARTSSearch(epochs=1).search(Numeric(), task, data, make_ctx(tmp_path, data, task))
    assert "\n" not in str(e.value)

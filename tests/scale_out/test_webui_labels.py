"""A NAS trial names its architecture in its final metric (``hash``, ``describe``: columns of NNI's web UI trial
table, whose parameters column shows only NNI's serialized model). The names are labels: the run directory records
numbers only, and a resume that re-seeds from NNI's database skips a metric that names another architecture."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strategies"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exporters"))

import _harness as H  # noqa: E402
from deploy_fixtures import random_sample  # noqa: E402
from mednas_nni.engines.nni_local import LocalLoopStrategy  # noqa: E402
from mednas_nni.engines.records import arch_hash  # noqa: E402
from mednas_nni.engines.search_loop import SearchLoop  # noqa: E402
from mednas_nni.engines.webui_labels import label_final, labelled_hash, without_labels  # noqa: E402
from mednas_nni.strategies.zc_nsga2 import ZeroCostNSGA2  # noqa: E402


def test_a_final_metric_names_its_architecture_as_the_run_directory_does(tmp_path) -> None:
    ctx = H.make_ctx(tmp_path)
    space = ctx.build_space()
    sample = random_sample(space, 0)
    final = {"default": 0.75, "params": 1234}
    labelled = label_final(final, sample, ctx)
    assert labelled == {**final, "hash": arch_hash(sample), "describe": space.describe(sample)}
    assert labelled_hash(labelled) == arch_hash(sample)
    assert without_labels(labelled) == final and final == {"default": 0.75, "params": 1234}   # not mutated


def test_a_space_that_cannot_describe_costs_the_labels_not_the_result(tmp_path, caplog) -> None:
    ctx = H.make_ctx(tmp_path)
    sample = random_sample(ctx.build_space(), 0)
    ctx.build_space = lambda: (_ for _ in ()).throw(RuntimeError("space plugin is broken"))
    with caplog.at_level(logging.WARNING):
        assert label_final({"default": 0.5}, sample, ctx) == {"default": 0.5}
    assert "space plugin is broken" in caplog.text
    assert labelled_hash({"default": 0.5}) is None and labelled_hash(0.5) is None


def test_resume_reseeds_only_metrics_that_name_the_architecture_nni_lists(tmp_path, caplog) -> None:
    strategy = H.with_trial(ZeroCostNSGA2(pop_size=4, generations=1, seed=0))
    ctx = H.make_ctx(tmp_path)
    loop = SearchLoop(strategy, ctx.build_space(), ctx)
    right, swapped, older = (random_sample(loop.space, seed) for seed in (1, 2, 3))
    assert len({arch_hash(right), arch_hash(swapped), arch_hash(older)}) == 3
    trials = [
        (right, "trained", {"default": 0.8, "hash": arch_hash(right), "describe": loop.space.describe(right)}),
        # NNI listed `swapped` beside the metric the trial of `right` reported (the local service's swap)
        (swapped, "trained", {"default": 0.3, "hash": arch_hash(right), "describe": loop.space.describe(right)}),
        (older, "trained", '{"default": 0.6}'),          # a trial of an older release: no labels, JSON text
    ]
    strategy_nni = LocalLoopStrategy(loop)
    strategy_nni._engine_trials = lambda: trials
    with caplog.at_level(logging.WARNING):
        strategy_nni.before_batches()
    assert loop.store.get(arch_hash(right))["metrics"] == {"default": 0.8}
    assert loop.store.get(arch_hash(older))["metrics"] == {"default": 0.6}
    assert loop.store.get(arch_hash(swapped)) is None          # evaluated again, never recorded with another's metric
    assert f"NNI lists architecture {arch_hash(swapped)} beside a metric its trial reported for" in caplog.text

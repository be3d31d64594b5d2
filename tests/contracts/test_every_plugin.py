"""Contract tests over EVERY registered plugin of every kind (timm / Optuna style): a new plugin is checked
the moment its entry point is installed, with no list to update here."""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import pytest

from mednas_nni.contracts import (DatasetPlugin, ExporterPlugin, MultiTrialStrategy, OneShotStrategy, PluginParams,
                                  SearchSpace, Task)
from mednas_nni.registry import KINDS, get_plugin, list_plugins

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strategies"))

CONTRACT = {"datasets": DatasetPlugin, "tasks": Task, "search_spaces": SearchSpace,
            "strategies": (MultiTrialStrategy, OneShotStrategy), "exporters": ExporterPlugin}
ALL = [(i.kind, i.name) for i in list_plugins(load=False)]
MULTI_TRIAL = [n for k, n in ALL if k == "strategies" and get_plugin(k, n).family == "multi-trial"]


def test_every_kind_has_built_in_plugins():
    assert {k for k, _ in ALL} == set(KINDS)


@pytest.mark.parametrize("kind,name", ALL)
def test_plugin_loads_and_follows_its_contract(kind, name):
    info = next(i for i in list_plugins(kind) if i.name == name)
    assert info.status == "ok", info.error
    assert info.summary, "the class docstring's first line is what 'mednas list' shows"
    cls = get_plugin(kind, name)
    assert issubclass(cls, CONTRACT[kind]) and cls.name == name
    assert issubclass(cls.Params, PluginParams)
    if kind == "search_spaces":       # NNI wraps a ModelSpace's __init__: read the class's own signature
        space = cls(spatial_dims=2, in_channels=1, out_channels=2, image_size=64)   # how the core builds spaces
        assert space.label_values() and set(cls.tasks) <= {n for k, n in ALL if k == "tasks"}
    elif kind == "tasks":
        assert cls.metric_names and cls.default_select_by.removeprefix("val_") in cls.metric_names
    elif kind == "datasets":
        assert cls.default_task in {n for k, n in ALL if k == "tasks"}
    else:
        params = {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params", "kwargs")}
        assert not params or params == set(cls.Params.model_fields)


@pytest.mark.parametrize("name", MULTI_TRIAL)
def test_every_multi_trial_strategy_runs_resumes_and_keeps_json_state(name, tmp_path):
    """Each multi-trial strategy, on a small real space with a fast trial: proposes, observes, finishes, keeps its
    state as JSON data, and a second session on the same run directory evaluates nothing again."""
    import _harness as H

    from mednas_nni.search_spaces.genas_cnn import GeNASCNNSpace

    space = GeNASCNNSpace(image_size=32, max_depth=3, min_depth=2, filters=[4, 8], kernels=[3], strides=[1, 2],
                          pools=["none"], dropouts=[0.0])
    small = {"zc_nsga2": {"pop_size": 4, "generations": 2}, "genas_wf": {"population_size": 4, "generations": 2,
                                                                            "tournament_size": 2},
             "random": {"num_samples": 4, "batch_size_archs": 2}}.get(name, {})
    H.CALLS.clear()
    strategy = get_plugin("strategies", name)(seed=0, **small)
    if name == "zc_nsga2":
        kwargs = {"proxies": strategy._proxies(), "objectives": list(strategy.params.objectives),
                  "proxy_batch_size": 8, "init_seed": 0}
        H.with_trial(strategy, "mednas_nni.strategies.zc_nsga2:score_trial", **kwargs)
    loop = H.run(strategy, space, tmp_path)
    assert loop.finished and loop.evaluations() > 0
    state = json.loads((tmp_path / "strategy_state.json").read_text())
    assert state["strategy_name"] == name and json.loads(json.dumps(state)) == state
    finalists = loop.finalists()
    assert finalists and all({"hash", "sample", "chosen_as"} <= set(f) for f in finalists)
    n = loop.evaluations()
    strategy2 = get_plugin("strategies", name)(seed=0, **small)
    if name == "zc_nsga2":
        H.with_trial(strategy2, "mednas_nni.strategies.zc_nsga2:score_trial", **kwargs)
    again = H.run(strategy2, space, tmp_path)              # a finished search: nothing runs again
    assert again.evaluations() == n
    assert [f["hash"] for f in again.finalists()] == [f["hash"] for f in finalists]

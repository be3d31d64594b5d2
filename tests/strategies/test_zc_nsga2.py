"""zc_nsga2 through the core's search loop on a toy space (sequential engine, real run directory, real proxies):
determinism, caching, resume after a kill, failures, MOEA/D, finalists."""
from __future__ import annotations

import json

import numpy as np
import pytest

import _harness as H
from conftest import make_toy_space
from mednas_nni.engines.search_loop import STATE_FILE
from mednas_nni.strategies import zc_nsga2 as zc
from mednas_nni.strategies.zc_nsga2 import ZeroCostNSGA2, choose_finalists, pareto_mask

SPACE = make_toy_space()()


def counting_score(model, sample, ctx, report, *, fail_act=None, interrupt_at=None, constant=False, **kw):
    H.CALLS.append(H.arch_hash(sample))
    if interrupt_at is not None and len(H.CALLS) == interrupt_at:
        raise KeyboardInterrupt
    if fail_act is not None and sample["act"] == fail_act:
        raise RuntimeError("CUDA out of memory (simulated)")
    if constant:                 # a network whose output ignores its input: jacob_cov is not finite
        import torch

        class Const(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Linear(1, 2)

            def forward(self, x):
                return self.w(x.sum((1, 2, 3), keepdim=True).view(-1, 1) * 0)
        model = Const()
    return zc.score_trial(model, sample, ctx, report, **kw)


def run(strategy, run_dir, **extra):
    kwargs = {"proxies": strategy._proxies(), "objectives": list(strategy.params.objectives),
              "proxy_batch_size": 12, "init_seed": strategy.seed, **extra}
    H.with_trial(strategy, "test_zc_nsga2:counting_score", **kwargs)
    return H.run(strategy, SPACE, run_dir)


@pytest.fixture(autouse=True)
def _reset_calls():
    H.CALLS.clear()


def _scores(loop):
    return {r["hash"]: {k: v for k, v in r["metrics"].items() if k not in ("default", "seconds")}
            for r in loop.store.records() if r["status"] == "ok"}


def test_seeded_runs_are_identical_and_nothing_is_proposed_twice(tmp_path):
    a = run(ZeroCostNSGA2(pop_size=4, generations=4, seed=3), tmp_path / "a")
    calls_a = list(H.CALLS)
    H.CALLS.clear()
    b = run(ZeroCostNSGA2(pop_size=4, generations=4, seed=3), tmp_path / "b")
    assert calls_a == H.CALLS                                  # same architectures, same order
    assert len(set(calls_a)) == len(calls_a) == 16             # 4 x 4 distinct architectures
    assert a.cache_hits == 0                                   # a child met before is mated again, not proposed
    assert a.strategy.stats.duplicates_dropped > 0             # 18-arch space: pymoo did mate repeats
    assert _scores(a) == _scores(b)
    assert a.strategy.generation == 4
    a.strategy.write_outputs(a.ctx, a.store.records(), a.finalists())    # variation.json: the search's summary
    v = json.loads((tmp_path / "a" / "variation.json").read_text())
    assert v["children"] > 0 and v["met"] == 16 and v["failed"] == 0 and v["n_genes"] == 3
    assert "0 of 16 scored architectures failed" in v["summary"] and "children differ from both parents" in v["summary"]
    assert all(0.0 <= r["metrics"]["default"] <= 1.0 for r in a.store.records() if r["status"] == "ok")


def test_different_seed_explores_differently(tmp_path):
    run(ZeroCostNSGA2(pop_size=6, generations=2, seed=1), tmp_path / "a")
    first = list(H.CALLS)
    H.CALLS.clear()
    run(ZeroCostNSGA2(pop_size=6, generations=2, seed=2), tmp_path / "b")
    assert first != H.CALLS


def test_killed_search_resumes_and_scores_nothing_again(tmp_path):
    full = run(ZeroCostNSGA2(pop_size=4, generations=4, seed=5), tmp_path / "full")
    full_calls = list(H.CALLS)
    H.CALLS.clear()
    with pytest.raises(KeyboardInterrupt):                     # killed while scoring generation 3
        run(ZeroCostNSGA2(pop_size=4, generations=4, seed=5), tmp_path / "cut", interrupt_at=10)
    part_calls = H.CALLS[:-1]                                  # the interrupted evaluation is not a result
    state = json.loads((tmp_path / "cut" / STATE_FILE).read_text())
    assert state["batch"] == 2
    algo = state["strategy"]["algorithm"]                      # the pymoo algorithm as data, not a pickle
    assert isinstance(algo, dict) and len(algo["X"]) == 4 and algo["rng"]["bit_generator"] == "PCG64"
    H.CALLS.clear()
    resumed = run(ZeroCostNSGA2(pop_size=4, generations=4, seed=5), tmp_path / "cut")
    assert not set(part_calls) & set(H.CALLS)                  # nothing evaluated twice across the restart
    assert part_calls + H.CALLS == full_calls                  # and the resumed search is the same search
    assert resumed.strategy.generation == 4 and _scores(resumed).keys() == _scores(full).keys()
    assert resumed.strategy.stats == full.strategy.stats       # variation counts carry over exactly
    assert json.loads((tmp_path / "cut" / STATE_FILE).read_text())["strategy"] == \
        json.loads((tmp_path / "full" / STATE_FILE).read_text())["strategy"]


def test_failed_architectures_are_recorded_with_reason_and_search_goes_on(tmp_path):
    loop = run(ZeroCostNSGA2(pop_size=6, generations=3, seed=2), tmp_path, fail_act="tanh")
    recs = loop.store.records()
    failed = [r for r in recs if r["status"] == "failed"]
    assert failed and all(r["sample"]["act"] == "tanh" and "out of memory" in r["error"] for r in failed)
    # with half the 18 architectures failing, pymoo may run out of new offspring before generation 3: it ends
    assert loop.finished and loop.strategy.generation >= 2 and _scores(loop)
    assert all(f["sample"]["act"] == "relu" for f in loop.finalists())   # failed ones are never finalists


def test_degenerate_scores_mark_failed_not_crash(tmp_path):
    loop = run(ZeroCostNSGA2(pop_size=4, generations=1, seed=0), tmp_path, constant=True)
    recs = loop.store.records()
    assert recs and all(r["status"] == "failed" for r in recs)
    assert all("not finite" in r["error"] for r in recs)
    assert loop.finalists() == []


def test_moead_runs_counts_generations_and_resumes(tmp_path):
    loop = run(ZeroCostNSGA2(pop_size=6, generations=3, seed=0, algorithm="moead"), tmp_path / "full")
    assert loop.strategy.generation == 3 and loop.strategy.pareto_front(loop.store.records())
    assert len(set(H.CALLS)) == len(H.CALLS)
    full_calls = list(H.CALLS)
    H.CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        run(ZeroCostNSGA2(pop_size=6, generations=3, seed=0, algorithm="moead"), tmp_path / "cut",
            interrupt_at=len(full_calls) - 1)
    part = H.CALLS[:-1]
    H.CALLS.clear()
    run(ZeroCostNSGA2(pop_size=6, generations=3, seed=0, algorithm="moead"), tmp_path / "cut")
    assert part + H.CALLS == full_calls
    algo = json.loads((tmp_path / "cut" / STATE_FILE).read_text())["strategy"]["algorithm"]
    n_obj = len(ZeroCostNSGA2(pop_size=6, generations=3).params.objectives)
    assert algo["kind"] == "moead" and len(algo["ideal"]) == len(algo["nadir"]) == n_obj


def test_a_pickle_in_the_state_is_refused_with_one_line_and_nothing_runs(tmp_path):
    import base64
    import pickle

    from mednas_nni.errors import RunDirError

    run(ZeroCostNSGA2(pop_size=4, generations=1, seed=0), tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / STATE_FILE
    state = json.loads(path.read_text())
    state["finished"] = False
    for bad in (base64.b64encode(pickle.dumps(Evil())).decode("ascii"),
                {**state["strategy"]["algorithm"], "X": base64.b64encode(pickle.dumps(Evil())).decode("ascii")}):
        state["strategy"]["algorithm"] = bad
        path.write_text(json.dumps(state))
        H.CALLS.clear()
        with pytest.raises(RunDirError, match=r"strategy_state.json: strategy.algorithm.*expected") as e:
            run(ZeroCostNSGA2(pop_size=4, generations=2, seed=0), tmp_path)
        assert "\n" not in str(e.value) and not marker.exists() and H.CALLS == []


def test_pareto_and_finalist_choice():
    F = np.array([[0.0, 1.0], [1.0, 0.0], [0.4, 0.4], [0.5, 0.9]])   # row 3 is dominated by row 2
    assert pareto_mask(F).tolist() == [True, True, True, False]
    front = F[:3]
    assert choose_finalists(front, knee=True, top_k=0, rank_col=None) == [2]          # closest to the ideal
    assert choose_finalists(front, knee=True, top_k=1, rank_col=0) == [2, 0]          # + best on objective 0
    assert choose_finalists(front, knee=False, top_k=2, rank_col=1) == [1, 2]
    assert choose_finalists(np.zeros((0, 2)), True, 1, None) == []


def test_params_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="rank_by"):
        zc.ZeroCostNSGA2Params(rank_by="synflow")
    with pytest.raises(ValidationError, match="at least one finalist"):
        zc.ZeroCostNSGA2Params(knee=False, top_k=0)
    assert "pop_size=6" in repr(ZeroCostNSGA2(pop_size=6))


def test_run_directory_of_the_previous_version_is_refused_with_one_line(tmp_path):
    from mednas_nni.errors import RunDirError

    (tmp_path / "strategy_state.pt").write_bytes(b"not read")
    with pytest.raises(RunDirError, match=r"strategy_state.pt: expected a run directory of mednas-nni 0.2 .* got "
                                          r"one written by mednas-nni 0.1"):
        run(ZeroCostNSGA2(pop_size=4, generations=1, seed=0), tmp_path)

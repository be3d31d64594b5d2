"""zc_nsga2 on a toy NNI space with the sequential engine: determinism, caching, resume, failures, finalists."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace

from conftest import make_toy_space
from mednas_nni.strategies import zc_nsga2 as zc
from mednas_nni.strategies._utils import arch_hash
from mednas_nni.strategies.zc_nsga2 import ZeroCostNSGA2, choose_finalists, pareto_mask

CALLS: list[str] = []


def counting_score(model, inputs, targets, proxies, device="cpu", init_seed=0):
    CALLS.append(arch_hash(model._toy_sample))
    zc.score_architecture(model, inputs, targets, proxies, device, init_seed)


def run(strategy, budget=None, evaluator_fn=counting_score):
    Space = make_toy_space()

    class Tagged(Space):   # remember the sample on the frozen model so the counting evaluator can hash it
        pass

    space = Tagged()
    torch.manual_seed(0)
    x, y = torch.randn(12, 1, 8, 8), torch.randint(0, 2, (12, 1))
    ev = FunctionalEvaluator(evaluator_fn, inputs=x, targets=y, proxies=strategy._proxies(), init_seed=strategy.seed)
    ms = RawFormatModelSpace.from_model(space, ev)
    orig_freeze = ms.freeze

    def freeze(sample):
        m = orig_freeze(sample)
        orig_exec = m.executable_model

        def executable_model():
            net = orig_exec()
            net._toy_sample = sample
            return net
        m.executable_model = executable_model
        return m

    ms.freeze = freeze
    strategy(ms, SequentialExecutionEngine(max_model_count=budget, continue_on_failure=True))
    return strategy


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()


def test_seeded_runs_are_identical_and_nothing_is_scored_twice():
    a = run(ZeroCostNSGA2(pop_size=6, generations=4, seed=3))
    calls_a = list(CALLS)
    CALLS.clear()
    b = run(ZeroCostNSGA2(pop_size=6, generations=4, seed=3))
    assert calls_a == CALLS                                    # same architectures, same order
    assert len(set(calls_a)) == len(calls_a)                   # the cache prevents re-scoring
    assert a.cache_hits > 0                                    # 18-arch space: later generations repeat archs
    assert {h: r["scores"] for h, r in a.cache.items() if r["status"] == "ok"} == \
           {h: r["scores"] for h, r in b.cache.items() if r["status"] == "ok"}
    assert a.generation == 4


def test_different_seed_explores_differently():
    run(ZeroCostNSGA2(pop_size=6, generations=2, seed=1))
    first = list(CALLS)
    CALLS.clear()
    run(ZeroCostNSGA2(pop_size=6, generations=2, seed=2))
    assert first != CALLS


def test_resume_from_state_dict_scores_nothing_again():
    full = run(ZeroCostNSGA2(pop_size=6, generations=4, seed=5))
    full_calls = list(CALLS)
    CALLS.clear()
    # Interrupted run: the NNI budget stops it in generation 2; its state is what a checkpoint would hold.
    part = run(ZeroCostNSGA2(pop_size=6, generations=4, seed=5), budget=8)
    part_calls = list(CALLS)
    assert part.generation < 4
    state = part.state_dict()
    CALLS.clear()
    resumed = ZeroCostNSGA2(pop_size=6, generations=4, seed=5)
    resumed.load_state_dict(state)
    run(resumed)
    assert not set(part_calls) & set(CALLS)                    # nothing evaluated twice across the restart
    assert part_calls + CALLS == full_calls                    # and the resumed search is the same search
    assert resumed.generation == 4 and set(resumed.cache) == set(full.cache)


def test_failed_architectures_are_recorded_with_reason_and_search_goes_on():
    def flaky(model, inputs, targets, proxies, device="cpu", init_seed=0):
        if model._toy_sample["act"] == "tanh":
            raise RuntimeError("CUDA out of memory (simulated)")
        counting_score(model, inputs, targets, proxies, device, init_seed)

    st = run(ZeroCostNSGA2(pop_size=6, generations=3, seed=2), evaluator_fn=flaky)   # seed 2: both acts
    failed = [r for r in st.cache.values() if r["status"] == "failed"]
    assert failed and all(r["sample"]["act"] == "tanh" for r in failed)
    assert all("status failed" in r["error"] or "out of memory" in r["error"] for r in failed)
    assert st.generation == 3 and st.scored()
    assert all(f["sample"]["act"] == "relu" for f in st.finalists())   # failed ones are never finalists


def test_degenerate_scores_mark_failed_not_crash():
    # op2 = zero with a residual is fine; make every arch's jacob_cov NaN by scoring a constant network
    def constant(model, inputs, targets, proxies, device="cpu", init_seed=0):
        class Const(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Linear(1, 2)

            def forward(self, x):
                return self.w(x.sum((1, 2, 3), keepdim=True).view(-1, 1) * 0)
        zc.score_architecture(Const(), inputs, targets, proxies, device, init_seed)

    st = ZeroCostNSGA2(pop_size=4, generations=1, seed=0)
    run(st, evaluator_fn=constant)
    assert st.cache and all(r["status"] == "failed" for r in st.cache.values())
    assert all("not finite" in r["error"] for r in st.cache.values())
    assert st.finalists() == []


def test_moead_runs_and_counts_generations():
    st = run(ZeroCostNSGA2(pop_size=6, generations=3, seed=0, algorithm="moead"))
    assert st.generation == 3 and st.pareto_front()
    assert len(set(CALLS)) == len(CALLS)


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

"""NNI may announce a trial's end before its final metric (two trials started together on NNI 3.0's training
services can run each other's parameters; measured on the remote service: benchmarks/results/scale_out_speedup.md).
The search loop must then wait for the metric instead of recording a successful architecture as failed.

The engine is NNI's real ``SequentialExecutionEngine`` with the order of its own events changed, the strategy and
search loop are the real ones."""
from __future__ import annotations

from typing import Any

from nni.nas.execution import SequentialExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, TrainingEndEvent
from nni.nas.space import SimplifiedModelSpace

import _harness as H
from conftest import make_toy_space
from mednas_nni.engines.nni_engine import LoopStrategy, make_evaluator
from mednas_nni.engines.search_loop import SearchLoop
from mednas_nni.engines.trial import register_context
from mednas_nni.strategies.zc_nsga2 import ZeroCostNSGA2

SPACE = make_toy_space()()


class EndBeforeMetric(SequentialExecutionEngine):
    """NNI's sequential engine, but a trial's final metric is dispatched after its end event (``drop``: never)."""

    def __init__(self, drop: bool = False):
        super().__init__(continue_on_failure=True)
        self.drop, self.held = drop, []

    def dispatch_model_event(self, event: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(event, FinalMetricEvent):
            self.held.append(event)
            return
        super().dispatch_model_event(event, *args, **kwargs)
        if isinstance(event, TrainingEndEvent) and not self.drop:
            while self.held:
                super().dispatch_model_event(self.held.pop(0))


def _search(tmp_path, engine: SequentialExecutionEngine, timeout: float = 60.0) -> SearchLoop:
    strategy = ZeroCostNSGA2(pop_size=4, generations=2, seed=0)
    H.with_trial(strategy, "test_zc_nsga2:counting_score", proxies=strategy._proxies(),
                 objectives=list(strategy.params.objectives), proxy_batch_size=12, init_seed=0)
    loop = SearchLoop(strategy, SPACE, H.make_ctx(tmp_path))
    register_context(loop.ctx)
    nni_strategy = LoopStrategy(loop)
    nni_strategy.late_metric_timeout_s = timeout
    nni_strategy(SimplifiedModelSpace.from_model(loop.space, make_evaluator(loop)), engine)
    return loop


def test_a_metric_that_arrives_after_the_end_is_recorded_as_ok(tmp_path) -> None:
    reference = _search(tmp_path / "ref", SequentialExecutionEngine(continue_on_failure=True))
    late = _search(tmp_path / "late", EndBeforeMetric())
    recs = late.store.records()
    assert recs and all(r["status"] == "ok" for r in recs)
    assert H.scored(late) == H.scored(reference)          # the same metrics, each with its own architecture


def test_a_metric_that_never_arrives_fails_the_architecture_with_that_reason(tmp_path) -> None:
    loop = _search(tmp_path, EndBeforeMetric(drop=True), timeout=0.5)
    recs = loop.store.records()
    assert recs and all(r["status"] == "failed" for r in recs)
    assert all("SUCCEEDED but its final metric did not reach mednas within 0 s" in r["error"] for r in recs)

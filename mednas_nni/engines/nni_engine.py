"""A :class:`~mednas_nni.engines.search_loop.SearchLoop` driven by NNI's execution engines.

:class:`LoopStrategy` is the one NNI ``Strategy`` of mednas: it submits each batch's new architectures to NNI's
engine (``SequentialExecutionEngine`` in this process, or the training-service engine of a ``NasExperiment``, see
:mod:`~mednas_nni.engines.nni_local`), records every result as it arrives and tells the search strategy at the end
of each batch. Strategies themselves never see NNI's engine.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ModelStatus
from nni.nas.strategy.base import Strategy

from .records import arch_hash
from .search_loop import SearchLoop
from .trial import ArchitectureEvaluator, register_context, run_trial, trial_error
from .webui_labels import without_labels

__all__ = ["LoopStrategy", "make_evaluator", "run_sequential"]

_logger = logging.getLogger(__name__)


def make_evaluator(loop: SearchLoop) -> ArchitectureEvaluator:
    """NNI evaluator running the loop's trial spec on a frozen architecture."""
    return ArchitectureEvaluator(run_trial, run_dir=str(loop.rd.path), trial_function=loop.spec.function,
                                 trial_kwargs=dict(loop.spec.kwargs))


class LoopStrategy(Strategy):
    """NNI strategy that runs a :class:`SearchLoop` on whatever engine NNI gives it."""

    #: how long a trial that ended SUCCEEDED may wait for its final metric before it is recorded as failed
    late_metric_timeout_s: float = 60.0

    def __init__(self, loop: SearchLoop):
        super().__init__()
        self.loop = loop
        self._metric: dict[str, Any] = {}
        self._late: dict[str, float] = {}        # hash -> when its trial ended SUCCEEDED without a final metric yet
        self._lock = threading.RLock()
        self.budget_exhausted = False

    def extra_repr(self) -> str:
        return f"strategy={self.loop.strategy.name!r}"

    def _initialize(self, model_space: Any, engine: Any) -> Any:
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_end)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_end)

    def _hash(self, sample: dict[str, Any]) -> str:
        return arch_hash(self.loop.space.canonicalize(sample))

    def _on_final(self, event: FinalMetricEvent) -> None:
        # The raw dict (every metric), before NNI's Metrics keeps only 'default'.
        with self._lock:
            h = self._hash(event.model.sample)
            self._metric[h] = event.metric
            if self._late.pop(h, None) is not None and h in self.loop.pending():
                self._complete_trained(h, self._metric.pop(h))

    def _complete_trained(self, h: str, metric: Any) -> None:
        self.loop.complete(h, without_labels(metric) if isinstance(metric, dict) else {"default": float(metric)})

    def _on_end(self, event: TrainingEndEvent) -> None:
        with self._lock:
            h = self._hash(event.model.sample)
            if h not in self.loop.pending():
                return
            metric = self._metric.pop(h, None)
            if event.status == ModelStatus.Interrupted:
                _logger.warning("evaluation of %s was interrupted; it is not recorded and runs again on resume", h)
                return
            if event.status == ModelStatus.Trained and isinstance(metric, (dict, int, float)):
                self._complete_trained(h, metric)
            elif event.status == ModelStatus.Trained and metric is None:
                # NNI can announce the end before the metric: two trials started together on NNI 3.0's training
                # services may run each other's parameters (trial.py), so one trial's end arrives before the metric
                # of its architecture, which the other process reports; wait for it (_settle_late).
                self._late[h] = time.time()
            else:
                reason = trial_error(self.loop.rd.path, h) or (
                    f"the trial ended with status {event.status.value} (NNI: FAILED, or USER_CANCELED when killed "
                    "or over maxTrialDuration); see its log in the NNI web UI")
                self.loop.complete(h, error=reason)

    def before_batches(self) -> None:
        """Hook for engines that must re-seed the loop first (the local training service after a crash)."""

    def _run(self) -> None:
        self.before_batches()
        while (batch := self.loop.next_batch()) is not None:
            models = []
            for h, sample in list(batch.todo.items()):
                if h in self.loop.store:
                    continue
                if not self.wait_for_resource():
                    _logger.warning("NNI reports no budget left (max_trial_number / duration); stopping the search")
                    batch.skip([k for k in batch.todo if k not in self.loop.store])
                    self.budget_exhausted = True
                    break
                model = self.model_space.freeze(sample)
                batch.started[h] = time.time()
                self.engine.submit_models(model)
                models.append(model)
            if models:
                self.engine.wait_models(*models)
            self._settle_late()
            self.loop.finish(batch)
            if self.budget_exhausted:
                break
        _logger.info("search done: %s", self.loop.summary())

    def _settle_late(self) -> None:
        """Wait up to :attr:`late_metric_timeout_s` for the final metrics of trials that ended SUCCEEDED without
        one; a metric that never comes makes the architecture a failed one, with that reason."""
        deadline = time.time() + self.late_metric_timeout_s
        while time.time() < deadline:
            with self._lock:
                if not any(h in self.loop.pending() for h in self._late):
                    break
            time.sleep(0.2)
        with self._lock:
            for h in list(self._late):
                self._late.pop(h)
                if h in self.loop.pending():
                    self.loop.complete(h, error=f"the trial ended SUCCEEDED but its final metric did not reach "
                                                f"mednas within {self.late_metric_timeout_s:.0f} s")

    # NNI checkpoints its strategy at start and stop; mednas keeps its own state in the run directory.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


def run_sequential(loop: SearchLoop) -> None:
    """Evaluate every architecture in this process, one after the other (NNI's ``SequentialExecutionEngine``)."""
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import SimplifiedModelSpace

    register_context(loop.ctx)
    space = SimplifiedModelSpace.from_model(loop.space, make_evaluator(loop))
    LoopStrategy(loop)(space, SequentialExecutionEngine(continue_on_failure=True))

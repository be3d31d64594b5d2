"""A search loop on NNI's local training service: one NNI trial per architecture, NNI's web UI on a port.

Runs a multi-trial ``NasExperiment`` (engine 'ts', simplified format) whose strategy is
:class:`~mednas_nni.engines.nni_engine.LoopStrategy`. **The NNI manager listens on all network interfaces** (NNI
has no host option): browse ``http://127.0.0.1:PORT`` and firewall the port on shared machines.

Resume (``mednas resume``): the NNI experiment id is kept in ``status.json`` (``nni_experiment``) and
``nni_experiment.json``. An orphaned manager of that id (left by a killed driver) is stopped by its id, the
experiment is resumed with NNI's ``resume`` (with the ``ImportData`` hang patched), architectures NNI trained but
the run directory missed are copied from NNI's trial database, and the interrupted batch is proposed again: what
was already evaluated is a cache hit.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import SearchError
from ..io import atomic_write_json
from .nni_engine import LoopStrategy, make_evaluator
from .nni_process import TERMINAL_STATES, nni_manifest, patch_nni_resume_hang, stop_nni_experiment
from .records import arch_hash
from .search_loop import SearchLoop

__all__ = ["run_local", "LocalLoopStrategy"]

_logger = logging.getLogger(__name__)


class LocalLoopStrategy(LoopStrategy):
    """:class:`LoopStrategy` that first re-seeds the loop from NNI's trial database (after a crash)."""

    def _engine_trials(self) -> list[tuple[dict[str, Any], str, Any]]:
        """``(sample, 'running' | 'trained' | 'failed', final metric)`` of every trial NNI's manager knows.

        Reads the manager's trial list directly: a trial NNI re-ran on resume carries two parameter records and
        ``engine.list_models()`` skips it. A re-run trial shows ``ADD_RESUMED`` first: only terminal states count.
        """
        binding = getattr(self.engine, "nodejs_binding", None)
        if binding is None or not hasattr(binding, "list_trial_jobs"):
            return []
        out = []
        for trial in binding.list_trial_jobs():
            if not trial.hyperParameters:
                continue
            params = trial.hyperParameters[-1].parameters
            sample = params.get("sample") if isinstance(params, dict) else getattr(params, "sample", None)
            if not isinstance(sample, dict):
                continue
            state = ("trained" if trial.status == "SUCCEEDED" else
                     "failed" if trial.status in TERMINAL_STATES else "running")
            out.append((sample, state, trial.finalMetricData[-1].data if trial.finalMetricData else None))
        return out

    def _wait_for_resumed_trials(self, timeout: float = 3600.0) -> None:
        t0, told = time.time(), False
        while time.time() - t0 < timeout:
            running = [s for s, state, _ in self._engine_trials() if state == "running"]
            if not running:
                return
            if not told:
                _logger.info("waiting for %d trial(s) that NNI resumed from the interrupted session", len(running))
                told = True
            time.sleep(2.0)
        _logger.warning("NNI's resumed trials did not finish within %.0f s; going on without them", timeout)

    def before_batches(self) -> None:
        import json

        self._wait_for_resumed_trials()
        n = 0
        for sample, state, metric in self._engine_trials():
            if state != "trained":
                continue
            c = self.loop.space.canonicalize(sample)
            h = arch_hash(c)
            rec = self.loop.store.get(h)
            if rec is not None and rec["status"] == "ok":
                continue
            if isinstance(metric, str):
                try:
                    metric = json.loads(metric)
                except json.JSONDecodeError:
                    continue
            raw = metric if isinstance(metric, dict) else {"default": metric}
            if not isinstance(raw.get("default"), (int, float)):
                continue
            self.loop.record(c, h, "ok", metrics=raw, source="nni-db")
            n += 1
        if n:
            _logger.info("re-seeded %d evaluated architecture(s) from NNI's trial database", n)


def run_local(loop: SearchLoop) -> None:
    """Run ``loop`` as a NasExperiment on NNI's local training service (``engine.kind: local``)."""
    from nni.experiment import management
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    ctx, rd, eng = loop.ctx, loop.rd, loop.ctx.cfg.engine
    patch_nni_resume_hang()
    exp_id = rd.status().get("nni_experiment")
    resume = exp_id is not None and nni_manifest(exp_id) is not None
    if exp_id is not None:
        stop_nni_experiment(exp_id)          # a killed driver leaves its manager running
        if not resume:
            _logger.warning("NNI experiment %s is not in NNI's manifest (another HOME?); starting a new NNI "
                            "experiment (the run directory's cache still prevents re-evaluation)", exp_id)
    if not resume:
        exp_id = management.generate_experiment_id()
    work = rd / "nni"
    rd.set_status(nni_experiment=exp_id, nni_port=eng.port)
    atomic_write_json(rd / "nni_experiment.json", {
        "id": exp_id, "port": eng.port, "web_ui": f"http://127.0.0.1:{eng.port}", "working_directory": str(work),
        "stop": f"nnictl stop {exp_id}", "note": "the NNI manager listens on all interfaces"})
    config = NasExperimentConfig("ts", "simplified", "local")
    config.experiment_name = f"mednas {ctx.cfg.run_name()}"
    config.experiment_working_directory = str(work)
    config.trial_concurrency = eng.trial_concurrency
    budget = loop.strategy.max_evaluations or 10_000
    config.max_trial_number = eng.max_trial_number or budget + 64
    config.trial_gpu_number = eng.trial_gpu_number
    config.training_service.use_active_gpu = eng.use_active_gpu
    strategy = LocalLoopStrategy(loop)
    exp = NasExperiment(loop.space, make_evaluator(loop), strategy, config=config, id=exp_id)
    _logger.info("NNI experiment %s: web UI on http://127.0.0.1:%d (the manager listens on all interfaces)",
                 exp_id, eng.port)
    try:
        if resume:
            exp.resume(port=eng.port, wait_completion=False)
        else:
            exp.run(port=eng.port, wait_completion=False)
    except RuntimeError as e:
        if "port" in str(e).lower() or "address" in str(e).lower():
            raise SearchError(f"NNI could not start on port {eng.port}: {e}; set engine.port to a free port") from None
        raise
    finally:
        exp.stop()
    if not loop.finished and not strategy.budget_exhausted:
        raise SearchError(f"NNI experiment {exp_id} ended before the search finished; see its log in "
                          f"{work / exp_id / 'log'} and resume with 'mednas resume {rd.path}'")

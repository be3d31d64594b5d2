"""A search loop on NNI's local training service: one NNI trial per architecture, NNI's web UI on a port.

Runs a multi-trial ``NasExperiment`` (engine 'ts', simplified format) whose strategy is
:class:`~mednas_nni.engines.nni_engine.LoopStrategy`, on the training service of the config's ``training_service``
section (local, remote over SSH, kubeflow, frameworkcontroller; :mod:`~mednas_nni.engines.training_service`). The
NNI manager listens on 127.0.0.1 only (NNI itself would listen on every interface; see
:mod:`~mednas_nni.engines.nni_loopback`) unless ``training_service.manager_host`` says otherwise; view the web UI
from another machine through ``ssh -N -L PORT:127.0.0.1:PORT``.

Resume (``mednas resume``): the NNI experiment id is kept in ``status.json`` (``nni_experiment``) and
``nni_experiment.json``. An orphaned manager of that id (left by a killed driver) is stopped by its id, the
experiment is resumed with NNI's ``resume`` (with the ``ImportData`` hang patched), architectures NNI trained but
the run directory missed are copied from NNI's trial database, and the interrupted batch is proposed again: what
was already evaluated is a cache hit.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import SearchError
from ..io import atomic_write_json, atomic_write_text
from .nni_engine import LoopStrategy, make_evaluator
from .nni_loopback import is_loopback, loopback_manager
from .nas_trial_entry import nas_trial_python
from .nni_process import TERMINAL_STATES, nni_manifest, patch_nni_resume_hang, stop_nni_experiment
from .records import arch_hash
from .webui_labels import labelled_hash, without_labels
from .search_loop import SearchLoop
from .training_service import prepared_training_service
from .trial import TRIAL_ERROR_METRIC, TRIAL_ERRORS

__all__ = ["run_local", "LocalLoopStrategy"]

_logger = logging.getLogger(__name__)


def manager_error(log_dir: Path) -> str:
    """The first ``ERROR`` line of NNI's manager log in ``log_dir`` (why the manager went ERROR), or a pointer."""
    log = log_dir / "nnimanager.log"
    try:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if "] ERROR (" in line:
                return f"{line.split(') ', 1)[-1].strip()} (see {log})"
    except OSError:
        pass
    return f"see {log}"


class LocalLoopStrategy(LoopStrategy):
    """:class:`LoopStrategy` that first re-seeds the loop from NNI's trial database (after a crash), and stops with
    the manager's reason when NNI's manager goes ERROR (e.g. a remote machine refused it): NNI's engine would wait
    for the submitted models forever."""

    def __init__(self, loop: SearchLoop, log_dir: Path | None = None):
        super().__init__(loop)
        self.log_dir = log_dir

    def _manager_status(self) -> str | None:
        binding = getattr(self.engine, "nodejs_binding", None)
        try:
            return binding.get_status() if binding is not None else None
        except Exception:       # noqa: BLE001 (the manager is gone: its REST call fails in many ways)
            return "ERROR"

    def _raise_if_manager_failed(self) -> None:
        if self._manager_status() == "ERROR":
            raise SearchError("NNI's manager stopped with status ERROR: " +
                              (manager_error(self.log_dir) if self.log_dir else "see its nnimanager.log"))

    def _on_intermediate(self, event: Any) -> None:
        """A remote trial's failure reason (its last intermediate metric, no 'default'): into the run directory's
        ``trial_errors/<hash>.txt``, where the search loop reads it when the trial ends FAILED. NNI's own handling
        (a strict metric needs 'default') is skipped for it."""
        metric = event.metric
        if isinstance(metric, dict) and TRIAL_ERROR_METRIC in metric and "default" not in metric:
            event.prevent_default()
            atomic_write_text(self.loop.rd / TRIAL_ERRORS / f"{self._hash(event.model.sample)}.txt",
                              f"{str(metric[TRIAL_ERROR_METRIC]).strip()}\n\n(sent by the remote trial through NNI; "
                              "its traceback is in the trial's log: web UI, or trial.stderr on the worker)\n")

    def _cleanup(self) -> None:
        from nni.nas.execution.event import ModelEventType

        self.engine.unregister_model_event_callback(ModelEventType.IntermediateMetric, self._on_intermediate)
        super()._cleanup()

    def _initialize(self, model_space: Any, engine: Any) -> Any:
        from nni.nas.execution.event import ModelEventType

        out = super()._initialize(model_space, engine)
        engine.register_model_event_callback(ModelEventType.IntermediateMetric, self._on_intermediate)
        if getattr(engine, "nodejs_binding", None) is not None:
            wait_all = engine.wait_models

            def wait_models(*models: Any) -> None:
                if not models:
                    return wait_all()
                while any(not m.status.completed() for m in models):
                    self._raise_if_manager_failed()
                    time.sleep(1.0)

            engine.wait_models = wait_models
        return out

    def wait_for_resource(self) -> bool:
        ok = super().wait_for_resource()
        if not ok:
            self._raise_if_manager_failed()
        return ok

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
            named = labelled_hash(raw)
            if named is not None and named != h:
                # NNI paired this metric with another trial's architecture (see assigned_parameters): not ours
                _logger.warning("NNI lists architecture %s beside a metric its trial reported for %s: not re-seeded",
                                h, named)
                continue
            self.loop.record(c, h, "ok", metrics=without_labels(raw), source="nni-db")
            n += 1
        if n:
            _logger.info("re-seeded %d evaluated architecture(s) from NNI's trial database", n)


@contextlib.contextmanager
def _working_directory(folder: Path | None) -> Iterator[None]:
    """NNI uploads the driver's working directory as trial code (and checks it is the cwd): use ``folder``."""
    if folder is None:
        yield
        return
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def run_local(loop: SearchLoop) -> None:
    """Run ``loop`` as a NasExperiment on NNI's training service (``engine.kind: local``; where the trials run is
    ``training_service.platform``)."""
    import requests
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
    with prepared_training_service(ctx.cfg, rd.path, eng.port) as svc:
        host = svc.manager_host
        listens_on = "127.0.0.1" if is_loopback(host) else "0.0.0.0"
        web_ui = f"http://{'127.0.0.1' if is_loopback(host) else host}:{eng.port}"
        rd.set_status(nni_experiment=exp_id, nni_port=eng.port)
        atomic_write_json(rd / "nni_experiment.json", {
            "id": exp_id, "port": eng.port, "web_ui": web_ui, "working_directory": str(work),
            "stop": f"nnictl stop {exp_id}", "platform": svc.platform, "machines": svc.machines,
            "listens_on": listens_on, "note": ("the NNI manager listens on loopback only; from another machine: ssh "
                                               f"-N -L {eng.port}:127.0.0.1:{eng.port} <this host>")
            if is_loopback(host) else f"the NNI manager listens on every interface (training_service.manager_host: "
                                      f"{host}): its REST API has no authentication"})
        config = NasExperimentConfig("ts", "simplified", training_service=svc.nni_config)
        config.experiment_name = f"mednas {ctx.cfg.run_name()}"
        config.experiment_working_directory = str(work)
        config.trial_concurrency = eng.trial_concurrency
        budget = loop.strategy.max_evaluations or 10_000
        config.max_trial_number = eng.max_trial_number or budget + 64
        config.trial_gpu_number = eng.trial_gpu_number
        # NNI's trial command is "{python} -m nni.nas.execution.training_service trial"; ours runs that entry with
        # the parameter the manager assigned the trial (NNI 3.0 can swap two trials' parameters). The remote's
        # interpreter is named because NNI's trial shell lacks pythonPath.
        config._trial_command_params = {"python": nas_trial_python(svc.trial_python)}
        strategy = LocalLoopStrategy(loop, log_dir=work / exp_id / "log")
        exp = NasExperiment(loop.space, make_evaluator(loop), strategy, config=config, id=exp_id)
        _logger.info("NNI experiment %s on the %s training service: web UI on %s (listening on %s)", exp_id,
                     svc.platform, web_ui, "127.0.0.1 only" if is_loopback(host) else "every interface")
        try:
            with loopback_manager(host), _working_directory(svc.code_dir):
                if resume:
                    exp.resume(port=eng.port, wait_completion=False)
                else:
                    exp.run(port=eng.port, wait_completion=False)
        except RuntimeError as e:
            if "port" in str(e).lower() or "address" in str(e).lower():
                raise SearchError(f"NNI could not start on port {eng.port}: {e}; set engine.port to a free port") \
                    from None
            raise
        except requests.exceptions.ConnectionError:
            # NNI's launcher gives the new manager ~4 s (3 retries); under heavy load node may not be up by then
            raise SearchError(f"NNI's manager did not answer on 127.0.0.1:{eng.port} "
                              f"({manager_error(work / exp_id / 'log')}); at start NNI waits only ~4 s for it, which "
                              "an overloaded machine can miss: run again") from None
        except (json.JSONDecodeError, requests.exceptions.JSONDecodeError) as e:
            # NNI's launcher reads the manager's first answers as JSON. Seen under heavy load (2 cores, load 15-20):
            # the REST server answered before the manager was ready (NNI's start-up race), in 1 of ~12 launches.
            raise SearchError(f"NNI's manager on 127.0.0.1:{eng.port} did not answer its launcher with JSON ({e}; "
                              f"{manager_error(work / exp_id / 'log')}): NNI was still starting (heavy load) or "
                              "another server uses the port; run again, or set engine.port to a free port") from None
        finally:
            exp.stop()
    if not loop.finished and not strategy.budget_exhausted:
        raise SearchError(f"NNI experiment {exp_id} ended before the search finished; see its log in "
                          f"{work / exp_id / 'log'} and resume with 'mednas resume {rd.path}'")

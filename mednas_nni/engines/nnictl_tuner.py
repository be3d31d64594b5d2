"""One NNI tuner for every multi-trial strategy: a mednas search under ``nnictl``, watched in NNI's web UI.

``nnictl create --config examples/<x>_nnictl.yml --port P`` starts an HPO-style experiment whose tuner is
:class:`MedNASTuner` (``mednas register`` adds it to NNI's registry once). The tuner owns the run directory and a
:class:`~mednas_nni.engines.search_loop.SearchLoop` (the same loop ``mednas search`` runs); NNI trials do the work
(``python -m mednas_nni.nni_trial``):

* one **evaluate** trial per new architecture. Its parameters are what a person needs to match a trial to its
  network: the active part of the canonical architecture, its ``describe()`` string and hash. ``default`` means
  one thing per experiment: the strategy's trial spec says which (``search_summary.json``, README);
* a pruned architecture (``space.is_valid``) is shown as a FAILED **invalid** trial with the reason;
* one **retrain** trial per finalist (``default`` = the task's selection metric per epoch; final: the best epoch's),
  then the best finalist is tested and ``metrics.json`` written, exactly as ``mednas search`` does.

When the run directory says ``done`` the tuner lowers the experiment's ``maxTrialNumber`` to the trials it
submitted, so NNI marks the experiment DONE. A setup failure (bad config, missing data) becomes one FAILED
**setup_error** trial whose parameters hold the one-line reason, and the experiment ends. The run directory is
``<run.out_dir>/<name>-nni-<experiment id>``; ``nnictl resume ID`` continues it without re-evaluating anything.
The run directory is shared through the file system (NNI's ``local`` training service, or a shared folder).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from nni.tuner import Tuner

__all__ = ["MedNASTuner", "register_tuners", "TUNERS"]

_logger = logging.getLogger(__name__)

_TARGET = "mednas_nni.engines.nnictl_tuner.MedNASTuner"
#: registered names (``GeNASTuner`` is the name older example configs use; it is the same generic tuner)
TUNERS = {"MedNASTuner": _TARGET, "GeNASTuner": _TARGET}
_DONE = "done"


def register_tuners() -> list[tuple[str, str]]:
    """Register MedNASTuner in NNI's algorithm registry (``$NNI_CONFIG_DIR``, else ``sys.prefix/nni`` in a venv,
    else ``~/.config/nni``). A wheel cannot run a post-install hook, so ``mednas register`` does this once."""
    from nni.tools.package_utils import register_algo_meta, unregister_algo_meta
    from nni.tools.package_utils.common import AlgoMeta
    from nni.tools.package_utils.config_manager import get_all_algo_meta

    existing = {m.name for m in get_all_algo_meta()}
    out = []
    for name, cls in TUNERS.items():
        if name in existing:
            unregister_algo_meta(name)
        register_algo_meta(AlgoMeta.load({"algoType": "tuner", "builtinName": name, "className": cls,
                                          "nniVersion": "3.0"}))
        out.append((name, cls))
    return out


def _experiment_params() -> dict[str, Any]:
    """The experiment config NNI's manager passes to the dispatcher (``--exp_params``, base64 JSON)."""
    import base64
    import sys

    argv = sys.argv
    for i, a in enumerate(argv):
        val = argv[i + 1] if a == "--exp_params" and i + 1 < len(argv) else (
            a.split("=", 1)[1] if a.startswith("--exp_params=") else None)
        if val:
            try:
                return json.loads(base64.b64decode(val).decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                return {}
    return {}


def _experiment_id() -> str | None:
    """NNI starts the dispatcher with NNI_LOG_DIRECTORY=<experiments dir>/<id>/log."""
    for var in ("NNI_EXP_ID", "NNI_LOG_DIRECTORY", "NNI_CHECKPOINT_DIRECTORY"):
        val = os.environ.get(var)
        if val:
            return val if var == "NNI_EXP_ID" else Path(val).parent.name
    return None


class MedNASTuner(Tuner):
    """NNI tuner driving any mednas multi-trial strategy (one trial per architecture, then the finalists).

    Args:
        config: path of a mednas YAML config: absolute, or relative to the experiment's ``trialCodeDirectory``
            (which nnictl resolves against the nnictl YAML's folder).
        overrides: dotted ``KEY=VALUE`` overrides, as on the ``mednas search`` command line.
    """

    #: seconds to wait for the final metric of a trial that ended successfully (NNI's local training service reads
    #: metrics from the trial's files and can report the end of a trial before its last metric)
    result_grace_s = 60.0

    def __init__(self, config: str, overrides: list[str] | None = None):
        path_cfg = Path(config)
        if not path_cfg.is_absolute():
            code_dir = _experiment_params().get("trialCodeDirectory")
            path_cfg = Path(code_dir or ".") / path_cfg
        # NNI's manager gives the dispatcher 10 s to connect: the constructor does nothing slow; plugins, data and
        # the search space are loaded on first use (_setup), where a failure becomes a visible failed trial.
        self._config_path, self._overrides = path_cfg, list(overrides or [])
        self._lock = threading.RLock()
        self._ready = False
        self._setup_error: str | None = None
        self._credit: list[int] = []
        self._st_callback: Any = None
        self._outstanding: dict[int, dict[str, Any]] = {}
        self._issued: set[str] = set()
        self._show_invalid: list[dict[str, Any]] = []
        self._finalists: list[dict[str, Any]] | None = None
        self._issued_finalists: set[int] = set()
        self._submitted = 0
        self._ended = False

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        if self._ready or self._setup_error is not None:
            return
        from ..errors import MedNASError

        try:
            self._build()
            self._ready = True
        except MedNASError as e:
            self._setup_error = str(e)
            _logger.error("mednas: %s", e)

    def _build(self) -> None:
        from ..config import dump_config, load_config
        from ..errors import ConfigError
        from ..experiment import RunContext, build_strategy
        from ..io import RunDir, atomic_write_text
        from .search_loop import SearchLoop
        from .trial import register_context

        cfg = load_config(self._config_path, self._overrides)
        cfg.run.progress = False
        exp_id = _experiment_id() or "local"
        path = Path(cfg.run.out_dir) / f"{cfg.run_name()}-nni-{exp_id}"
        fresh = not (path / RunDir.CONFIG).exists()
        path.mkdir(parents=True, exist_ok=True)
        self.rd = RunDir(path)
        if fresh:
            atomic_write_text(self.rd / RunDir.CONFIG, dump_config(cfg))
            self.rd.set_status(phase="search", nni_experiment=exp_id)
        self.exp_id = exp_id
        self.ctx = RunContext.build(cfg, self.rd)
        register_context(self.ctx)
        strategy = build_strategy(cfg)
        if getattr(strategy, "family", None) != "multi-trial":
            raise ConfigError(f"{self._config_path}: strategy.name: MedNASTuner drives multi-trial strategies, got "
                              f"'{cfg.strategy.name}' ({getattr(strategy, 'family', '?')}); run one-shot searches "
                              "with 'mednas search'")
        self.loop = SearchLoop(strategy, self.ctx.build_space(), self.ctx)
        if (self.rd / "finalists.json").exists():
            self._finalists = json.loads((self.rd / "finalists.json").read_text())
            self._issued_finalists = {i for i in range(len(self._finalists))
                                      if (self.rd / "finalists" / str(i) / "result.json").exists()}
        _logger.info("MedNASTuner: run directory %s (%s)", self.rd.path, "new" if fresh else "resumed")

    # ------------------------------------------------------------------ NNI tuner protocol
    def update_search_space(self, search_space: dict[str, Any]) -> None:
        """The architecture space comes from the mednas config; NNI's search space is only a label."""

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        # Unused ids are kept as credit and spent through st_callback when work appears (the pattern of NNI's
        # Hyperband advisor): a strategy's batches are sequential.
        self._st_callback = kwargs.get("st_callback")
        out = []
        with self._lock:
            self._setup()
            for pid in parameter_id_list:
                params = self._next_params(pid)
                if params is None:
                    self._credit.append(pid)
                else:
                    out.append(params)
        return out

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        import nni

        with self._lock:
            self._setup()
            params = self._next_params(parameter_id)
        if params is None:
            raise nni.NoMoreTrialJobsError("waiting for running trials")
        return params

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        with self._lock:
            self._setup()
            params = self._outstanding.pop(parameter_id, None) or parameters
            value = value if isinstance(value, dict) else {"default": value}
            if params.get("mednas") == "evaluate" and self._ready:
                if params["hash"] in self.loop.pending():
                    from .webui_labels import without_labels

                    self.loop.complete(params["hash"], without_labels(value))
            elif params.get("mednas") == "retrain":
                self._receive_retrain(params)
            self._spend_credit()

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        with self._lock:
            self._setup()
            if parameter_id in self._outstanding and success:
                timer = threading.Timer(self.result_grace_s, self._no_result, args=(parameter_id,))
                timer.daemon = True
                timer.start()
                return
            params = self._outstanding.pop(parameter_id, None)
            if params is not None:   # FAILED, or USER_CANCELED when killed / over maxTrialDuration
                self._fail(params, "the trial failed or was killed (see its log in the NNI web UI)")
            self._spend_credit()

    def _no_result(self, parameter_id: int) -> None:
        with self._lock:
            params = self._outstanding.pop(parameter_id, None)
            if params is not None:
                self._fail(params, "the trial ended without reporting a final result")
                self._spend_credit()

    def _fail(self, params: dict[str, Any], reason: str) -> None:
        from .trial import trial_error

        if params.get("mednas") == "evaluate" and self._ready and params["hash"] in self.loop.pending():
            self.loop.complete(params["hash"], error=trial_error(self.rd.path, params["hash"]) or reason)
        elif params.get("mednas") == "retrain":
            self._receive_retrain(params, error=reason)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """``nnictl resume``: results of earlier trials come back here; archs.jsonl already holds them."""
        _logger.info("import_data: %d earlier trial results (the run directory already holds them)", len(data))

    # ------------------------------------------------------------------ scheduling
    def _spend_credit(self) -> None:
        while self._credit and self._st_callback is not None:
            params = self._next_params(self._credit[0])
            if params is None:
                break
            pid = self._credit.pop(0)
            self._st_callback(pid, params)

    def _issue(self, pid: int, params: dict[str, Any]) -> dict[str, Any]:
        self._outstanding[pid] = params
        self._submitted += 1
        return params

    def _next_params(self, pid: int) -> dict[str, Any] | None:
        if self._setup_error is not None:
            if self._submitted == 0:
                return self._issue(pid, {"mednas": "setup_error", "reason": self._setup_error})
            self._end_experiment()
            return None
        if self._finalists is None:
            params = self._next_search_params()
            if params is None:
                return None
            if params != _DONE:
                return self._issue(pid, params)
            self._finish_search()
        for i, fin in enumerate(self._finalists or []):
            if i not in self._issued_finalists:
                self._issued_finalists.add(i)
                return self._issue(pid, self._arch_params("retrain", fin["hash"], fin["sample"], finalist=i,
                                                          chosen_as=fin.get("chosen_as")))
        if self.rd.status().get("phase") == "done":
            self._end_experiment()
        return None

    def _arch_params(self, kind: str, h: str, sample: dict[str, Any], **extra: Any) -> dict[str, Any]:
        space = self.loop.space
        meaning = {"evaluate": self.loop.spec.default_meaning,
                   "retrain": f"val_{self.ctx.select_key} of the task (per epoch; final: the best epoch)"}.get(kind)
        return {"mednas": kind, "describe": space.describe(sample), "hash": h, "arch": space.active_part(sample),
                **({"default_metric": meaning} if meaning else {}), "run_dir": str(self.rd.path), **extra}

    def _next_search_params(self) -> dict[str, Any] | str | None:
        from ..io import atomic_write_json
        from .trial import TRIAL_ARCHS

        loop = self.loop
        while True:
            if self._show_invalid:
                rec = self._show_invalid.pop(0)
                return self._arch_params("invalid", rec["hash"], rec["sample"], reason=rec.get("error"))
            batch = loop.current
            if batch is None:
                before = {r["hash"] for r in loop.store.records() if r["status"] == "invalid"}
                batch = loop.next_batch()
                self._show_invalid += [r for r in loop.store.records()
                                       if r["status"] == "invalid" and r["hash"] not in before]
                if batch is None:
                    return _DONE
                continue
            for h, sample in batch.todo.items():
                if h in self._issued or h in loop.store:
                    continue
                self._issued.add(h)
                atomic_write_json(self.rd / TRIAL_ARCHS / f"{h}.json", sample)
                batch.started[h] = time.time()
                return self._arch_params("evaluate", h, sample)
            if loop.pending():
                return None                                     # the batch is still being evaluated
            loop.finish(batch)

    def _finish_search(self) -> None:
        from ..io import atomic_write_json
        from .multi_trial import write_search_outputs

        self._finalists = write_search_outputs(self.loop)
        atomic_write_json(self.rd / "finalists.json", self._finalists)
        self.rd.set_status(phase="retrain", n_finalists=len(self._finalists))
        _logger.info("search finished: %d finalists", len(self._finalists))

    def _receive_retrain(self, params: dict[str, Any], error: str | None = None) -> None:
        """A retrain trial ended. The last one to finish tests the best finalist itself (its final result carries
        the ``test_*`` metrics); only when that cannot happen (the last finalist failed) the tuner tests here."""
        from ..experiment import choose_best
        from ..io import atomic_write_json

        i = params["finalist"]
        fdir = self.rd / "finalists"
        if error and not (fdir / str(i) / "result.json").exists():
            atomic_write_json(fdir / str(i) / "failed.json", {"error": error})
        if self.rd.status().get("phase") == "done":
            self._end_experiment()
            return
        if any(p.get("mednas") == "retrain" for p in self._outstanding.values()):
            return                                                 # a running retrain trial may still test
        done = [(fdir / str(k) / "result.json").exists() for k in range(len(self._finalists))]
        settled = [d or (fdir / str(k) / "failed.json").exists() for k, d in enumerate(done)]
        if all(settled):
            if any(done):
                _logger.warning("%d finalist(s) failed to retrain; choosing among the others", done.count(False))
                choose_best(self.ctx, self._finalists, available=done)
            else:
                _logger.error("every finalist failed to retrain; no model to test")
            self.rd.set_status(phase="done")
            self._end_experiment()

    def _end_experiment(self) -> None:
        """Let NNI mark the experiment DONE: lower its maxTrialNumber to the trials submitted so far."""
        if self._ended:
            return
        self._ended = True
        threading.Thread(target=_lower_max_trials, args=(getattr(self, "exp_id", None) or _experiment_id(),
                                                        self._submitted), daemon=True).start()


def _lower_max_trials(exp_id: str | None, submitted: int) -> None:
    from .nni_process import nni_manifest

    try:
        info = nni_manifest(exp_id) if exp_id else None
        if not info or not info.get("port"):
            return
        from nni.experiment import Experiment

        exp = Experiment.connect(int(info["port"]))
        n = max(1, submitted, len(exp.list_trial_jobs()))      # after `nnictl resume`, earlier trials count too
        exp.update_max_trial_number(n)
        _logger.info("experiment %s: maxTrialNumber set to %d; NNI marks it DONE when the last trial ends", exp_id, n)
    except Exception as e:  # noqa: BLE001 - the run directory is complete either way
        _logger.warning("could not end NNI experiment %s by itself (%s); stop it with 'nnictl stop %s'",
                        exp_id, e, exp_id)

"""Running a mednas search under ``nnictl`` so its progress shows in NNI's web UI.

``nnictl create --config examples/zc_nsga2_nnictl.yml --port P`` starts an HPO-style experiment whose
tuner is :class:`MedNASTuner`. The tuner owns the search (the same :class:`ZeroCostNSGA2` core that
``mednas search`` runs in-process) and the run directory; NNI trials do the work:

* one **score** trial per NSGA-II generation: it scores that generation's new architectures with the
  zero-cost proxies, reports one intermediate result per architecture and a final dict with the
  generation's best scores (``default`` = best jacob_cov) plus every architecture's scores;
* one **retrain** trial per finalist: per-epoch intermediate results (``default`` = val AUC) and a final
  dict with val/test metrics; weights go to ``<run_dir>/finalists/<i>/model.pt``.

When every finalist is back the tuner picks the best by val AUC and writes ``best_arch.json``, ``best.pt``
and ``metrics.json`` exactly as ``mednas search`` does. The run directory is
``<run.out_dir>/<name>-nni-<experiment id>``, so ``nnictl resume ID`` continues it: generations already
scored are read back from ``archs.jsonl`` and nothing is scored twice.

:class:`GeNASTuner` does the same for the GeNAS-WF genetic search (``examples/genas_mhsma_nnictl.yml``): one
**genas** trial per individual (per-epoch validation metrics as intermediate results, the GeNAS-WF fitness as the
final ``default``), generation after generation, then the finalists' retraining trials.

The run directory is shared through the file system, so this works with NNI's ``local`` training service
(and a remote one only with a shared folder).
"""
from __future__ import annotations

import abc
import logging
import os
import threading
from pathlib import Path
from typing import Any

from nni.tuner import Tuner

__all__ = ["MedNASTuner", "GeNASTuner", "register_tuners", "TUNERS"]

_logger = logging.getLogger(__name__)

TUNERS = {"MedNASTuner": "mednas_nni.nni_glue.MedNASTuner", "GeNASTuner": "mednas_nni.nni_glue.GeNASTuner"}
_DONE = "done"   # a search adapter's "no more search trials, ever"


def register_tuners() -> list[tuple[str, str]]:
    """Register our tuners in NNI's algorithm registry (``nnictl algo list`` shows them afterwards).

    NNI keeps the registry in ``$NNI_CONFIG_DIR`` (else ``sys.prefix/nni`` in a venv, else ``~/.config/nni``).
    A wheel cannot run a post-install hook, so ``mednas register`` does this once after ``pip install``.
    """
    from nni.tools.package_utils import register_algo_meta
    from nni.tools.package_utils.common import AlgoMeta
    from nni.tools.package_utils.config_manager import get_all_algo_meta

    existing = {m.name for m in get_all_algo_meta()}
    out = []
    for name, cls in TUNERS.items():
        if name in existing:
            from nni.tools.package_utils import unregister_algo_meta

            unregister_algo_meta(name)
        register_algo_meta(AlgoMeta.load({"algoType": "tuner", "builtinName": name, "className": cls,
                                          "nniVersion": "3.0"}))
        out.append((name, cls))
    return out


class _RunDirTuner(Tuner, abc.ABC):
    """Shared machinery: lazy setup, the run directory, credit scheduling and the finalists' retraining phase.

    Subclasses adapt one search strategy: ``_setup_search``, ``_next_search_params`` (a trial's parameters, None
    to wait for running trials, or ``_DONE``), ``_receive_search`` and ``_search_finalists``.

    Args:
        config: path of a mednas YAML config: absolute, or relative to the experiment's ``trialCodeDirectory``
            (which nnictl resolves against the nnictl YAML's folder).
        overrides: dotted ``KEY=VALUE`` overrides, as on the ``mednas search`` command line.
    """

    strategy_name = ""

    def __init__(self, config: str, overrides: list[str] | None = None):
        from .config import load_config
        from .errors import ConfigError

        # NNI's manager gives the dispatcher 10 s to connect, so the constructor only checks the config's
        # shape; plugins, data and the search space are loaded on first use (_setup).
        # classArgsValidator is never called by nnictl for v2 configs (NNI_NOTES §3): validate here.
        path_cfg = Path(config)
        if not path_cfg.is_absolute():
            code_dir = _experiment_params().get("trialCodeDirectory")
            path_cfg = Path(code_dir or ".") / path_cfg
        self._config_path, self._overrides = path_cfg, list(overrides or [])
        cfg = load_config(path_cfg, self._overrides, validate_plugins=False)
        if cfg.strategy.name != self.strategy_name:
            raise ConfigError(f"{config}: strategy.name: {type(self).__name__} drives '{self.strategy_name}', "
                              f"got '{cfg.strategy.name}'")
        self._lock = threading.Lock()
        self._ready = False
        self._credit: list[int] = []
        self._st_callback: Any = None
        self._gen_samples: list[dict[str, Any]] | None = None   # asked, not yet told
        self._outstanding: dict[int, dict[str, Any]] = {}        # parameter_id -> params
        self._finalists: list[dict[str, Any]] | None = None
        self._issued_finalists: set[int] = set()

    def _setup(self) -> None:
        if self._ready:
            return
        from .config import dump_config, load_config
        from .experiment import RunContext, build_dataset, build_strategy, resolve_device
        from .io import RunDir, atomic_write_text

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
        self.cfg = cfg
        self.ctx = RunContext(cfg, self.rd, build_dataset(cfg), resolve_device(cfg.run.device), False)
        self.strategy = build_strategy(cfg)
        self._setup_search()
        self._restore_finalists()
        self._ready = True
        _logger.info("%s: run directory %s (%s)", type(self).__name__, self.rd.path, "new" if fresh else "resumed")

    def _restore_finalists(self) -> None:
        if (self.rd / "finalists.json").exists():
            import json

            self._finalists = json.loads((self.rd / "finalists.json").read_text())
            self._issued_finalists = {i for i in range(len(self._finalists))
                                      if (self.rd / "finalists" / str(i) / "result.json").exists()}

    # ------------------------------------------------------------------ NNI tuner protocol
    def update_search_space(self, search_space: dict[str, Any]) -> None:
        """The architecture space comes from the mednas config; NNI's search space is only a label."""

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        # Keep unused ids as credit and send their trials later through st_callback when work appears
        # (the pattern of NNI's Hyperband advisor): NSGA-II generations are sequential.
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
            raise nni.NoMoreTrialJobsError("waiting for the current generation")
        return params

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        with self._lock:
            self._setup()
            self._outstanding.pop(parameter_id, None)
            if parameters.get("mednas") == "retrain":
                self._receive_retrain(parameters, value if isinstance(value, dict) else {})
            elif parameters.get("mednas") is not None:
                self._receive_search(parameters, value if isinstance(value, dict) else {})
            self._spend_credit()

    #: seconds to wait for the final metric of a trial that ended successfully (NNI's local training service
    #: reads metrics from the trial's files and can report the end of a trial before its last metric)
    result_grace_s = 60.0

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
        if params["mednas"] == "retrain":
            self._receive_retrain(params, {}, error=reason)
        else:
            self._receive_search(params, {}, error=reason)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """``nnictl resume``: results of earlier trials come back here; archs.jsonl already holds them."""
        _logger.info("import_data: %d earlier trial results (already in %s)", len(data), self.rd.path)

    # ------------------------------------------------------------------ scheduling
    def _spend_credit(self) -> None:
        while self._credit and self._st_callback is not None:
            params = self._next_params(self._credit[0])
            if params is None:
                break
            pid = self._credit.pop(0)
            self._st_callback(pid, params)

    def _next_params(self, pid: int) -> dict[str, Any] | None:
        if self._finalists is None:
            params = self._next_search_params()
            if params is None:
                return None                                     # wait for running search trials
            if params != _DONE:
                self._outstanding[pid] = params
                return params
            self._finish_search()
        for i, fin in enumerate(self._finalists):
            if i not in self._issued_finalists:
                self._issued_finalists.add(i)
                params = {"mednas": "retrain", "finalist": i, "arch": fin["sample"], "run_dir": str(self.rd.path)}
                self._outstanding[pid] = params
                return params
        return None

    def _finish_search(self) -> None:
        from .io import atomic_write_json

        self._finalists = self._search_finalists()
        atomic_write_json(self.rd / "finalists.json", self._finalists)
        self.rd.set_status(phase="retrain", n_finalists=len(self._finalists))
        _logger.info("search finished: %d finalists", len(self._finalists))

    # ------------------------------------------------------------------ search adapter (subclasses)
    @abc.abstractmethod
    def _setup_search(self) -> None:
        """Load the strategy's saved state and cache from the run directory."""

    @abc.abstractmethod
    def _next_search_params(self) -> dict[str, Any] | str | None:
        """The next search trial's parameters, None to wait for running trials, or ``_DONE``."""

    @abc.abstractmethod
    def _receive_search(self, params: dict[str, Any], value: dict[str, Any], error: str | None = None) -> None:
        """Record a search trial's result (or ``error``)."""

    @abc.abstractmethod
    def _search_finalists(self) -> list[dict[str, Any]]:
        """The finalists once the search is done (and write the search's own outputs)."""

    def _receive_retrain(self, params: dict[str, Any], value: dict[str, Any], error: str | None = None) -> None:
        from .experiment import _choose_best
        from .io import atomic_write_json

        i = params["finalist"]
        result = self.rd / "finalists" / str(i) / "result.json"
        if error and not result.exists():
            atomic_write_json(self.rd / "finalists" / str(i) / "failed.json", {"error": error})
        done = [(self.rd / "finalists" / str(k) / "result.json").exists() for k in range(len(self._finalists))]
        settled = [d or (self.rd / "finalists" / str(k) / "failed.json").exists() for k, d in enumerate(done)]
        if all(settled) and any(done) and self.rd.status().get("phase") != "done":
            ok = [f for f, d in zip(self._finalists, done) if d]
            if len(ok) < len(self._finalists):
                _logger.warning("%d finalist(s) failed to retrain; choosing among the others",
                                len(self._finalists) - len(ok))
            _choose_best(self.ctx, self._finalists, available=done)
            self.rd.set_status(phase="done")


class MedNASTuner(_RunDirTuner):
    """NNI tuner running the zero-cost NSGA-II search (``zc_nsga2``): one trial per generation, then the finalists.

    Args:
        config: path of a mednas YAML config: absolute, or relative to the experiment's ``trialCodeDirectory``.
        overrides: dotted ``KEY=VALUE`` overrides, as on the ``mednas search`` command line.
    """

    strategy_name = "zc_nsga2"

    def _setup_search(self) -> None:
        from mednas_nni.strategies._utils import categorical_space

        self.strategy.attach_run_dir(self.rd)
        self._labels = categorical_space(self.ctx.build_space())

    def _next_search_params(self) -> dict[str, Any] | str | None:
        from mednas_nni.strategies._utils import arch_hash

        while True:
            if self._gen_samples is not None:
                return None                                     # a generation is being scored
            samples = self.strategy.ask_generation(self._labels)
            if samples is None:
                return _DONE
            todo = []
            for s in samples:
                if arch_hash(s) in self.strategy.cache:
                    self.strategy.cache_hits += 1
                elif s not in todo:
                    todo.append(s)
            self._gen_samples = samples
            if not todo:                                        # all cached (resume): tell at once
                self.strategy.tell_generation(samples)
                self._gen_samples = None
                continue
            return {"mednas": "score", "generation": self.strategy.generation, "archs": todo,
                    "run_dir": str(self.rd.path)}

    def _receive_search(self, params: dict[str, Any], value: dict[str, Any], error: str | None = None) -> None:
        from mednas_nni.strategies._utils import arch_hash

        per_arch = {a.get("hash"): a for a in value.get("archs", []) if isinstance(a, dict)}
        for s in params["archs"]:
            h = arch_hash(s)
            if h in self.strategy.cache:
                continue
            got = per_arch.get(h)
            self.strategy.record_result(s, got or {}, params["generation"],
                                        None if got else (error or "no score returned by the trial"))
        if self._gen_samples is not None and params["generation"] == self.strategy.generation:
            self.strategy.tell_generation(self._gen_samples)
            self._gen_samples = None

    def _search_finalists(self) -> list[dict[str, Any]]:
        from mednas_nni.strategies._report import write_pareto

        finalists = self.strategy.finalists()
        write_pareto(self.rd, self.strategy, finalists)
        return finalists


class GeNASTuner(_RunDirTuner):
    """NNI tuner running the GeNAS-WF genetic search (``genas_wf``): one trial per individual, then the finalists.

    The GA is :class:`~mednas_nni.strategies.genas_wf.GeNASWF`'s own (initial population, tournament, elitism,
    crossover, mutation, pruning of invalid chromosomes, the hash cache); this class only schedules its
    individuals as NNI trials (``python -m mednas_nni.nni_trial``) and records their results.

    Args:
        config: path of a mednas YAML config: absolute, or relative to the experiment's ``trialCodeDirectory``.
        overrides: dotted ``KEY=VALUE`` overrides, as on the ``mednas search`` command line.
    """

    strategy_name = "genas_wf"

    def _setup_search(self) -> None:
        self.strategy.attach_run_dir(self.ctx)
        self._in_flight: dict[str, dict[str, Any]] = {}

    def _trained_or_failed(self) -> int:
        return sum(r["status"] in ("trained", "failed") for r in self.strategy.cache.values())

    def _next_search_params(self) -> dict[str, Any] | str | None:
        from mednas_nni.strategies._utils import arch_hash

        st = self.strategy
        while not st.finished:
            if st.population is None:
                st.generation = 0
                st.population = st._initial_population()
                st._checkpoint()
            budget_left = self._trained_or_failed() + len(self._in_flight) < st.max_trials
            for s in st.population:
                h = arch_hash(s)
                if h in st.cache or h in self._in_flight:
                    continue
                if not budget_left:
                    break
                self._in_flight[h] = s
                return {"mednas": "genas", "arch": s, "hash": h, "generation": st.generation,
                        "run_dir": str(self.rd.path)}
            if self._in_flight:
                return None                                     # the generation is still training
            st._log_generation()
            if not budget_left or st.generation + 1 >= st.params.generations:
                st.finished = True
                st._checkpoint()
                break
            st.population = st._next_generation()
            st.generation += 1
            st._checkpoint()
        return _DONE

    def _receive_search(self, params: dict[str, Any], value: dict[str, Any], error: str | None = None) -> None:
        import math

        st = self.strategy
        h = params["hash"]
        self._in_flight.pop(h, None)
        if h in st.cache:
            return
        rec: dict[str, Any] = {"hash": h, "sample": st.canonical(params["arch"]), "generation": params["generation"]}
        fit = value.get("default")
        if error is None and isinstance(fit, (int, float)) and math.isfinite(fit):
            rec.update(status="trained", fitness=float(fit),
                       metrics={k: v for k, v in value.items() if k not in ("default", "history")},
                       history=value.get("history"))
        else:
            reason = error or f"the trial reported no numeric final 'default' metric (got {fit!r})"
            err_file = self.rd / "trial_errors" / f"{h}.txt"
            if err_file.exists():
                reason = err_file.read_text().splitlines()[0][:500]
            rec.update(status="failed", fitness=None, error=reason)
        st._record(rec)
        st._checkpoint()

    def _search_finalists(self) -> list[dict[str, Any]]:
        return self.strategy.finalists()


def _experiment_params() -> dict[str, Any]:
    """The experiment config that NNI's manager passes to the dispatcher (``--exp_params``, base64 JSON)."""
    import base64
    import json
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

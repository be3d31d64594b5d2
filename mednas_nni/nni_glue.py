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

The run directory is shared through the file system, so this works with NNI's ``local`` training service
(and a remote one only with a shared folder).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from nni.tuner import Tuner

__all__ = ["MedNASTuner", "register_tuners", "TUNERS"]

_logger = logging.getLogger(__name__)

TUNERS = {"MedNASTuner": "mednas_nni.nni_glue.MedNASTuner"}


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


class MedNASTuner(Tuner):
    """NNI tuner that runs a mednas zero-cost search generation by generation as NNI trials.

    Args:
        config: path of a mednas YAML config: absolute, or relative to the experiment's ``trialCodeDirectory``
            (which nnictl resolves against the nnictl YAML's folder).
        overrides: dotted ``KEY=VALUE`` overrides, as on the ``mednas search`` command line.
    """

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
        if cfg.strategy.name != "zc_nsga2":
            raise ConfigError(f"{config}: strategy.name: MedNASTuner drives 'zc_nsga2', got '{cfg.strategy.name}'")
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
        self._restore()
        self._ready = True
        _logger.info("MedNASTuner: run directory %s (%s)", self.rd.path, "new" if fresh else "resumed")

    # ------------------------------------------------------------------ state
    def _restore(self) -> None:
        import torch

        from .io import RunDir, append_jsonl, atomic_torch_save, read_jsonl

        if (self.rd / RunDir.STATE).exists():
            self.strategy.load_state_dict(torch.load(self.rd / RunDir.STATE, weights_only=False))
        for rec in read_jsonl(self.rd / RunDir.ARCHS):
            self.strategy.cache.setdefault(rec["hash"], rec)
        self.strategy.on_record = lambda rec: append_jsonl(self.rd / RunDir.ARCHS, rec)
        self.strategy.on_generation = lambda s: atomic_torch_save(s.state_dict(), self.rd / RunDir.STATE)
        self._space = self.ctx.build_space()
        from mednas_nni.strategies._utils import categorical_space

        self._labels = categorical_space(self._space)
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
            if parameters.get("mednas") == "score":
                self._receive_scores(parameters, value if isinstance(value, dict) else {})
            elif parameters.get("mednas") == "retrain":
                self._receive_retrain(parameters, value if isinstance(value, dict) else {})
            self._spend_credit()

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        with self._lock:
            self._setup()
            params = self._outstanding.pop(parameter_id, None)
            if params is not None:  # ended without a final result: failed or killed (USER_CANCELED)
                if params["mednas"] == "score":
                    self._receive_scores(params, {}, error="the scoring trial failed or was killed")
                else:
                    self._receive_retrain(params, {}, error="the retraining trial failed or was killed")
            self._spend_credit()

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
        from mednas_nni.strategies._utils import arch_hash

        from .io import RunDir

        while self._finalists is None:
            if self._gen_samples is not None:
                return None                                     # a generation is being scored
            samples = self.strategy.ask_generation(self._labels)
            if samples is None:                                 # search finished
                self._finish_search()
                break
            todo = []
            for s in samples:
                h = arch_hash(s)
                if h in self.strategy.cache:
                    self.strategy.cache_hits += 1
                elif s not in todo:
                    todo.append(s)
            self._gen_samples = samples
            if not todo:                                        # all cached (resume): tell at once
                self.strategy.tell_generation(samples)
                self._gen_samples = None
                continue
            params = {"mednas": "score", "generation": self.strategy.generation, "archs": todo,
                      "run_dir": str(self.rd.path)}
            self._outstanding[pid] = params
            return params
        for i, fin in enumerate(self._finalists):
            if i not in self._issued_finalists:
                self._issued_finalists.add(i)
                params = {"mednas": "retrain", "finalist": i, "arch": fin["sample"], "run_dir": str(self.rd.path)}
                self._outstanding[pid] = params
                return params
        return None

    def _finish_search(self) -> None:
        from mednas_nni.strategies._report import write_pareto

        from .io import atomic_write_json

        self._finalists = self.strategy.finalists()
        write_pareto(self.rd, self.strategy, self._finalists)
        atomic_write_json(self.rd / "finalists.json", self._finalists)
        self.rd.set_status(phase="retrain", n_finalists=len(self._finalists))
        _logger.info("search finished: %d finalists", len(self._finalists))

    def _receive_scores(self, params: dict[str, Any], value: dict[str, Any], error: str | None = None) -> None:
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

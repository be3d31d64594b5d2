"""From a config to results: build the plugins, run the search, retrain the finalists, write the run directory.

The data path of a run: config -> registry (data set, task, search space, strategy, exporter plugins) -> search
(a multi-trial strategy on one of the engines of :mod:`mednas_nni.engines`, or a one-shot strategy's ``search``)
-> finalists retrained and tested through the task -> run directory -> exporter. Phases (in ``status.json`` so
``mednas resume`` knows where to go on):

1. ``search``: progress is persisted as it goes (``archs.jsonl``, ``strategy_state.json``), so a resumed search
   evaluates nothing twice.
2. ``retrain``: each finalist is trained with the evaluator recipe through ``task.fit``; ``finalists/<i>/result.json``
   marks one as done (a resumed run skips it).
3. ``done``: the finalist with the best validation score (``evaluator.select_by``) is tested once; ``best_arch.json``,
   ``best.pt`` and ``metrics.json`` (with the task's trivial baseline) are written, plus the task's figures
   (segmentation: ``overlays.png``); the exporter runs if the config has an ``export`` section.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig, dump_config, load_config
from .errors import ConfigError, MedNASError, RunDirError, SearchError, TrainingDivergedError
from .io import RunDir, SearchClock, atomic_write_json, atomic_write_text, check_out_dir, read_jsonl
from .registry import get_plugin
from .finalists import FAILED, choose_best, retrain_finalist
from .trained_run import _read_json, load_trained, load_trained_model, load_weights

__all__ = ["RunContext", "run_search", "resume_search", "start_run_dir", "load_weights", "build_dataset",
           "build_task", "build_space", "build_strategy", "load_trained", "load_trained_model", "resolve_device",
           "seed_everything", "retrain_finalist", "choose_best"]

_logger = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device: expected 'auto' or 'cpu' on this machine (no CUDA device), got {name!r}")
    return name


def seed_everything(seed: int, deterministic: bool = True) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False


def build_dataset(cfg: ExperimentConfig) -> Any:
    return get_plugin("datasets", cfg.data.name)(**dict(cfg.data.params))


def build_task(cfg: ExperimentConfig, dataset: Any) -> Any:
    name = cfg.task.name if cfg.task is not None else dataset.default_task
    params = dict(cfg.task.params) if cfg.task is not None else {}
    return get_plugin("tasks", name)(dataset.info, **params)


def build_space(cfg: ExperimentConfig, dataset: Any, task: Any = None) -> Any:
    info = dataset.info
    cls = get_plugin("search_spaces", cfg.space.name)
    task_name = task.name if task is not None else info.task
    supported = cls.tasks
    if task_name not in supported:
        raise ConfigError(f"{cfg.source}: space.name: '{cfg.space.name}' builds networks for "
                          f"{' and '.join(supported)}, got data set '{info.name}' with task '{task_name}'")
    return cls(spatial_dims=info.spatial_dims, in_channels=info.in_channels, out_channels=info.out_channels,
               image_size=info.image_size, **dict(cfg.space.params))


def build_strategy(cfg: ExperimentConfig) -> Any:
    cls = get_plugin("strategies", cfg.strategy.name)
    params = dict(cfg.strategy.params)
    if "seed" in getattr(cls.Params, "model_fields", {}) and params.get("seed") is None:
        params["seed"] = cfg.run.seed
    return cls(**params)


@dataclass
class RunContext:
    """Everything a strategy, a trial or an exporter may use: the config, the run directory, the data set, the
    task and the device."""

    cfg: ExperimentConfig
    run_dir: RunDir
    dataset: Any
    task: Any
    device: str
    progress: bool = True
    _proxy_cache: dict[int, Any] = field(default_factory=dict)
    #: tells the user one line as the run goes (the CLI prints it to stderr); None: the log only
    announce: Any = None
    #: search time over every session of the run (set while the search phase runs)
    search_clock: SearchClock | None = None

    def say(self, line: str) -> None:
        """Log ``line`` and show it to the user (``announce``)."""
        _logger.info("%s", line)
        if self.announce is not None:
            self.announce(line)

    @classmethod
    def build(cls, cfg: ExperimentConfig, run_dir: RunDir) -> RunContext:
        dataset = build_dataset(cfg)
        task = build_task(cfg, dataset)
        ctx = cls(cfg, run_dir, dataset, task, resolve_device(cfg.run.device), cfg.run.progress)
        ctx.select_key   # a bad select_by fails now, before any search
        return ctx

    def build_space(self) -> Any:
        return build_space(self.cfg, self.dataset, self.task)

    @property
    def select_key(self) -> str:
        """The metric the finalists are compared by (``evaluator.select_by`` without ``val_``)."""
        try:
            return self.task.select_key(self.cfg.evaluator.select_by)
        except ConfigError as e:
            raise ConfigError(f"{self.cfg.source}: {e}") from None

    def proxy_batch(self, n: int) -> tuple[Any, Any]:
        """One fixed batch of real training images (seeded by ``run.seed``) for zero-cost proxies."""
        import torch

        if n not in self._proxy_cache:
            ds = self.dataset.dataset("train", augment=False)
            rng = np.random.default_rng(self.cfg.run.seed)
            idx = rng.choice(len(ds), size=min(n, len(ds)), replace=False)
            items = [ds[int(i)] for i in idx]
            self._proxy_cache[n] = (torch.stack([it["image"] for it in items]).float(),
                                    torch.stack([torch.as_tensor(it["label"]) for it in items]).long())
        return self._proxy_cache[n]


def _attach_log(rd: RunDir) -> logging.Handler:
    h = logging.FileHandler(rd / RunDir.LOG, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(h)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return h


def run_search(cfg: ExperimentConfig, run_dir: RunDir | None = None, announce: Any = None) -> RunDir:
    """Run a whole experiment (or continue one in ``run_dir``); returns the run directory.

    ``announce(line)`` is told the run directory as soon as it exists and, on resume, what was restored. A new run
    that fails before its first result (a bad data file, say) leaves no run directory behind.
    """
    from .run_identity import check_identity

    fresh = run_dir is None
    rd = start_run_dir(cfg) if fresh else run_dir
    try:
        if not fresh:
            check_identity(rd, cfg)
        if announce is not None and fresh:
            announce(f"run directory: {rd.path} ({cfg.strategy.name} on {cfg.space.name} / {cfg.data.name}, "
                     f"{cfg.source})")
        handler = _attach_log(rd)
        try:
            _logger.info("%s run directory %s", "starting" if fresh else "resuming", rd.path)
            return _run_phases(cfg, rd, announce)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
    except BaseException:
        if fresh and rd.path.is_dir() and not rd.has_results():
            import shutil

            shutil.rmtree(rd.path, ignore_errors=True)      # nothing to resume: leave no empty run behind
        raise


def start_run_dir(cfg: ExperimentConfig) -> RunDir:
    """A new run directory for ``cfg``: ``config.resolved.yaml``, ``run.json`` (version and config) and the
    ``search`` phase. A folder that cannot be made fails here, before any work (one line)."""
    from .run_identity import write_identity

    check_out_dir(cfg.run.out_dir)
    rd = RunDir.create(cfg.run.out_dir, cfg.run_name())
    try:
        atomic_write_text(rd / RunDir.CONFIG, dump_config(cfg))
        write_identity(rd, cfg)
        rd.set_status(phase="search", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    except BaseException:
        import shutil

        shutil.rmtree(rd.path, ignore_errors=True)
        raise
    return rd


def _search(ctx: RunContext) -> list[dict[str, Any]]:
    from .engines.records import arch_hash

    strategy = build_strategy(ctx.cfg)
    if getattr(strategy, "family", None) == "multi-trial":
        from .engines.multi_trial import run_multi_trial

        return run_multi_trial(strategy, ctx)
    if getattr(strategy, "family", None) == "one-shot":
        space = ctx.build_space()
        finalists = strategy.search(space, ctx.task, ctx.dataset, ctx)
        out = []
        for fin in finalists:
            sample = space.canonicalize(fin["sample"])
            out.append({**fin, "sample": sample, "hash": arch_hash(sample), "describe": space.describe(sample)})
        return out
    raise ConfigError(f"{ctx.cfg.source}: strategy.name: '{ctx.cfg.strategy.name}' is neither a multi-trial nor a "
                      f"one-shot strategy (got {type(strategy).__name__})")


def _run_phases(cfg: ExperimentConfig, rd: RunDir, announce: Any = None) -> RunDir:
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    ctx = RunContext.build(cfg, rd)
    ctx.announce = announce
    status = rd.status()
    if status.get("phase", "search") == "search":
        ctx.search_clock = SearchClock(rd)
        try:
            finalists = _search(ctx)
        finally:
            ctx.search_clock.flush()
            ctx.search_clock = None
        if not finalists:
            recs = read_jsonl(rd / RunDir.ARCHS)
            reason = next((r.get("error") for r in recs if r.get("status") == "failed"), "no architecture scored")
            raise SearchError(f"{rd.path}: the search produced no finalist ({len(recs)} evaluated, all failed); "
                              f"first reason: {reason}")
        atomic_write_json(rd / "finalists.json", finalists)
        rd.set_status(phase="retrain", n_finalists=len(finalists))
    elif status.get("phase") == "retrain":
        ctx.say(_retrain_progress(rd, status))
    finalists = _read_json(rd / "finalists.json")
    if rd.status().get("phase") == "retrain":
        for i, fin in enumerate(finalists):
            fdir = rd / "finalists" / str(i)
            if (fdir / "result.json").exists() or (fdir / FAILED).exists():
                _logger.info("finalist %d already %s; skipping", i,
                             "retrained" if (fdir / "result.json").exists() else "failed")
                continue
            try:
                retrain_finalist(ctx, i, fin, n_finalists=len(finalists))
            except TrainingDivergedError:
                continue                      # recorded in finalists/<i>/failed.json and search.log
        done = [(rd / "finalists" / str(i) / "result.json").exists() for i in range(len(finalists))]
        if not any(done):
            reasons = "; ".join(f"finalist {i}: {_read_json(rd / 'finalists' / str(i) / FAILED).get('error')}"
                                for i in range(len(finalists)) if (rd / "finalists" / str(i) / FAILED).exists())
            raise SearchError(f"{rd.path}: every finalist failed to retrain ({reasons[:400]}); fix the evaluator "
                              "section (e.g. a lower evaluator.lr) and start a new search")
        choose_best(ctx, finalists, available=done)
        rd.set_status(phase="export" if cfg.export else "done")
    if cfg.export and rd.status().get("phase") == "export":
        exporter = get_plugin("exporters", cfg.export.name)(**dict(cfg.export.params))
        report = exporter.export(load_trained(rd.path, ctx=ctx), rd / "export")
        atomic_write_json(rd / "export_report.json", report)
        rd.set_status(phase="done")
    if rd.status().get("phase") == "done":
        from .report import write_run_report     # report.md, report.html, environment.json
        write_run_report(rd.path, seed=cfg.run.seed, device=ctx.device)
    return rd


def _retrain_progress(rd: RunDir, status: dict[str, Any]) -> str:
    n = int(status.get("n_finalists") or 0)
    done = sum((rd / "finalists" / str(i) / "result.json").exists() for i in range(n))
    secs = status.get("search_seconds")
    took = f" in {secs:.0f} s" if isinstance(secs, (int, float)) else ""
    return f"resuming: search finished{took}; {done} of {n} finalist(s) retrained"


def resume_search(path: str | Path, progress: bool | None = None, announce: Any = None) -> RunDir:
    """Continue an interrupted run from its ``config.resolved.yaml`` and saved progress.

    Temporary files a killed write left are removed first. The run must be continued by the mednas-nni version
    that started it, with the config it started with (:mod:`~mednas_nni.run_identity`); ``progress`` (None: as
    the config says) only changes the progress bars.
    """
    rd = RunDir.open(path)
    rd.remove_stale_temps()
    if rd.status().get("phase") == "done":
        _logger.info("%s is already complete; nothing to resume", rd.path)
        return rd
    try:
        cfg = load_config(rd / RunDir.CONFIG)
    except MedNASError as e:
        raise RunDirError(f"{rd / RunDir.CONFIG}: cannot resume: {e}") from None
    if progress is not None:
        cfg.run.progress = progress
    return run_search(cfg, rd, announce=announce)

"""From a config to results: build the plugins, run the search, retrain the finalists, write the run directory.

Phases (recorded in ``status.json`` so ``mednas resume`` knows where to go on):

1. ``search``: the strategy plugin's :meth:`~mednas_nni.plugins.SearchDriver.run_search`; it persists its own
   progress (``archs.jsonl``, ``strategy_state.pt``) so a resumed search evaluates nothing twice.
2. ``retrain``: each finalist is trained with the evaluator recipe; ``finalists/<i>/result.json`` marks one
   as done (a resumed run skips it).
3. ``done``: the finalist with the best validation score is tested once; ``best_arch.json``, ``best.pt`` and
   ``metrics.json`` are written; the exporter runs if the config has an ``export`` section.
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
from .errors import ConfigError, MedNASError, RunDirError, SearchError
from .io import RunDir, atomic_torch_save, atomic_write_json, atomic_write_text, read_jsonl
from .registry import get_plugin

__all__ = ["RunContext", "run_search", "resume_search", "build_dataset", "build_space", "build_strategy",
           "load_trained_model", "resolve_device", "seed_everything"]

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


def _params(spec: Any) -> dict[str, Any]:
    return dict(spec.params)


def build_dataset(cfg: ExperimentConfig) -> Any:
    cls = get_plugin("datasets", cfg.data.name)
    return cls(**_params(cfg.data))


def build_space(cfg: ExperimentConfig, dataset: Any) -> Any:
    info = dataset.info
    cls = get_plugin("search_spaces", cfg.space.name)
    return cls(in_channels=info.in_channels, num_classes=info.num_classes, **_params(cfg.space))


def build_strategy(cfg: ExperimentConfig) -> Any:
    cls = get_plugin("strategies", cfg.strategy.name)
    params = _params(cfg.strategy)
    if "seed" in getattr(cls.Params, "model_fields", {}) and params.get("seed") is None:
        params["seed"] = cfg.run.seed
    return cls(**params)


@dataclass
class RunContext:
    """Everything a strategy's ``run_search`` may use."""

    cfg: ExperimentConfig
    run_dir: RunDir
    dataset: Any
    device: str
    progress: bool = True
    _proxy_cache: dict[int, Any] = field(default_factory=dict)

    def build_space(self) -> Any:
        return build_space(self.cfg, self.dataset)

    def proxy_batch(self, n: int) -> tuple[Any, Any]:
        """One fixed batch of real training images (seeded by ``run.seed``) for zero-cost proxies."""
        import torch

        if n not in self._proxy_cache:
            ds = self.dataset.dataset("train", augment=False)
            rng = np.random.default_rng(self.cfg.run.seed)
            idx = rng.choice(len(ds), size=min(n, len(ds)), replace=False)
            items = [ds[int(i)] for i in idx]
            self._proxy_cache[n] = (torch.stack([x for x, _ in items]).float(),
                                    torch.stack([torch.as_tensor(y) for _, y in items]).long())
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


def run_search(cfg: ExperimentConfig, run_dir: RunDir | None = None) -> RunDir:
    """Run a whole experiment (or continue one in ``run_dir``); returns the run directory."""
    fresh = run_dir is None
    rd = run_dir or RunDir.create(cfg.run.out_dir, cfg.run_name())
    if fresh:
        atomic_write_text(rd / RunDir.CONFIG, dump_config(cfg))
        rd.set_status(phase="search", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    handler = _attach_log(rd)
    try:
        _logger.info("%s run directory %s", "starting" if fresh else "resuming", rd.path)
        return _run_phases(cfg, rd)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run_phases(cfg: ExperimentConfig, rd: RunDir) -> RunDir:
    seed_everything(cfg.run.seed, cfg.run.deterministic)
    device = resolve_device(cfg.run.device)
    dataset = build_dataset(cfg)
    ctx = RunContext(cfg, rd, dataset, device, cfg.run.progress)
    status = rd.status()
    t_search = status.get("search_seconds", 0.0)
    if status.get("phase", "search") == "search":
        strategy = build_strategy(cfg)
        t0 = time.perf_counter()
        finalists = strategy.run_search(ctx)
        t_search += time.perf_counter() - t0
        if not finalists:
            recs = read_jsonl(rd / RunDir.ARCHS)
            reason = next((r.get("error") for r in recs if r.get("status") == "failed"), "no architecture scored")
            raise SearchError(f"{rd.path}: the search produced no finalist ({len(recs)} evaluated, all failed); "
                              f"first reason: {reason}")
        atomic_write_json(rd / "finalists.json", finalists)
        rd.set_status(phase="retrain", search_seconds=t_search, n_finalists=len(finalists))
    finalists = _read_json(rd / "finalists.json")
    if rd.status().get("phase") == "retrain":
        _retrain_all(ctx, finalists)
        _choose_best(ctx, finalists)
        rd.set_status(phase="export" if cfg.export else "done")
    if cfg.export and rd.status().get("phase") == "export":
        exporter = get_plugin("exporters", cfg.export.name)(**_params(cfg.export))
        report = exporter.export(rd, rd / "export")
        atomic_write_json(rd / "export_report.json", report)
        rd.set_status(phase="done")
    return rd


def _read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: expected this file in the run directory, got none") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: expected JSON, got a damaged file ({e})") from None


def _retrain_all(ctx: RunContext, finalists: list[dict[str, Any]]) -> None:
    for i, fin in enumerate(finalists):
        if (ctx.run_dir / "finalists" / str(i) / "result.json").exists():
            _logger.info("finalist %d already retrained; skipping", i)
            continue
        retrain_finalist(ctx, i, fin, n_finalists=len(finalists))


def retrain_finalist(ctx: RunContext, i: int, fin: dict[str, Any], n_finalists: int = 1,
                     on_epoch: Any = None) -> dict[str, Any]:
    """Retrain finalist ``i`` with the evaluator recipe; write ``finalists/<i>/model.pt`` and ``result.json``."""
    from .evaluators.classification import train_classifier

    ev, info = ctx.cfg.evaluator, ctx.dataset.info
    fdir = ctx.run_dir / "finalists" / str(i)
    seed_everything(ctx.cfg.run.seed + i, ctx.cfg.run.deterministic)
    model = ctx.build_space().freeze(fin["sample"])
    t0 = time.perf_counter()
    out = train_classifier(
        model, ctx.dataset.dataset("train", augment=ev.augment), ctx.dataset.dataset("val"), info.task,
        epochs=ev.epochs, batch_size=ev.batch_size, lr=ev.lr, weight_decay=ev.weight_decay,
        milestones=tuple(ev.milestones), gamma=ev.gamma, select_by=ev.select_by, device=ctx.device,
        seed=ctx.cfg.run.seed + i, num_workers=ev.num_workers, max_batches_per_epoch=ev.max_batches_per_epoch,
        on_epoch=on_epoch, progress=ctx.progress, desc=f"retrain finalist {i + 1}/{n_finalists}",
        bn_batches=ev.bn_batches)
    atomic_torch_save(out["best_state"], fdir / "model.pt")
    result = {"hash": fin["hash"], "sample": fin["sample"], "chosen_as": fin.get("chosen_as"),
              "best_epoch": out["best_epoch"], "val": out["val"], "history": out["history"],
              "seconds": time.perf_counter() - t0, "params": int(sum(p.numel() for p in model.parameters()))}
    atomic_write_json(fdir / "result.json", result)
    _logger.info("finalist %d: val auc %.4f acc %.4f (epoch %d)", i, out["val"]["auc"], out["val"]["acc"],
                 out["best_epoch"])
    return result


def _choose_best(ctx: RunContext, finalists: list[dict[str, Any]], available: list[bool] | None = None) -> None:
    import shutil

    import torch

    from .evaluators.classification import evaluate_classifier, majority_baseline

    ev, info = ctx.cfg.evaluator, ctx.dataset.info
    key = ev.select_by.removeprefix("val_")
    idx = [i for i in range(len(finalists)) if available is None or available[i]]
    results = {i: _read_json(ctx.run_dir / "finalists" / str(i) / "result.json") for i in idx}
    best_i = max(idx, key=lambda i: (results[i]["val"][key], -i))
    best = results[best_i]
    space = ctx.build_space()
    model = space.freeze(best["sample"])
    model.load_state_dict(torch.load(ctx.run_dir / "finalists" / str(best_i) / "model.pt", weights_only=True))
    from torch.utils.data import DataLoader

    test = evaluate_classifier(model.to(ctx.device), DataLoader(ctx.dataset.dataset("test"), batch_size=256),
                               info.task, ctx.device)
    y_train, y_test = ctx.dataset.arrays("train")[1], ctx.dataset.arrays("test")[1]
    shutil.copyfile(ctx.run_dir / "finalists" / str(best_i) / "model.pt", ctx.run_dir / ".best.pt.tmp")
    (ctx.run_dir / ".best.pt.tmp").replace(ctx.run_dir / RunDir.BEST_WEIGHTS)
    atomic_write_json(ctx.run_dir / RunDir.BEST_ARCH, best["sample"])
    archs = read_jsonl(ctx.run_dir / RunDir.ARCHS)
    status = ctx.run_dir.status()
    metrics = {
        "dataset": info.name, "task": info.task, "space": ctx.cfg.space.name, "strategy": ctx.cfg.strategy.name,
        "best_finalist": best_i, "selected_by": ev.select_by, "best_epoch": best["best_epoch"],
        "val": best["val"], "test": test,
        "majority_baseline_test": majority_baseline(y_train, y_test, info.task),
        "params": best["params"],
        "finalists": [{"index": i, "chosen_as": r.get("chosen_as"), "hash": r["hash"], "val": r["val"],
                       "best_epoch": r["best_epoch"], "params": r["params"]} for i, r in results.items()],
        "search": {"evaluated": sum(r.get("status") != "invalid" for r in archs),
                   "failed": sum(r.get("status") == "failed" for r in archs),
                   "pruned": sum(r.get("status") == "invalid" for r in archs),
                   "seconds": status.get("search_seconds")},
        "retrain": {"epochs": ev.epochs, "seconds": sum(r["seconds"] for r in results.values())},
        "device": ctx.device, "seed": ctx.cfg.run.seed,
    }
    atomic_write_json(ctx.run_dir / RunDir.METRICS, metrics)


def resume_search(path: str | Path) -> RunDir:
    """Continue an interrupted run from its ``config.resolved.yaml`` and saved progress."""
    rd = RunDir.open(path)
    phase = rd.status().get("phase")
    if phase == "done":
        _logger.info("%s is already complete; nothing to resume", rd.path)
        return rd
    try:
        cfg = load_config(rd / RunDir.CONFIG)
    except MedNASError as e:
        raise RunDirError(f"{rd / RunDir.CONFIG}: cannot resume: {e}") from None
    return run_search(cfg, rd)


def load_trained_model(path: str | Path) -> tuple[Any, ExperimentConfig, Any]:
    """``(model, cfg, dataset)`` for a finished run: the frozen best architecture with its trained weights."""
    import torch

    rd = RunDir.open(path)
    for f in (RunDir.BEST_ARCH, RunDir.BEST_WEIGHTS):
        if not (rd / f).is_file():
            raise RunDirError(f"{rd.path}: expected {f} (written when a run finishes), got none; "
                              f"finish the run with 'mednas resume {rd.path}'")
    cfg = load_config(rd / RunDir.CONFIG)
    dataset = build_dataset(cfg)
    model = build_space(cfg, dataset).freeze(_read_json(rd / RunDir.BEST_ARCH))
    try:
        model.load_state_dict(torch.load(rd / RunDir.BEST_WEIGHTS, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001 - a damaged or foreign weights file
        raise RunDirError(f"{rd / RunDir.BEST_WEIGHTS}: expected the state_dict of best_arch.json, got an "
                          f"incompatible file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return model.eval(), cfg, dataset

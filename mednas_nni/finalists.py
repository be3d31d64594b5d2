"""The retrain and done phases of a run: each finalist retrained through its task, then the best by validation
score tested once (``best_arch.json``, ``best.pt``, ``metrics.json`` and the task's figures).

Split from :mod:`mednas_nni.experiment`, which runs the phases and re-exports both functions.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .errors import TrainingDivergedError
from .io import RunDir, atomic_torch_save, atomic_write_bytes, atomic_write_json, read_jsonl
from .trained_run import _read_json, load_weights

if TYPE_CHECKING:  # pragma: no cover
    from .experiment import RunContext

__all__ = ["FAILED", "retrain_finalist", "choose_best"]

_logger = logging.getLogger(__name__)

#: ``finalists/<i>/failed.json``: the finalist's retraining failed (``{"error": reason}``); it is not retried
FAILED = "failed.json"


def retrain_finalist(ctx: RunContext, i: int, fin: dict[str, Any], n_finalists: int = 1,
                     on_epoch: Any = None) -> dict[str, Any]:
    """Retrain finalist ``i`` through the task; write ``finalists/<i>/model.pt`` and ``result.json``.

    Raises:
        TrainingDivergedError: the loss became NaN/inf or exploded (:mod:`~mednas_nni.engines.divergence`);
            ``finalists/<i>/failed.json`` records why, and a resumed run does not retrain it again.
    """
    from .engines.divergence import divergence_reason
    from .experiment import seed_everything     # experiment imports this module: imported when called

    fdir = ctx.run_dir / "finalists" / str(i)
    seed_everything(ctx.cfg.run.seed + i, ctx.cfg.run.deterministic)
    model = ctx.build_space().freeze(fin["sample"])
    t0 = time.perf_counter()
    hint = "lower the learning rate (evaluator.lr)"
    try:
        out = ctx.task.fit(model, ctx.dataset, ctx.cfg.evaluator, device=ctx.device, seed=ctx.cfg.run.seed + i,
                           on_epoch=on_epoch, progress=ctx.progress, desc=f"retrain finalist {i + 1}/{n_finalists}")
        reason = divergence_reason(out["history"], hint)
    except FloatingPointError as e:      # a NaN/inf loss: recorded, the other finalists go on
        out, reason = None, f"diverged: {e}"
    if reason is not None:
        _logger.info("finalist %d failed to retrain (recorded in %s; the other finalists go on): %s", i,
                        fdir / FAILED, reason)
        atomic_write_json(fdir / FAILED, {"hash": fin["hash"], "error": reason,
                                          "seconds": time.perf_counter() - t0})
        raise TrainingDivergedError(f"finalist {i}: {reason}")
    atomic_torch_save(out["best_state"], fdir / "model.pt")
    result = {"hash": fin["hash"], "sample": fin["sample"], "chosen_as": fin.get("chosen_as"),
              "best_epoch": out["best_epoch"], "val": out["val"], "history": out["history"],
              "seconds": time.perf_counter() - t0, "params": int(sum(p.numel() for p in model.parameters()))}
    atomic_write_json(fdir / "result.json", result)
    key = ctx.select_key
    _logger.info("finalist %d: val %s %.4f (epoch %d)", i, key, out["val"][key], out["best_epoch"])
    return result


def choose_best(ctx: RunContext, finalists: list[dict[str, Any]], available: list[bool] | None = None) -> None:
    """Pick the finalist with the best validation score, test it once, write best_arch/best.pt/metrics.json."""
    from torch.utils.data import DataLoader

    key, info, rd = ctx.select_key, ctx.dataset.info, ctx.run_dir
    idx = [i for i in range(len(finalists)) if available is None or available[i]]
    results = {i: _read_json(rd / "finalists" / str(i) / "result.json") for i in idx}
    best_i = max(idx, key=lambda i: (results[i]["val"][key], -i))
    best = results[best_i]
    model = ctx.build_space().freeze(best["sample"])
    model.load_state_dict(load_weights(rd / "finalists" / str(best_i) / "model.pt"))
    model = model.to(ctx.device)
    test = ctx.task.evaluate(model, DataLoader(ctx.dataset.dataset("test"), batch_size=256), ctx.device)
    atomic_write_bytes(rd / RunDir.BEST_WEIGHTS, (rd / "finalists" / str(best_i) / "model.pt").read_bytes())
    atomic_write_json(rd / RunDir.BEST_ARCH, best["sample"])
    archs = read_jsonl(rd / RunDir.ARCHS)
    status = rd.status()
    metrics = {
        "dataset": info.name, "task": ctx.task.name, "space": ctx.cfg.space.name, "strategy": ctx.cfg.strategy.name,
        "best_finalist": best_i, "selected_by": f"val_{key}", "best_epoch": best["best_epoch"],
        "val": best["val"], "test": test, "baseline_test": ctx.task.baseline(ctx.dataset, "test"),
        "params": best["params"], "flops": _flops(model, info),
        "finalists": [{"index": i, "chosen_as": r.get("chosen_as"), "hash": r["hash"], "val": r["val"],
                       "best_epoch": r["best_epoch"], "params": r["params"]} for i, r in results.items()],
        "failed_finalists": [{"index": i, "error": _read_json(rd / "finalists" / str(i) / FAILED).get("error")}
                             for i in range(len(finalists)) if (rd / "finalists" / str(i) / FAILED).exists()],
        "search": {"evaluated": sum(r.get("status") in ("ok", "failed") for r in archs),
                   "failed": sum(r.get("status") == "failed" for r in archs),
                   "pruned": sum(r.get("status") == "invalid" for r in archs),
                   "seconds": status.get("search_seconds"), "sessions": status.get("search_sessions", 1)},
        "retrain": {"epochs": ctx.cfg.evaluator.epochs, "seconds": sum(r["seconds"] for r in results.values())},
        "device": ctx.device, "seed": ctx.cfg.run.seed,
    }
    from .report import add_detailed_metrics    # CIs, confusion matrix, operating threshold, calibration
    add_detailed_metrics(metrics, ctx.task, model, ctx.dataset, ctx.device, ctx.cfg.run.seed)
    atomic_write_json(rd / RunDir.METRICS, metrics)
    figures = ctx.task.write_figures(model, ctx.dataset, rd, ctx.device)
    for f in figures:
        _logger.info("wrote %s", f)


def _flops(model: Any, info: Any) -> float | None:
    """FLOPs of one image (torch's counter: 2 per multiply-accumulate); None if the input size is unknown."""
    import torch

    from .evaluators.zero_cost_proxies import flops

    if not info.image_size:
        return None
    x = torch.zeros(1, info.in_channels, info.image_size, info.image_size, device=next(model.parameters()).device)
    return flops(model, x)

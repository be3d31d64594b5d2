"""NNI trial entry point for :class:`~mednas_nni.nni_glue.MedNASTuner` (``python -m mednas_nni.nni_trial``).

The tuner's parameters say what to do: ``{"mednas": "score", "archs": [...]}`` scores a generation with the
zero-cost proxies; ``{"mednas": "genas", "arch": {...}}`` trains one GeNAS individual;
``{"mednas": "retrain", "finalist": i, "arch": {...}}`` retrains one finalist.
Both read the run's ``config.resolved.yaml`` from ``run_dir``.
"""
from __future__ import annotations

import logging
import math
import sys
from typing import Any

_logger = logging.getLogger(__name__)


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    # NNI stores metrics as JSON; NaN/inf are not valid JSON for the web UI.
    return {k: v for k, v in d.items() if not (isinstance(v, float) and not math.isfinite(v))}


def run_score(params: dict[str, Any], ctx: Any, strategy: Any) -> dict[str, Any]:
    import nni

    from mednas_nni.strategies._utils import arch_hash
    from mednas_nni.strategies.zc_nsga2 import score_model

    inputs, targets = ctx.proxy_batch(strategy.params.proxy_batch_size)
    space = ctx.build_space()
    first = strategy.objectives[0].name
    archs = []
    for sample in params["archs"]:
        scores = score_model(space.freeze(sample), inputs, targets, strategy._proxies(), ctx.device,
                             init_seed=strategy.seed)
        scores = _finite(scores)
        if first in scores and "error" not in scores:
            nni.report_intermediate_result({"default": scores[first],
                                            **{k: v for k, v in scores.items() if k != first}})
        archs.append({"hash": arch_hash(sample), **scores})
    ok = [a for a in archs if "error" not in a and first in a]
    final: dict[str, Any] = {"default": max((a[first] for a in ok), default=0.0), "scored": len(ok),
                             "failed": len(archs) - len(ok), "generation": params["generation"]}
    for o in strategy.objectives[1:]:
        vals = [a[o.name] for a in ok if o.name in a]
        if vals:
            final[f"{'best' if o.goal == 'max' else 'min'}_{o.name}"] = max(vals) if o.goal == "max" else min(vals)
    final["archs"] = archs   # read by the tuner; the web UI plots the numeric keys only
    return final


def run_genas(params: dict[str, Any], ctx: Any, strategy: Any) -> dict[str, Any]:
    """Train one GeNAS individual: the same evaluator function ``mednas search`` runs (per-epoch reports)."""
    if strategy.params.seed is None:
        strategy._set_seed(int(ctx.cfg.run.seed))
    evaluator = strategy._evaluator(ctx)
    model = ctx.build_space().freeze(params["arch"])
    return evaluator.function(model, **evaluator.arguments)


def run_retrain(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    import nni

    from mednas_nni.experiment import retrain_finalist

    def on_epoch(epoch: int, rec: dict[str, float]) -> None:
        nni.report_intermediate_result({"default": rec["val_auc"], "val_acc": rec["val_acc"],
                                        "train_loss": rec["train_loss"], "epoch": epoch})

    fin = {"sample": params["arch"], "hash": None, "chosen_as": None}
    import json

    fins = json.loads((ctx.run_dir / "finalists.json").read_text())
    fin = fins[params["finalist"]]
    res = retrain_finalist(ctx, params["finalist"], fin, n_finalists=len(fins), on_epoch=on_epoch)
    return {"default": res["val"]["auc"], "val_acc": res["val"]["acc"], "best_epoch": res["best_epoch"],
            "params": res["params"]}


def main() -> int:
    import nni

    from mednas_nni.config import load_config
    from mednas_nni.experiment import RunContext, build_dataset, build_strategy, resolve_device
    from mednas_nni.io import RunDir

    logging.basicConfig(level=logging.INFO)
    params = nni.get_next_parameter()
    if not params or "mednas" not in params:
        _logger.error("mednas trial: expected parameters from MedNASTuner or GeNASTuner, got none")
        return 2
    rd = RunDir.open(params["run_dir"])
    cfg = load_config(rd / RunDir.CONFIG)
    cfg.run.progress = False
    ctx = RunContext(cfg, rd, build_dataset(cfg), resolve_device(cfg.run.device), False)
    if params["mednas"] == "score":
        final = run_score(params, ctx, build_strategy(cfg))
    elif params["mednas"] == "genas":
        run_genas(params, ctx, build_strategy(cfg))     # genas_trial reports its own results
        return 0
    else:
        final = run_retrain(params, ctx)
    nni.report_final_result(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())

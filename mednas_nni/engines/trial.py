"""One trial: evaluate one architecture with the strategy's :class:`~mednas_nni.contracts.TrialSpec`.

:func:`run_trial` is the function NNI's ``FunctionalEvaluator`` calls (in this process on the sequential engine,
in a trial process on NNI's local training service); :func:`main` is the ``nnictl`` trial command
(``python -m mednas_nni.nni_trial``), whose parameters come from :class:`~mednas_nni.engines.nnictl_tuner.MedNASTuner`.
Both rebuild what they need from the run directory's ``config.resolved.yaml`` (once per process). A trial that
raises writes the one-line reason to ``<run_dir>/trial_errors/<hash>.txt`` (read by the search loop) and re-raises,
so NNI shows it FAILED.
"""
from __future__ import annotations

import importlib
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from nni.nas.evaluator import FunctionalEvaluator

from .records import arch_hash
from .search_loop import finite_metrics

__all__ = ["run_trial", "ArchitectureEvaluator", "register_context", "context_for", "trial_error", "main",
           "TRIAL_ERRORS", "TRIAL_ARCHS"]

_logger = logging.getLogger(__name__)
_CONTEXTS: dict[str, Any] = {}
TRIAL_ERRORS = "trial_errors"
TRIAL_ARCHS = "trial_archs"


def register_context(ctx: Any) -> None:
    """Let trials run in this process reuse the driver's context (data already loaded)."""
    _CONTEXTS[str(Path(ctx.run_dir.path).resolve())] = ctx


def context_for(run_dir: str | Path) -> Any:
    """The :class:`~mednas_nni.experiment.RunContext` of ``run_dir`` (built once per process)."""
    key = str(Path(run_dir).resolve())
    if key not in _CONTEXTS:
        from ..config import load_config
        from ..experiment import RunContext
        from ..io import RunDir

        rd = RunDir.open(run_dir)
        cfg = load_config(rd / RunDir.CONFIG)
        cfg.run.progress = False
        _CONTEXTS[key] = RunContext.build(cfg, rd)
    return _CONTEXTS[key]


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def trial_error(run_dir: str | Path, h: str) -> str | None:
    """The one-line reason a trial of ``h`` failed, if it wrote one."""
    f = Path(run_dir) / TRIAL_ERRORS / f"{h}.txt"
    if f.exists():
        lines = f.read_text(encoding="utf-8").splitlines()
        return lines[0][:500] if lines else None
    return None


def run_trial(model: Any, *, sample: dict[str, Any], run_dir: str, trial_function: str,
              trial_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (frozen ``sample``) with ``trial_function(model, ctx, report, **trial_kwargs)`` and report
    the final dict to NNI."""
    import nni

    from ..io import atomic_write_text

    def report(d: dict[str, Any]) -> None:
        nni.report_intermediate_result(finite_metrics(d))

    try:
        ctx = context_for(run_dir)
        final = _resolve(trial_function)(model, ctx, report, **(trial_kwargs or {}))
        if not isinstance(final, dict) or not isinstance(final.get("default"), (int, float)):
            raise TypeError(f"{trial_function} must return a dict with a numeric 'default', got {type(final).__name__}")
    except Exception as e:
        atomic_write_text(Path(run_dir) / TRIAL_ERRORS / f"{arch_hash(sample)}.txt",
                          f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        raise
    nni.report_final_result(finite_metrics(final))
    return final


class ArchitectureEvaluator(FunctionalEvaluator):
    """NNI's ``FunctionalEvaluator`` that also hands the evaluated architecture's sample to the function."""

    def _execute(self, model: Any) -> Any:
        return self.function(model.executable_model(), sample=model.sample, **self.arguments)


# ---------------------------------------------------------------------------------------------------- nnictl trials
def _run_evaluate(params: dict[str, Any]) -> int:
    import json

    ctx = context_for(params["run_dir"])
    from ..experiment import build_strategy

    sample = json.loads((Path(params["run_dir"]) / TRIAL_ARCHS / f"{params['hash']}.json").read_text())
    spec = build_strategy(ctx.cfg).trial(ctx)
    net = ctx.build_space().freeze(sample)
    run_trial(net, sample=sample, run_dir=params["run_dir"], trial_function=spec.function,
              trial_kwargs=spec.kwargs)
    return 0


def _run_retrain(params: dict[str, Any]) -> int:
    import json

    import nni

    from ..experiment import retrain_finalist

    ctx = context_for(params["run_dir"])
    key = ctx.select_key

    def on_epoch(rec: dict[str, float]) -> None:
        nni.report_intermediate_result(finite_metrics({"default": rec.get(f"val_{key}"), **rec}))

    fins = json.loads((ctx.run_dir / "finalists.json").read_text())
    res = retrain_finalist(ctx, params["finalist"], fins[params["finalist"]], n_finalists=len(fins),
                           on_epoch=on_epoch)
    nni.report_final_result(finite_metrics({"default": res["val"][key], "best_epoch": res["best_epoch"],
                                            "params": res["params"],
                                            **{f"val_{k}": v for k, v in res["val"].items()}}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mednas_nni.nni_trial``: one trial of an nnictl experiment driven by MedNASTuner."""
    import nni

    from ..errors import MedNASError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = nni.get_next_parameter()
    kind = params.get("mednas") if isinstance(params, dict) else None
    try:
        if kind == "evaluate":
            return _run_evaluate(params)
        if kind == "retrain":
            return _run_retrain(params)
        if kind == "invalid":
            _logger.error("architecture %s was pruned before training: %s", params.get("hash"), params.get("reason"))
            return 1
    except MedNASError as e:
        _logger.error("%s", e)
        return 1
    _logger.error("mednas trial: expected parameters from MedNASTuner ('mednas': evaluate|retrain), got %r", params)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""One trial: evaluate one architecture with the strategy's :class:`~mednas_nni.contracts.TrialSpec`.

:func:`run_trial` is the function NNI's ``FunctionalEvaluator`` calls (in this process on the sequential engine,
in a trial process on NNI's local training service); :func:`main` is the ``nnictl`` trial command
(``python -m mednas_nni.nni_trial``), whose parameters come from :class:`~mednas_nni.engines.nnictl_tuner.MedNASTuner`.
Both rebuild what they need from the run directory's ``config.resolved.yaml`` (once per process). A trial that
raises writes the one-line reason to ``<run_dir>/trial_errors/<hash>.txt`` (read by the search loop) and re-raises,
so NNI shows it FAILED.

A trial that runs in the trial code folder NNI uploaded (a remote or cluster trial:
:mod:`~mednas_nni.engines.training_service_upload`) never touches the driver's run directory, even where a shared
folder makes it visible: it builds its context from the uploaded config in a scratch run directory under its
working directory (``<upload>/trial_code/scratch/<trial id>``), and a failure's one-line reason travels back as
the trial's last intermediate metric ``{"mednas_error": reason}`` (no ``default``: the web UI shows no number for
it), which the driver's engine writes to ``<run_dir>/trial_errors/<hash>.txt``
(:class:`~mednas_nni.engines.nni_local.LocalLoopStrategy`). The traceback stays in the trial's own log.

A trial process pays for its imports on every architecture, so this module imports neither torch nor NNI's NAS
evaluators (PyTorch Lightning, torchmetrics, torchvision) at import time: :class:`ArchitectureEvaluator` is built on
first use, and matplotlib is never imported by an evaluate trial (``MPLCONFIGDIR`` points into the run directory
for the one retrain trial that draws the figures, so no trial builds a font cache in the user's home).
``python -m mednas_nni.nni_trial --params FILE`` runs one trial by hand (outside NNI) from a JSON parameter file.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

__all__ = ["run_trial", "ArchitectureEvaluator", "register_context", "context_for", "trial_error", "main",
           "uploaded_code_dir", "TRIAL_ERRORS", "TRIAL_ARCHS", "TRIAL_ERROR_METRIC"]

_logger = logging.getLogger(__name__)
_CONTEXTS: dict[str, Any] = {}
TRIAL_ERRORS = "trial_errors"
TRIAL_ARCHS = "trial_archs"
#: the key of the intermediate metric that carries a remote trial's one-line failure reason back to the driver
TRIAL_ERROR_METRIC = "mednas_error"


def register_context(ctx: Any) -> None:
    """Let trials run in this process reuse the driver's context (data already loaded)."""
    _CONTEXTS[str(Path(ctx.run_dir.path).resolve())] = ctx


def context_for(run_dir: str | Path) -> Any:
    """The :class:`~mednas_nni.experiment.RunContext` of ``run_dir`` (built once per process)."""
    key = str(Path(run_dir).resolve())
    if key not in _CONTEXTS and (code := uploaded_code_dir(run_dir)) is not None:
        _CONTEXTS[key] = _uploaded_context(code)
    if key not in _CONTEXTS:
        from ..config import load_config
        from ..experiment import RunContext
        from ..io import RunDir

        rd = RunDir.open(run_dir)
        cfg = load_config(rd / RunDir.CONFIG)
        cfg.run.progress = False
        _CONTEXTS[key] = RunContext.build(cfg, rd)
    return _CONTEXTS[key]


def uploaded_code_dir(run_dir: str | Path) -> Path | None:
    """The trial code folder NNI uploaded for the run ``run_dir`` when this trial runs in it (a remote or cluster
    trial: NNI starts it there, ``NNI_CODE_DIR``); None for a trial on this machine."""
    from .training_service_upload import CONTEXT_FILE

    folder = Path(os.environ.get("NNI_CODE_DIR") or os.getcwd())
    try:
        meta = json.loads((folder / CONTEXT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return folder if isinstance(meta, dict) and meta.get("run_dir") == str(Path(run_dir)) else None


def _uploaded_context(code: Path) -> Any:
    """The context of a trial in the uploaded folder ``code``: the uploaded config (its relative data paths resolve
    against ``code``), a scratch run directory of this trial under ``code`` (the driver's path is never created)."""
    from ..config import dump_config, load_config
    from ..experiment import RunContext
    from ..io import RunDir, atomic_write_text
    from .training_service_upload import CONFIG_FILE

    cfg = load_config(code / CONFIG_FILE)
    cfg.run.progress = False
    scratch = code / "scratch" / (os.environ.get("NNI_TRIAL_JOB_ID") or f"pid-{os.getpid()}")
    scratch.mkdir(parents=True, exist_ok=True)
    atomic_write_text(scratch / RunDir.CONFIG, dump_config(cfg))      # as this worker resolved it
    _logger.info("context from the uploaded config %s (data.params: %s); scratch run directory %s",
                 code / CONFIG_FILE, cfg.data.params, scratch)
    return RunContext.build(cfg, RunDir(scratch))


def _report_remote_failure(run_dir: str, h: str, text: str) -> None:
    """A trial in the uploaded folder failed: keep the reason in its scratch run directory and send the one-line
    reason to the driver as an intermediate metric without ``default`` (NNI's only channel back from a worker)."""
    from ..io import atomic_write_text

    ctx = _CONTEXTS.get(str(Path(run_dir).resolve()))
    if ctx is not None:
        atomic_write_text(Path(ctx.run_dir.path) / TRIAL_ERRORS / f"{h}.txt", text)
    reason = (text.splitlines() or ["no message"])[0][:500]
    try:
        import nni

        nni.report_intermediate_result({TRIAL_ERROR_METRIC: reason})
    except Exception as e:      # noqa: BLE001 (no NNI channel: a trial run by hand; the log keeps the reason)
        _logger.warning("could not send the failure reason to NNI (%s): %s", e, reason)


def finite_metrics(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without NaN/inf floats (same as :func:`~mednas_nni.engines.search_loop.finite_metrics`, import-free)."""
    return {k: v for k, v in d.items() if not (isinstance(v, float) and not math.isfinite(v))}


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
    """Evaluate ``model`` (frozen ``sample``) with ``trial_function(model, sample, ctx, report, **trial_kwargs)`` and
    report the final dict to NNI. Torch's thread count is restored afterwards: a trial that sets its own (e.g.
    ``torch_threads``) must not change the driver's numerics when it runs in-process."""
    import nni
    import torch

    from ..io import atomic_write_text

    def report(d: dict[str, Any]) -> None:
        nni.report_intermediate_result(finite_metrics(d))

    threads = torch.get_num_threads()
    try:
        ctx = context_for(run_dir)
        final = _resolve(trial_function)(model, sample, ctx, report, **(trial_kwargs or {}))
        if not isinstance(final, dict) or not isinstance(final.get("default"), (int, float)):
            raise TypeError(f"{trial_function} must return a dict with a numeric 'default', got {type(final).__name__}")
    except Exception as e:
        from .records import arch_hash

        text = f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}"
        if uploaded_code_dir(run_dir) is None:
            atomic_write_text(Path(run_dir) / TRIAL_ERRORS / f"{arch_hash(sample)}.txt", text)
        else:
            _report_remote_failure(run_dir, arch_hash(sample), text)
        raise
    finally:
        torch.set_num_threads(threads)
    from .webui_labels import label_final

    nni.report_final_result(label_final(finite_metrics(final), sample, ctx))
    return final


def __getattr__(name: str) -> Any:
    # lazy: see mednas_nni.engines.arch_evaluator (its import costs ~10 s that nnictl trials do not need)
    if name == "ArchitectureEvaluator":
        from .arch_evaluator import ArchitectureEvaluator

        return ArchitectureEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------------- nnictl trials
def _run_evaluate(params: dict[str, Any]) -> int:
    ctx = context_for(params["run_dir"])
    from ..experiment import build_strategy

    sample = json.loads((Path(params["run_dir"]) / TRIAL_ARCHS / f"{params['hash']}.json").read_text())
    spec = build_strategy(ctx.cfg).trial(ctx)
    net = ctx.build_space().freeze(sample)
    run_trial(net, sample=sample, run_dir=params["run_dir"], trial_function=spec.function,
              trial_kwargs=spec.kwargs)
    return 0


def _numbers(d: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _test_if_last(ctx: Any, fins: list[dict[str, Any]]) -> dict[str, Any] | None:
    """When every finalist is settled, the one trial that takes the lock tests the best finalist (``choose_best``)
    and returns ``metrics.json``; otherwise None (a later retrain trial, or the tuner, does it)."""
    from ..experiment import choose_best

    fdir = ctx.run_dir / "finalists"
    done = [(fdir / str(k) / "result.json").exists() for k in range(len(fins))]
    if not all(d or (fdir / str(k) / "failed.json").exists() for k, d in enumerate(done)):
        return None
    try:
        os.close(os.open(fdir / ".testing", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    if "MPLCONFIGDIR" not in os.environ:        # figures: never build a font cache in an unwritable home per trial
        home_cfg = Path.home() / ".config"
        if not os.access(home_cfg if home_cfg.exists() else Path.home(), os.W_OK):
            os.environ["MPLCONFIGDIR"] = str(ctx.run_dir / ".mplconfig")
    choose_best(ctx, fins, available=done)
    ctx.run_dir.set_status(phase="done")
    return json.loads((ctx.run_dir / "metrics.json").read_text())


def _run_retrain(params: dict[str, Any]) -> int:
    import nni

    from ..experiment import retrain_finalist

    ctx = context_for(params["run_dir"])
    key = ctx.select_key

    def on_epoch(rec: dict[str, float]) -> None:
        nni.report_intermediate_result(finite_metrics({"default": rec.get(f"val_{key}"), **rec}))

    i = params["finalist"]
    fins = json.loads((ctx.run_dir / "finalists.json").read_text())
    res = retrain_finalist(ctx, i, fins[i], n_finalists=len(fins), on_epoch=on_epoch)
    final = {"default": res["val"][key], "best_epoch": res["best_epoch"], "params": res["params"],
             **_numbers(res["val"], "val_")}
    metrics = _test_if_last(ctx, fins)
    if metrics is not None:
        # the test metrics of the chosen finalist, where the web UI shows them (this trial's final result)
        final.update({"best_finalist": metrics["best_finalist"], **_numbers(metrics["test"], "test_"),
                      **_numbers(metrics.get("baseline_test") or {}, "baseline_test_")})
        _logger.info("best finalist %d (val_%s); test: %s", metrics["best_finalist"], key, metrics["test"])
    nni.report_final_result(finite_metrics(final))
    return 0


def _parameters(argv: list[str]) -> Any:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mednas_nni.nni_trial",
                                 description="one trial of an nnictl experiment driven by MedNASTuner")
    ap.add_argument("--params", metavar="FILE", help="run by hand: the trial's parameters from a JSON file (outside "
                    "NNI metrics are only logged)")
    args = ap.parse_args(argv)
    if args.params:
        return json.loads(Path(args.params).read_text(encoding="utf-8"))
    from .assigned_parameters import get_assigned_parameter

    return get_assigned_parameter()


def main(argv: list[str] | None = None) -> int:
    """``python -m mednas_nni.nni_trial``: one trial of an nnictl experiment driven by MedNASTuner.

    Exit status 1 (NNI shows the trial FAILED) for a pruned architecture, a setup error or a failed evaluation; the
    one-line reason is the trial log's last ``ERROR`` line.
    """
    from ..errors import MedNASError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = _parameters(sys.argv[1:] if argv is None else argv)
    kind = params.get("mednas") if isinstance(params, dict) else None
    try:
        if kind == "evaluate":
            return _run_evaluate(params)
        if kind == "retrain":
            return _run_retrain(params)
        if kind == "invalid":
            _logger.error("architecture %s (%s) was pruned before training: %s", params.get("hash"),
                          params.get("describe"), params.get("reason"))
            return 1
        if kind == "setup_error":
            _logger.error("the search could not start: %s", params.get("reason"))
            return 1
    except MedNASError as e:
        _logger.error("%s", e)
        return 1
    _logger.error("mednas trial: expected parameters from MedNASTuner ('mednas': evaluate|retrain|invalid|"
                  "setup_error), got %r", params)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Shared helpers for the benchmark scripts: machine facts, result tables, NNI built-in strategies as peers.

Our own strategies run through the core (:class:`~mednas_nni.engines.search_loop.SearchLoop` on an engine, or
:func:`~mednas_nni.experiment.run_search`). A peer from NNI (``Random``, ``RegularizedEvolution``) runs on NNI's
in-process ``SequentialExecutionEngine`` with the same trial function as ours (through the core's
:func:`~mednas_nni.engines.trial.run_trial`), and every architecture it evaluates is recorded in its run
directory's ``archs.jsonl`` exactly as the core records ours, so finalist rules and counts apply to both alike.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    import torch

    from mednas_nni.exporters._measure import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write_results(out_dir: Path, stem: str, payload: dict[str, Any], table: str) -> None:
    from mednas_nni.io import atomic_write_json, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / f"{stem}.json", payload)
    atomic_write_text(out_dir / f"{stem}.md", table)


def new_run(cfg: Any, name: str, dataset: Any = None, task: Any = None) -> Any:
    """A fresh run directory ``<cfg.run.out_dir>/<name>-<time>`` holding ``cfg``, and its
    :class:`~mednas_nni.experiment.RunContext` (``dataset``/``task`` reused when given, else built)."""
    from mednas_nni.config import dump_config
    from mednas_nni.experiment import RunContext, build_dataset, build_task, resolve_device
    from mednas_nni.io import RunDir, atomic_write_text

    cfg.run.name, cfg.run.progress = name, False
    rd = RunDir.create(cfg.run.out_dir, name)
    atomic_write_text(rd / RunDir.CONFIG, dump_config(cfg))
    dataset = dataset if dataset is not None else build_dataset(cfg)
    task = task if task is not None else build_task(cfg, dataset)
    return RunContext(cfg, rd, dataset, task, resolve_device(cfg.run.device), progress=False)


def fitness_trial(model: Any, sample: dict[str, Any], ctx: Any, report: Any, **kwargs: Any) -> dict[str, Any]:
    """The GeNAS-WF/random trial (``train_and_score``) with ``default`` = its ``fitness``: NNI's strategies
    maximise ``default``, so they optimise what GeNAS-WF optimises (as the pre-Core-v2 trial reported it)."""
    from mednas_nni.strategies._train_trial import train_and_score

    out = train_and_score(model, sample, ctx, report, **kwargs)
    return {**out, "default": out["fitness"]}


def run_nni_peer(strategy: Any, space: Any, ctx: Any, trial_function: str, trial_kwargs: dict[str, Any],
                 max_model_count: int | None = None, raw_format: bool = False) -> Any:
    """Run NNI ``strategy`` on ``space`` in this process and return NNI's engine.

    The model space is NNI's simplified format, or its raw format with ``raw_format`` (the format decides how
    NNI's samplers draw). Every finished architecture is recorded in ``ctx.run_dir``'s ``archs.jsonl``: status
    ``ok`` with the trial's metrics, or ``failed`` with the reason."""
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.execution.event import ModelEventType
    from nni.nas.space import ModelStatus, RawFormatModelSpace, SimplifiedModelSpace

    from mednas_nni.engines.records import RecordStore, arch_hash
    from mednas_nni.engines.search_loop import finite_metrics
    from mednas_nni.engines.trial import ArchitectureEvaluator, register_context, run_trial, trial_error

    import logging

    # a failed architecture is recorded with its reason; NNI's traceback per failure only floods the console
    logging.getLogger("nni.nas.execution.sequential").setLevel(logging.CRITICAL)
    register_context(ctx)
    store, final = RecordStore(ctx.run_dir), {}
    evaluator = ArchitectureEvaluator(run_trial, run_dir=str(ctx.run_dir.path), trial_function=trial_function,
                                      trial_kwargs=dict(trial_kwargs))

    def canonical(model: Any) -> tuple[dict[str, Any], str]:
        c = space.canonicalize(model.sample)
        return c, arch_hash(c)

    def on_final(event: Any) -> None:
        final[canonical(event.model)[1]] = event.metric

    def on_end(event: Any) -> None:
        c, h = canonical(event.model)
        metric = final.pop(h, None)
        rec = {"hash": h, "sample": c, "describe": space.describe(c), "batch": len(store.records())}
        if event.status == ModelStatus.Trained and isinstance(metric, dict):
            store.add({**rec, "status": "ok", "metrics": finite_metrics(metric)})
        else:
            why = trial_error(ctx.run_dir.path, h) or trial_error(ctx.run_dir.path, arch_hash(event.model.sample))
            store.add({**rec, "status": "failed", "error": why or f"NNI status {event.status.value}"})

    engine = SequentialExecutionEngine(max_model_count=max_model_count, continue_on_failure=True)
    engine.register_model_event_callback(ModelEventType.FinalMetric, on_final)
    engine.register_model_event_callback(ModelEventType.TrainingEnd, on_end)
    fmt = RawFormatModelSpace if raw_format else SimplifiedModelSpace
    strategy(fmt.from_model(space, evaluator), engine)
    return engine


def valid_random(space: Any, *, dedup: bool = True, seed: int | None = None) -> Any:
    """NNI's ``Random`` that draws only samples ``space.is_valid`` accepts, as mednas's own searches do.

    A rejected draw raises NNI's ``SampleValidationError``, which NNI's ``Random`` already redraws (its
    ``RetrySamplingHelper``), so the peer spends none of its budget on architectures the space rejects
    (for ``mstf_cell``: dead cells, ~15 % of uniform draws).
    """
    from nni.mutable import SampleValidationError
    from nni.nas.strategy import Random

    class ValidRandom(Random):
        def random(self, model_space: Any) -> Any:
            model = super().random(model_space)
            ok, why = space.is_valid(space.canonicalize(model.sample))
            if not ok:
                raise SampleValidationError(why)
            return model

    return ValidRandom(dedup=dedup, seed=seed)


def die_with_parent() -> None:
    """In a worker process: be sent SIGTERM when the driver dies (Linux ``prctl(PR_SET_PDEATHSIG)``).

    A driver killed by a signal does not stop a ``ProcessPoolExecutor``'s workers: they go on training and appending
    to the results of a run that was meant to stop. Elsewhere this does nothing.
    """
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)    # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):                                 # no prctl in this libc: as before
            pass

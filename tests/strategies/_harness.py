"""Run a real multi-trial strategy through the core's real search loop and sequential engine, in a real run
directory, with a fast trial function (no training) so strategy tests take seconds."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nni
import torch

from mednas_nni.config import load_config
from mednas_nni.contracts import TrialSpec
from mednas_nni.engines.nni_engine import run_sequential
from mednas_nni.engines.records import arch_hash
from mednas_nni.engines.search_loop import SearchLoop
from mednas_nni.experiment import RunContext
from mednas_nni.io import RunDir

CALLS: list[str] = []          # hashes of every trial run, in order


def fake_score(arch: dict[str, Any]) -> float:
    """A deterministic score with some structure plus hash noise."""
    width = sum(v for k, v in arch.items() if k.endswith("/filters") and int(k[5:k.index("/")]) < arch.get("depth", 0))
    noise = int(hashlib.sha1(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:6], 16) / 16 ** 6
    return width / 100 + 0.05 * noise


def fake_trial(model: Any, sample: dict[str, Any], ctx: Any, report: Any, *, fail_if: dict | None = None,
               interrupt_at: int | None = None, input_size: int | None = None) -> dict[str, Any]:
    """Trial function: a fake 3-epoch curve and its 'fitness', no training (fails or interrupts on request)."""
    CALLS.append(arch_hash(sample))
    if input_size is not None:
        model.eval()(torch.zeros(2, 1, input_size, input_size))   # must never fail: invalid archs are pruned
    if interrupt_at is not None and len(CALLS) == interrupt_at:
        raise KeyboardInterrupt
    if fail_if and all(sample.get(k) == v for k, v in fail_if.items()):
        raise RuntimeError("injected failure")
    s = fake_score(sample)
    for e in range(3):
        report({"default": s * (e + 1) / 3})
    return {"default": s, "fitness": s, "val_balanced_acc": s}


def with_trial(strategy: Any, function: str = "_harness:fake_trial", **kwargs: Any) -> Any:
    """Make ``strategy`` evaluate with ``function`` instead of its own trial."""
    strategy.trial = lambda ctx: TrialSpec(function, kwargs=dict(kwargs), default_meaning="fake")
    strategy._harness_trial = True
    return strategy


def make_ctx(run_dir: Path, overrides: list[str] | None = None) -> RunContext:
    """A real context: the embedded default config (bundled BreastMNIST), a run directory, the CPU."""
    cfg = load_config(None, ["run.device=cpu", "run.progress=false", *(overrides or [])])
    run_dir.mkdir(parents=True, exist_ok=True)
    rd = RunDir(run_dir)
    if not (rd / RunDir.CONFIG).exists():
        from mednas_nni.config import dump_config

        (rd / RunDir.CONFIG).write_text(dump_config(cfg))
    return RunContext.build(cfg, rd)


def run(strategy: Any, space: Any, run_dir: Path, **trial_kwargs: Any) -> SearchLoop:
    """One session of a search: build the loop (resuming whatever ``run_dir`` holds), run it to the end."""
    if not hasattr(strategy, "_harness_trial"):
        with_trial(strategy, **trial_kwargs)
    loop = SearchLoop(strategy, space, make_ctx(run_dir))
    run_sequential(loop)
    return loop


def scored(loop: SearchLoop) -> dict[str, float]:
    return {r["hash"]: r["metrics"]["default"] for r in loop.store.records() if r["status"] == "ok"}


from mednas_nni.engines.records import arch_hash  # noqa: E402,F811

__all__ = ["arch_hash", "CALLS", "fake_score", "fake_trial", "with_trial", "make_ctx", "run", "scored", "nni"]

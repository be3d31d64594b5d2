"""Real run directories for the hardening tests, made by the core's own code (no search engine, no training).

:func:`started_run` makes a run directory exactly as ``mednas search`` does (:func:`start_run_dir`), and
:func:`one_batch` runs one batch of the real search loop (the strategy's real ``propose``/``observe``, the loop's real
records and JSON checkpoint), answering each architecture with fixed metrics instead of scoring or training it.
"""
from __future__ import annotations

import base64
import io
import os
import pickle
from pathlib import Path
from typing import Any

from mednas_nni.config import load_config
from mednas_nni.engines.search_loop import SearchLoop
from mednas_nni.experiment import RunContext, build_strategy, start_run_dir
from mednas_nni.io import RunDir

#: a small mstf_cell search on the bundled BreastMNIST (fast to build; the state is real)
SMALL = ["run.device=cpu", "run.progress=false", "space.params.num_blocks=1", "space.params.num_nodes=5",
         "space.params.channels=16", "strategy.params.pop_size=12", "strategy.params.generations=3"]
GENAS = ["strategy.name=genas_wf", "strategy.params={population_size: 4, generations: 2, epochs_per_trial: 1}"]


def started_run(root: Path, overrides: list[str] = ()) -> tuple[RunDir, Any]:
    cfg = load_config(None, [*SMALL, f"run.out_dir={root}", *overrides])
    return start_run_dir(cfg), cfg


def fake_metrics(strategy: Any, i: int) -> dict[str, Any]:
    if strategy.name == "zc_nsga2":
        return {"default": 0.5, "jacob_cov": -50.0 + i, "log_synflow": 10.0 - 0.5 * i, "synflow": 1e4,
                "flops": 1e5 * (1 + i % 3), "params": 1000 + i}
    f = 0.5 + 0.01 * i
    return {"default": f, "fitness": f, "val_balanced_acc": f, "val_auc": f,
            "history": [{"epoch": 1, "train_loss": 0.7, "val_balanced_acc": f}]}


def one_batch(rd: RunDir, cfg: Any) -> SearchLoop:
    """One finished batch of the real search loop in ``rd`` (records + ``strategy_state.json`` checkpoint)."""
    ctx = RunContext.build(cfg, rd)
    strategy = build_strategy(cfg)
    loop = SearchLoop(strategy, ctx.build_space(), ctx)
    batch = loop.next_batch()
    for i, h in enumerate(list(batch.todo)):
        loop.complete(h, fake_metrics(strategy, i))
    loop.finish(batch)
    return loop


class Payload:
    """Unpickling this writes ``marker``: the proof that a file's code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_b64(marker: Path) -> str:
    return base64.b64encode(pickle.dumps(Payload(marker))).decode("ascii")


def torch_payload(marker: Path) -> bytes:
    """A ``.pt`` file (torch.save's zip format) whose unpickling writes ``marker``."""
    import torch

    buf = io.BytesIO()
    torch.save({"weight": Payload(marker)}, buf)
    return buf.getvalue()

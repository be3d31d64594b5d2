"""Run a multi-trial strategy end to end in a run directory: the loop on the configured engine, then the outputs."""
from __future__ import annotations

import logging
from typing import Any

from ..io import atomic_write_json
from .search_loop import SearchLoop

__all__ = ["run_multi_trial", "ENGINES"]

_logger = logging.getLogger(__name__)


def _sequential(loop: SearchLoop) -> None:
    from .nni_engine import run_sequential

    run_sequential(loop)


def _local(loop: SearchLoop) -> None:
    from .nni_local import run_local

    run_local(loop)


#: ``engine.kind`` -> function evaluating a search loop's architectures (``nnictl`` drives the loop itself, see
#: :mod:`~mednas_nni.engines.nnictl_tuner`)
ENGINES = {"sequential": _sequential, "local": _local}


def write_search_outputs(loop: SearchLoop) -> list[dict[str, Any]]:
    """Finalists of a finished loop, the strategy's own outputs and ``search_summary.json``."""
    finalists = loop.finalists()
    loop.strategy.write_outputs(loop.ctx, loop.store.records(), finalists)
    atomic_write_json(loop.rd / "search_summary.json", {
        "strategy": loop.strategy.name, **loop.summary(),
        "default_metric": loop.spec.default_meaning,
        "finalists": [{k: f.get(k) for k in ("hash", "chosen_as", "describe", "sample")} for f in finalists]})
    return finalists


def run_multi_trial(strategy: Any, ctx: Any) -> list[dict[str, Any]]:
    """Run (or resume) ``strategy`` inside ``ctx.run_dir`` on ``ctx.cfg.engine.kind``; return the finalists."""
    from tqdm.auto import tqdm

    space = ctx.build_space()
    with tqdm(total=strategy.progress_total(), unit="arch", desc=strategy.name, disable=not ctx.progress,
              dynamic_ncols=True) as bar:
        loop = SearchLoop(strategy, space, ctx, progress=bar)
        bar.update(min(len(loop.store.records()), bar.total or 0) if bar.total else 0)
        ENGINES[ctx.cfg.engine.kind](loop)
    _logger.info("search finished: %s", loop.summary())
    return write_search_outputs(loop)

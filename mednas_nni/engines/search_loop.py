"""The multi-trial search loop, independent of where trials run: ask, evaluate what is new, tell, checkpoint.

:class:`SearchLoop` owns what every multi-trial strategy needs and none should write again: canonical samples and
their hashes, the cache (``archs.jsonl``, :class:`~mednas_nni.engines.records.RecordStore`), pruning of invalid
samples, the evaluation budget, checkpoints of the strategy's state at every batch boundary
(``strategy_state.json``) and resume. An engine (:mod:`~mednas_nni.engines.nni_engine`,
:mod:`~mednas_nni.engines.nnictl_tuner`) only has to evaluate :attr:`Batch.todo` and call :meth:`SearchLoop.complete`
for each architecture, then :meth:`SearchLoop.finish`.

Resume: the strategy's state is the one of the last finished batch, so a resumed search proposes the interrupted
batch again; everything of it that was recorded is a cache hit and is not evaluated again.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..contracts.strategy import MultiTrialStrategy, TrialResult
from ..errors import RunDirError
from ..io import RunDir, SearchClock, atomic_write_json
from .divergence import divergence_reason
from .records import RecordStore, arch_hash

__all__ = ["SearchLoop", "Batch", "STATE_FILE", "finite_metrics"]

_logger = logging.getLogger(__name__)

STATE_FILE = "strategy_state.json"
_STATE_VERSION = 2


def _kind(v: Any) -> str:
    """The JSON type of ``v`` in words (ints and floats are both numbers)."""
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", tuple: "a list", dict: "an object"}.get(type(v), type(v).__name__)


def finite_metrics(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without NaN/inf floats (NNI stores metrics as JSON, where they are not valid)."""
    return {k: v for k, v in d.items() if not (isinstance(v, float) and not math.isfinite(v))}


@dataclass
class Batch:
    """One proposal of the strategy: canonical samples in proposal order and what is left to evaluate."""

    index: int
    samples: list[dict[str, Any]]
    hashes: list[str]
    todo: dict[str, dict[str, Any]] = field(default_factory=dict)      # hash -> sample, to evaluate
    skipped: set[str] = field(default_factory=set)                      # not evaluated: budget used up
    started: dict[str, float] = field(default_factory=dict)

    def skip(self, hashes: list[str]) -> None:
        for h in hashes:
            self.todo.pop(h, None)
            self.skipped.add(h)


class SearchLoop:
    """Runs a :class:`~mednas_nni.contracts.MultiTrialStrategy` inside a run directory.

    Args:
        strategy: the multi-trial strategy (its ``seed`` already filled in).
        space: the search space (a :class:`~mednas_nni.contracts.SearchSpace`).
        ctx: the :class:`~mednas_nni.experiment.RunContext`.
        progress: an optional tqdm bar (updated per evaluation).
    """

    def __init__(self, strategy: MultiTrialStrategy, space: Any, ctx: Any, progress: Any = None):
        self.strategy, self.space, self.ctx, self.progress = strategy, space, ctx, progress
        self.rd: RunDir = ctx.run_dir
        if (self.rd / "strategy_state.pt").exists() and not (self.rd / STATE_FILE).exists():
            raise RunDirError(f"{self.rd / 'strategy_state.pt'}: expected a run directory of mednas-nni 0.2 "
                              f"({STATE_FILE}), got one written by mednas-nni 0.1 (before Core v2); finish it with "
                              "mednas-nni 0.1 or start a new search")
        from ..run_identity import check_identity

        check_identity(self.rd, ctx.cfg)          # same version, same config as the saved state (or refused)
        self.store = RecordStore(self.rd)
        self.batch_index = 0
        self.cache_hits = 0
        self.finished = False
        self.current: Batch | None = None
        self.clock: SearchClock = getattr(ctx, "search_clock", None) or SearchClock(self.rd)
        strategy.setup(space, ctx, self._reject)
        state = self._read_state()
        if state is not None:
            self._load_strategy_state(state)
            self.batch_index = int(state.get("batch", 0))
            self.cache_hits = int(state.get("cache_hits", 0))
            self.finished = bool(state.get("finished", False))
            say = getattr(ctx, "say", None)
            (say or _logger.info)(self.restored_summary())
        self.spec = strategy.trial(ctx)

    # ------------------------------------------------------------------ state
    def _read_state(self) -> dict[str, Any] | None:
        path = self.rd / STATE_FILE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise RunDirError(f"{path}: expected the JSON strategy state, got a damaged file ({e})") from None
        from .. import __version__

        if not isinstance(state, dict):
            raise RunDirError(f"{path}: expected the JSON strategy state (an object), got {type(state).__name__}")
        if state.get("mednas_nni", __version__) != __version__:
            raise RunDirError(f"{path}: written by mednas-nni {state.get('mednas_nni')}, this is {__version__}; "
                              f"resume it with mednas-nni {state.get('mednas_nni')} or start a new search")
        if state.get("version") != _STATE_VERSION or state.get("strategy_name") != self.strategy.name:
            raise RunDirError(f"{path}: expected a version-{_STATE_VERSION} state of strategy "
                              f"'{self.strategy.name}', got version {state.get('version')!r} of "
                              f"{state.get('strategy_name')!r}")
        return state

    def _load_strategy_state(self, state: dict[str, Any]) -> None:
        """Hand the saved state to the strategy; anything it cannot take is refused with one line (the file is
        JSON data only: nothing in a run directory is ever unpickled or run)."""
        saved = state.get("strategy")
        if not isinstance(saved, dict):
            raise RunDirError(f"{self.rd / STATE_FILE}: strategy: expected an object, got {_kind(saved)}")
        # Each field must have the JSON type the strategy writes (a fresh state shows it): a string where a list
        # belongs would otherwise be taken apart character by character by a lenient load_state_dict.
        for key, fresh in self.strategy.state_dict().items():
            if fresh is not None and saved.get(key) is not None and _kind(saved[key]) != _kind(fresh):
                raise RunDirError(f"{self.rd / STATE_FILE}: strategy.{key}: expected {_kind(fresh)} (the state of "
                                  f"strategy '{self.strategy.name}'), got {_kind(saved[key])}; start a new search")
        try:
            self.strategy.load_state_dict(saved)
        except Exception as e:  # noqa: BLE001 - a damaged, edited or foreign state file
            first = (str(e).splitlines() or [""])[0][:160]
            raise RunDirError(f"{self.rd / STATE_FILE}: expected the state of strategy '{self.strategy.name}' as "
                              f"this version writes it, got one it cannot restore ({type(e).__name__}: {first}); "
                              "start a new search") from None

    def restored_summary(self) -> str:
        """``resuming: 114 architectures already scored, generation 6 of 8 (search time so far 812 s)``."""
        post = self.strategy.progress_postfix() or {}
        total = getattr(getattr(self.strategy, "params", None), "generations", None)
        gen = post.get("gen", getattr(self.strategy, "generation", None))
        where = f"generation {gen} of {total}" if gen is not None and total else f"batch {self.batch_index}"
        pruned = self.store.count("invalid")
        return (f"resuming: {self.evaluations()} architectures already scored"
                f"{f' ({pruned} pruned)' if pruned else ''}, {where}"
                f"{' (search finished)' if self.finished else ''}; search time so far {self.clock.before:.0f} s "
                f"over {self.clock.session - 1} session(s)")

    def checkpoint(self) -> None:
        from .. import __version__

        atomic_write_json(self.rd / STATE_FILE, {
            "version": _STATE_VERSION, "mednas_nni": __version__, "strategy_name": self.strategy.name,
            "batch": self.batch_index, "cache_hits": self.cache_hits, "finished": self.finished,
            "strategy": self.strategy.state_dict()})
        self.clock.flush()

    # ------------------------------------------------------------------ records
    def record(self, sample: dict[str, Any], h: str, status: str, **fields: Any) -> dict[str, Any]:
        """Keep and persist the record of canonical ``sample`` (hash ``h``); returns the record in force."""
        rec = {"hash": h, "sample": sample, "describe": self.space.describe(sample), "status": status,
               "batch": self.batch_index, **fields}
        return self.store.add(rec)

    def _reject(self, sample: dict[str, Any], reason: str) -> None:
        c = self.space.canonicalize(sample)
        h = arch_hash(c)
        if h not in self.store:
            self.record(c, h, "invalid", error=reason)

    def evaluations(self) -> int:
        return self.store.count("ok", "failed")

    # ------------------------------------------------------------------ the loop
    def next_batch(self) -> Batch | None:
        """Ask the strategy for its next batch; None when the search is finished."""
        if self.finished:
            return None
        samples = self.strategy.propose()
        if samples is None:
            self.finished = True
            self.checkpoint()
            return None
        batch = Batch(self.batch_index, [], [])
        budget = self.strategy.max_evaluations
        left = None if budget is None else max(0, budget - self.evaluations())
        for s in samples:
            c = self.space.canonicalize(s)
            h = arch_hash(c)
            batch.samples.append(c)
            batch.hashes.append(h)
            if h in self.store or h in batch.todo or h in batch.skipped:
                self.cache_hits += 1
                self._tick(cached=True)
                continue
            ok, why = self.space.is_valid(c)
            if not ok:
                self.record(c, h, "invalid", error=why)
                continue
            if left is not None and len(batch.todo) >= left:
                batch.skipped.add(h)
                continue
            batch.todo[h] = c
        if batch.skipped:
            _logger.info("evaluation budget (%d) reached: %d architecture(s) of batch %d not evaluated",
                         budget, len(batch.skipped), batch.index)
        self.current = batch
        return batch

    def complete(self, h: str, metrics: dict[str, Any] | None = None, error: str | None = None,
                 seconds: float | None = None, source: str | None = None) -> dict[str, Any]:
        """Record the evaluation of ``h`` of the current batch (``metrics``: the trial's final dict, or ``error``)."""
        batch = self.current
        sample = batch.todo.get(h) if batch is not None else None
        if sample is None:
            rec = self.store.get(h)
            if rec is not None:
                return rec
            raise KeyError(f"architecture {h} is not part of the current batch")
        if seconds is None and h in batch.started:
            seconds = time.time() - batch.started[h]
        extra = {"seconds": seconds} if seconds is not None else {}
        if source:
            extra["source"] = source
        diverged = None
        if isinstance(metrics, dict) and error is None:
            diverged = divergence_reason(metrics.get("history"), "lower the learning rate (strategy.params.lr)")
        if diverged is not None:
            # an exploded training still scores (a constant guess, AUC ~0.5): it must not compete as a network
            rec = self.record(sample, h, "failed", error=diverged, diverged=True, metrics=finite_metrics(metrics),
                              **extra)
            _logger.info("architecture %s diverged (recorded as failed, the search goes on): %s", h, diverged)
        elif error is None and isinstance(metrics, dict) and "error" not in metrics:
            rec = self.record(sample, h, "ok", metrics=finite_metrics(metrics), **extra)
        else:
            reason = error or str((metrics or {}).get("error") or "the trial reported no result")
            rec = self.record(sample, h, "failed", error=reason, **extra)
            _logger.info("architecture %s failed (recorded, the search goes on): %s", h, reason)
        self._tick(cached=False)
        return rec

    def pending(self) -> list[str]:
        """Hashes of the current batch still to evaluate (neither recorded nor skipped)."""
        if self.current is None:
            return []
        return [h for h in self.current.todo if h not in self.store]

    def finish(self, batch: Batch) -> None:
        """Tell the strategy the batch's results (proposal order) and checkpoint."""
        results = []
        for s, h in zip(batch.samples, batch.hashes):
            rec = self.store.get(h)
            if rec is None:
                # skipped by the budget, or not evaluated because the engine stopped (NNI's budget)
                results.append(TrialResult(s, h, "skipped"))
                continue
            results.append(TrialResult(rec["sample"], h, rec["status"], rec.get("metrics") or {}, rec.get("error"),
                                       cached=h not in batch.todo))
        self.strategy.observe(results)
        self.batch_index += 1
        self.current = None
        self.checkpoint()

    def finalists(self) -> list[dict[str, Any]]:
        return self.strategy.finalists(self.store.records())

    def summary(self) -> dict[str, Any]:
        return {"evaluated": self.store.count("ok", "failed"), "failed": self.store.count("failed"),
                "pruned": self.store.count("invalid"), "cache_hits": self.cache_hits, "batches": self.batch_index}

    def _tick(self, cached: bool) -> None:
        if self.progress is None:
            return
        self.progress.update(1)
        post = dict(self.strategy.progress_postfix())
        post["hits"] = self.cache_hits
        self.progress.set_postfix(**post)

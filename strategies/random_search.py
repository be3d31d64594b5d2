"""Random search: the peer every other multi-trial strategy must beat.

Architectures are drawn uniformly (one seeded ``random.Random`` choice per label), never twice, and pruned by the
space's ``is_valid`` like any other strategy's; each is trained by the same trial as GeNAS-WF
(:func:`~mednas_nni.strategies._train_trial.train_and_score`) and ranked by the same ``fitness``, so a comparison
with GeNAS-WF at the same budget isolates the genetic operators.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from pydantic import Field

from mednas_nni.contracts import MultiTrialStrategy, PluginParams, TrialResult, TrialSpec
from mednas_nni.engines.records import arch_hash

from .genas_wf import _jsonable_state, _restore_rng

__all__ = ["RandomSearch", "RandomSearchParams"]


class RandomSearchParams(PluginParams):
    num_samples: int = Field(20, ge=1)            # architectures to train in all
    batch_size_archs: int = Field(4, ge=1)        # architectures proposed per batch (evaluated in parallel)
    epochs_per_trial: int = Field(3, ge=1)
    fitness: str = "genas_wf"
    fitness_params: dict[str, Any] = Field(default_factory=dict)
    top_k: int = Field(2, ge=1)
    seed: int | None = None
    batch_size: int = Field(16, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    augment: bool = False
    max_batches_per_epoch: int | None = Field(None, ge=1)
    torch_threads: int | None = Field(None, ge=1)


class RandomSearch(MultiTrialStrategy):
    """Uniform random sampling without repetition, trained and ranked like GeNAS-WF (a baseline)."""

    name = "random"
    Params = RandomSearchParams

    def __init__(self, **params: Any):
        self.params = RandomSearchParams(**params)
        self.max_evaluations = self.params.num_samples
        self.rng = random.Random(0 if self.params.seed is None else self.params.seed)
        self.proposed: list[str] = []
        self.done = False

    def setup(self, space: Any, ctx: Any, reject: Callable[[dict[str, Any], str], None]) -> None:
        super().setup(space, ctx, reject)
        self._labels = space.label_values()

    def trial(self, ctx: Any) -> TrialSpec:
        from ._train_trial import training_trial_spec

        return training_trial_spec(ctx, self.params)

    def propose(self) -> list[dict[str, Any]] | None:
        left = self.params.num_samples - len(self.proposed)
        if self.done or left <= 0:
            return None
        seen, batch = set(self.proposed), []
        for _ in range(200 * self.params.batch_size_archs):
            if len(batch) == min(left, self.params.batch_size_archs):
                break
            s = self.space.canonicalize({k: self.rng.choice(v) for k, v in self._labels.items()})
            h = arch_hash(s)
            if h in seen:
                continue
            ok, why = self.space.is_valid(s)
            if not ok:
                self.reject(s, why)
                continue
            seen.add(h)
            batch.append(s)
        if not batch:      # the space holds no further valid architecture
            return None
        self.proposed += [arch_hash(s) for s in batch]
        return batch

    def observe(self, results: list[TrialResult]) -> None:
        if any(r.status == "skipped" for r in results):
            self.done = True

    def finalists(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ok = sorted((r for r in records if r["status"] == "ok"), key=lambda r: (-r["metrics"]["fitness"],
                                                                                 r.get("batch", 0)))
        return [{"hash": r["hash"], "sample": r["sample"], "describe": r.get("describe"),
                 "fitness": r["metrics"]["fitness"], "chosen_as": f"top-{i + 1} by {self.params.fitness} fitness"}
                for i, r in enumerate(ok[:self.params.top_k])]

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _jsonable_state(self.rng), "proposed": self.proposed, "done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng = _restore_rng(state["rng"])
        self.proposed = list(state["proposed"])
        self.done = bool(state.get("done", False))

"""Zero-cost multi-objective search (MedNAS / MSTF-NAS) as a mednas strategy driving pymoo.

Wang et al., "MedNAS: Multiscale Training-Free Neural Architecture Search for Medical Image Analysis",
IEEE TEVC 28(3):668-681 (2024), doi:10.1109/TEVC.2024.3352641.

Each architecture is scored without training by zero-cost proxies on one batch of real training images
(:mod:`.zc_scoring`). NSGA-II (or MOEA/D on normalised objectives) from pymoo evolves integer-encoded architectures
(one category index per ``Categorical`` of ``simplify()``) through pymoo's ask/tell interface, while the core's
engine runs each evaluation. Variation is categorical (:mod:`.zc_operators`: uniform or one-point crossover over
the genes, random-reset mutation at ``1 / n_genes`` per gene) and a child met before (scored, failed or pruned) or
rejected by the space (a dead cell) is never proposed: pymoo mates again. The pymoo algorithm's state is JSON data
(:mod:`.zc_state`), never a pickle. Our objectives are explicit (default: see :data:`DEFAULT_OBJECTIVES`); the
reproduction's mixed objectives (f1 = -jacob - FLOPs, f2 = -synflow + FLOPs) are not copied (see METHODS §A4).

Finalists (our documented choice): the *knee* of the Pareto front, i.e. the front member closest to the
ideal point after min-max normalising every objective over the front, plus the ``top_k`` front members by
mean rank over the objectives (or by the proxy named in ``rank_by``). Failed or non-finite scores mark an
architecture failed (infeasible for NSGA-II, a penalty beyond the worst for MOEA/D) and the search goes on.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from mednas_nni.contracts import MultiTrialStrategy, PluginParams, TrialResult, TrialSpec

from .zc_operators import CROSSOVERS, VariationStats
from .zc_scoring import KNOWN_PROXIES, Objective, ProxyScoreError, reset_parameters, score_model, score_trial

__all__ = ["ZeroCostNSGA2", "ZeroCostNSGA2Params", "Objective", "score_model", "score_trial", "pareto_mask",
           "choose_finalists", "DEFAULT_OBJECTIVES", "variation_summary", "ProxyScoreError", "reset_parameters", "KNOWN_PROXIES"]

_logger = logging.getLogger(__name__)

#: The default objectives (README, "zero-cost method", chosen from benchmarks/results/zc_proxy_rank.md): the paper's
#: jacob_cov:max and flops:min without its log_synflow:max, whose rank correlation with trained test AUC was negative
#: on BreastMNIST (Kendall tau -0.40, 95 % CI [-0.56, -0.19]; its best-scored architecture was among the worst).
#: The paper's set: ``objectives: [jacob_cov:max, log_synflow:max, flops:min]``.
DEFAULT_OBJECTIVES = ["jacob_cov:max", "flops:min"]


class ZeroCostNSGA2Params(PluginParams):
    algorithm: Literal["nsga2", "moead"] = "nsga2"
    pop_size: int = Field(20, ge=2)
    generations: int = Field(10, ge=1)
    objectives: list[str] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    proxy_batch_size: int = Field(64, ge=2)      # one batch of real training images (reference: 64)
    crossover: Literal[CROSSOVERS] = "uniform"   # over the genes: "uniform" or "one_point"
    crossover_prob: float = Field(0.9, ge=0, le=1)
    mutation_rate: float | None = Field(None, gt=0, le=1)   # per gene; None: 1 / number of genes
    top_k: int = Field(1, ge=0)                  # finalists besides the knee
    knee: bool = True
    rank_by: str = "mean_rank"                   # or one objective's proxy name
    seed: int | None = None                      # None: the run's seed

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError("at least 2 objectives for a multi-objective search")
        names = []
        for s in v:
            names.append(Objective(s).name)
        if len(set(names)) != len(names):
            raise ValueError("each proxy at most once")
        return v

    @model_validator(mode="after")
    def _finalists(self) -> ZeroCostNSGA2Params:
        if not self.knee and self.top_k == 0:
            raise ValueError("at least one finalist: knee true or top_k >= 1")
        if self.rank_by != "mean_rank" and self.rank_by not in [Objective(o).name for o in self.objectives]:
            raise ValueError(f"rank_by: 'mean_rank' or one of the objectives' proxies, got {self.rank_by!r}")
        return self


def pareto_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``F`` (all objectives minimised)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    if len(F) == 0:
        return np.zeros(0, dtype=bool)
    front = NonDominatedSorting().do(F, only_non_dominated_front=True)
    mask = np.zeros(len(F), dtype=bool)
    mask[front] = True
    return mask


def choose_finalists(F: np.ndarray, knee: bool, top_k: int, rank_col: int | None) -> list[int]:
    """Indices (into ``F``, minimisation form, rows = Pareto front) of the finalists.

    Knee: the row closest (Euclidean) to the ideal point after min-max normalisation per objective.
    Top-k: by the column ``rank_col`` or, if None, by mean rank over all objectives (ties by index).
    """
    n = len(F)
    if n == 0:
        return []
    lo, hi = F.min(0), F.max(0)
    norm = (F - lo) / np.where(hi > lo, hi - lo, 1.0)
    chosen: list[int] = []
    if knee:
        chosen.append(int(np.argmin(np.linalg.norm(norm, axis=1))))
    if top_k:
        if rank_col is None:
            ranks = np.argsort(np.argsort(F, axis=0, kind="stable"), axis=0, kind="stable").mean(1)
            order = np.lexsort((np.arange(n), ranks))
        else:
            order = np.lexsort((np.arange(n), F[:, rank_col]))
        extra = [int(i) for i in order if int(i) not in chosen][:top_k]
        chosen += extra
    return chosen


# ---------------------------------------------------------------------------------------------------- strategy
class ZeroCostNSGA2(MultiTrialStrategy):
    """Zero-cost NSGA-II/MOEA-D search (MedNAS / MSTF-NAS): training-free proxies, pymoo ask/tell."""

    name = "zc_nsga2"
    Params = ZeroCostNSGA2Params

    def __init__(self, **params: Any):
        self.params = ZeroCostNSGA2Params(**params)
        self.objectives = [Objective(o) for o in self.params.objectives]
        self.seed = 0 if self.params.seed is None else self.params.seed
        self.generation = 0
        self.scored: dict[str, list[float]] = {}     # hash -> objective vector (minimisation form) of every ok arch
        self.stats = VariationStats()
        self.seen: set[str] = set()                  # hashes of everything met (scored, failed, pruned)
        self._algo_state: dict[str, Any] | None = None   # the pymoo algorithm as data (zc_state), after each batch
        self._algorithm: Any = None
        self._archive: Any = None
        self._asked: Any = None
        self._labels: dict[str, list[Any]] = {}

    def __repr__(self) -> str:
        p = self.params
        return (f"ZeroCostNSGA2(algorithm={p.algorithm!r}, pop_size={p.pop_size}, generations={p.generations}, "
                f"objectives={p.objectives}, crossover={p.crossover!r}, seed={self.seed})")

    def _proxies(self) -> list[str]:
        names = [o.name for o in self.objectives]
        return names + [p for p in ("params", "flops") if p not in names]

    # ------------------------------------------------------------------ contract
    def setup(self, space: Any, ctx: Any, reject: Callable[[dict[str, Any], str], None]) -> None:
        super().setup(space, ctx, reject)
        self._labels = space.label_values()

    def trial(self, ctx: Any) -> TrialSpec:
        return TrialSpec("mednas_nni.strategies.zc_nsga2:score_trial",
                         kwargs={"proxies": self._proxies(), "objectives": list(self.params.objectives),
                                 "proxy_batch_size": self.params.proxy_batch_size, "init_seed": self.seed},
                         default_meaning=(f"share of the architectures scored before whose {self.objectives[0]} "
                                          "is worse (0..1, zero-cost phase); the proxies are named keys"))

    def progress_total(self) -> int | None:
        return self.params.pop_size * self.params.generations

    def _decode(self, x: np.ndarray) -> tuple[dict[str, Any], str]:
        """Integer code -> (canonical sample, hash), as the core hashes it."""
        from mednas_nni.engines.records import arch_hash

        sample = self.space.canonicalize({k: vals[int(round(float(i)))]
                                          for (k, vals), i in zip(self._labels.items(), x)})
        return sample, arch_hash(sample)

    def _build_algorithm(self) -> Any:
        """The pymoo algorithm: fresh, or rebuilt from the data of the last batch (:mod:`.zc_state`)."""
        from .zc_operators import (Archive, ArchiveDuplicateElimination, CategoricalSampling, RandomResetMutation,
                                   TrackedMating, make_crossover)
        from .zc_state import build_algorithm, restore_algorithm, validate_state

        p = self.params
        # a dead/invalid draw is counted (variation.json) and redrawn, not recorded: archs.jsonl keeps what was scored
        self._archive = Archive(self._decode, self.space.is_valid, None, self.stats)
        self._archive.seen = self.seen

        def mating(selection: Any, crossover: Any, mutation: Any, **kw: Any) -> Any:
            return TrackedMating(selection, crossover, mutation, self.stats, **kw)

        upper = [len(v) - 1 for v in self._labels.values()]
        algo = build_algorithm(p.algorithm, upper, len(self.objectives), p.pop_size, p.generations, self.seed,
                               sampling=CategoricalSampling(self._archive),
                               crossover=make_crossover(p.crossover, p.crossover_prob),
                               mutation=RandomResetMutation(prob_var=p.mutation_rate), mating_factory=mating,
                               eliminate_duplicates=ArchiveDuplicateElimination(self._archive))
        if self._algo_state is not None:
            restore_algorithm(algo, validate_state(self._algo_state, "strategy_state.json: strategy.algorithm"))
        return algo

    def propose(self) -> list[dict[str, Any]] | None:
        """The next generation (pymoo ``ask``), or None when the search is finished."""
        self._algorithm = self._build_algorithm()
        if not self._algorithm.has_next():
            return None
        self._asked = self._algorithm.ask()
        if self._asked is None or len(self._asked) == 0:
            # every child pymoo mated was met before or invalid (a small space): nothing new to try
            _logger.info("pymoo proposed no new architecture at generation %d; the search ends", self.generation)
            return None
        X = np.atleast_2d(np.asarray(self._asked.get("X"))).round().astype(int)
        return [{k: vals[int(i)] for (k, vals), i in zip(self._labels.items(), x)} for x in X]

    def observe(self, results: list[TrialResult]) -> None:
        """pymoo ``tell``: objectives of the asked generation (failed architectures are infeasible)."""
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        from .zc_state import algorithm_state

        F = np.zeros((len(results), len(self.objectives)))
        ok = np.array([r.ok for r in results])
        for i, r in enumerate(results):
            if r.status != "skipped":
                self.seen.add(r.hash)
            if r.ok:
                F[i] = [o.to_min(r.metrics[o.name]) for o in self.objectives]
                self.scored.setdefault(r.hash, F[i].tolist())
        problem = self._algorithm.problem
        if self.params.algorithm == "nsga2":
            G = np.where(ok, -1.0, 1.0)[:, None]
            static = StaticProblem(problem, F=F, G=G)
        else:
            good = np.asarray(list(self.scored.values())) if self.scored else np.zeros((1, len(self.objectives)))
            worst = good.max(axis=0)
            F[~ok] = worst + np.abs(worst) + 1.0               # MOEA/D: failed get a penalty beyond the worst
            self._asked.set("ok", ok)
            static = StaticProblem(problem, F=F)
        Evaluator().eval(static, self._asked)
        self._algorithm.tell(infills=self._asked)
        self._asked = None
        # pymoo counts the initial population as generation 1 and increments after each tell
        self.generation = max(0, int(self._algorithm.n_gen or 1) - 1)
        self._algo_state = algorithm_state(self._algorithm, self.params.algorithm)
        self._algorithm = None          # the next propose rebuilds it from the data, as a resumed search does

    def search_stats(self) -> dict[str, Any]:
        """Variation statistics (written to ``variation.json`` and shown in the search summary)."""
        return {"generations": self.generation, "crossover": self.params.crossover,
                "mutation_rate_per_gene": self.params.mutation_rate or 1.0 / max(len(self._labels), 1),
                "n_genes": len(self._labels), **self.stats.as_dict()}

    # ------------------------------------------------------------------ results
    def _ok(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r["status"] == "ok"]

    def objective_matrix(self, records: list[dict[str, Any]]) -> np.ndarray:
        return np.array([[o.to_min(r["metrics"][o.name]) for o in self.objectives] for r in records], dtype=float)

    def pareto_front(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Non-dominated architectures among everything scored (not only the last population)."""
        ok = self._ok(records)
        if not ok:
            return []
        mask = pareto_mask(self.objective_matrix(ok))
        return [r for r, m in zip(ok, mask) if m]

    def finalists(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        front = self.pareto_front(records)
        if not front:
            return []
        names = [o.name for o in self.objectives]
        col = None if self.params.rank_by == "mean_rank" else names.index(self.params.rank_by)
        idx = choose_finalists(self.objective_matrix(front), self.params.knee, self.params.top_k, col)
        out = []
        for j, i in enumerate(idx):
            why = "knee" if (self.params.knee and j == 0) else f"top by {self.params.rank_by}"
            out.append({**front[i], "chosen_as": why})
        return out

    def write_outputs(self, ctx: Any, records: list[dict[str, Any]], finalists: list[dict[str, Any]]) -> None:
        from ._report import write_pareto

        from mednas_nni.io import atomic_write_json

        write_pareto(ctx.run_dir, self, records, finalists)
        met = [r for r in records if r.get("status") in ("ok", "failed", "invalid")]
        stats = {**self.search_stats(), "met": len(met), "failed": sum(r["status"] == "failed" for r in met),
                 "invalid": sum(r["status"] == "invalid" for r in met)}
        atomic_write_json(ctx.run_dir / "variation.json", {**stats, "summary": variation_summary(stats)})

    def progress_postfix(self) -> dict[str, Any]:
        if not self.scored:
            return {"gen": self.generation}
        best = np.asarray(list(self.scored.values())).min(axis=0)
        return {"gen": self.generation, **{o.name: f"{o.to_min(b):.3g}" for o, b in zip(self.objectives, best)}}

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """JSON data only: the pymoo algorithm as its population, counters and RNG state (never a pickle)."""
        return {"generation": self.generation, "scored": self.scored, "seen": sorted(self.seen),
                "variation": self.stats.as_dict(), "algorithm": self._algo_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from .zc_state import validate_state

        algo = state.get("algorithm")
        if algo is not None:
            validate_state(algo, "strategy_state.json: strategy.algorithm")   # refuse before anything runs
        self.generation = int(state["generation"])
        self.scored = {h: list(v) for h, v in state.get("scored", {}).items()}
        self.seen = set(state.get("seen", [])) | set(self.scored)
        self.stats = VariationStats.from_dict(state.get("variation", {}))
        self._algo_state = algo
        self._algorithm = None


def variation_summary(v: dict[str, Any]) -> str:
    """One line for ``mednas search``: failed and dead (never built) fractions, and what the variation did."""
    dead = int(v.get("invalid", 0)) + int(v.get("invalid_dropped", 0))
    drawn = max(int(v.get("met", 0)) + int(v.get("invalid_dropped", 0)), 1)
    met = max(int(v.get("met", 0)), 1)
    line = (f"zero-cost search: {v.get('failed', 0)} of {v.get('met', 0)} scored architectures failed "
            f"({100 * v.get('failed', 0) / met:.1f} %); {dead} dead/invalid draws redrawn unbuilt "
            f"({100 * dead / drawn:.1f} % of {drawn} drawn)")
    if v.get("children"):
        line += (f"; {100 * v['differ_from_both_fraction']:.0f} % of {v['children']} children differ from both "
                 f"parents ({100 * v['novel_gene_fraction']:.1f} % of genes new), {v['duplicates_dropped']} repeats "
                 "re-mated")
    return line

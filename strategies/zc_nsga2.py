"""Zero-cost multi-objective search (MedNAS / MSTF-NAS) as an NNI strategy driving pymoo.

Wang et al., "MedNAS: Multiscale Training-Free Neural Architecture Search for Medical Image Analysis",
IEEE TEVC 28(3):668-681 (2024), doi:10.1109/TEVC.2024.3352641.

Each architecture is scored without training by zero-cost proxies on one batch of real training images
(:mod:`mednas_nni.evaluators.zero_cost`). NSGA-II (or MOEA/D) from pymoo evolves integer-encoded
architectures (one index per ``Categorical`` of ``simplify()``) through pymoo's ask/tell interface, while
NNI's execution engine runs each evaluation. Our objectives are explicit (default: maximise jacob_cov,
maximise log synflow, minimise FLOPs); the reproduction's mixed objectives
(f1 = -jacob - FLOPs, f2 = -synflow + FLOPs) are not copied (see METHODS §A4).

Finalists (our documented choice): the *knee* of the Pareto front, i.e. the front member closest to the
ideal point after min-max normalising every objective over the front, plus the ``top_k`` front members by
mean rank over the objectives (or by the proxy named in ``rank_by``). Failed or non-finite scores mark an
architecture failed (infeasible for NSGA-II) and the search goes on.
"""
from __future__ import annotations

import base64
import logging
import math
import pickle
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from pymoo.core.evaluator import Evaluator as _PymooEvaluator
from pymoo.core.problem import Problem
from pymoo.problems.static import StaticProblem

from mednas_nni.contracts import MultiTrialStrategy, PluginParams, TrialResult, TrialSpec
from mednas_nni.errors import MedNASError

__all__ = ["ZeroCostNSGA2", "ZeroCostNSGA2Params", "Objective", "score_model", "score_trial", "pareto_mask",
           "choose_finalists"]

_logger = logging.getLogger(__name__)

_KNOWN_PROXIES = ("jacob_cov", "synflow", "log_synflow", "grad_norm", "snip", "params", "flops")


class Objective:
    """``"name"`` or ``"name:max"`` / ``"name:min"`` (a proxy name and a direction; default max)."""

    def __init__(self, spec: str):
        name, _, goal = spec.partition(":")
        self.name, self.goal = name.strip(), (goal.strip() or "max")
        if self.name not in _KNOWN_PROXIES:
            raise ValueError(f"a proxy name, one of {', '.join(_KNOWN_PROXIES)}")
        if self.goal not in ("max", "min"):
            raise ValueError("a direction 'max' or 'min' after the colon")

    def to_min(self, value: float) -> float:
        """pymoo minimises: negate objectives to maximise."""
        return -value if self.goal == "max" else value

    def __repr__(self) -> str:
        return f"{self.name}:{self.goal}"


class ZeroCostNSGA2Params(PluginParams):
    algorithm: Literal["nsga2", "moead"] = "nsga2"
    pop_size: int = Field(20, ge=2)
    generations: int = Field(10, ge=1)
    objectives: list[str] = Field(default_factory=lambda: ["jacob_cov:max", "log_synflow:max", "flops:min"])
    proxy_batch_size: int = Field(64, ge=2)      # one batch of real training images (reference: 64)
    crossover_prob: float = Field(0.9, ge=0, le=1)
    crossover_eta: float = Field(15.0, gt=0)
    mutation_eta: float = Field(20.0, gt=0)
    top_k: int = Field(1, ge=0)                  # finalists besides the knee
    knee: bool = True
    rank_by: str = "mean_rank"                   # or one objective's proxy name
    seed: int | None = None                      # None: the run's seed

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if len(v) < 2:
            raise ValueError(f"at least 2 objectives for a multi-objective search")
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


# ---------------------------------------------------------------------------------------------------- evaluation
def reset_parameters(model: Any, seed: int) -> None:
    """Re-initialise every layer from ``seed`` (the proxies score an architecture at initialisation, and
    ``freeze`` draws fresh weights from the global RNG: this makes a score a function of the architecture)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()


def score_model(model: Any, inputs: Any, targets: Any, proxies: list[str], device: str = "cpu",
                init_seed: int | None = 0) -> dict[str, Any]:
    """Zero-cost scores of one frozen model as a dict; a failure gives ``{"error": reason}`` instead of raising.

    With ``init_seed`` (default 0) the weights are re-initialised from that seed first, so equal
    architectures always get equal scores (the cache relies on it).
    """
    from mednas_nni.evaluators.zero_cost import compute_proxies

    t0 = time.perf_counter()
    try:
        if init_seed is not None:
            reset_parameters(model, init_seed)
        model = model.to(device)
        scores = compute_proxies(model, inputs.to(device), targets.to(device), proxies)
        out: dict[str, Any] = {k: float(v) for k, v in scores.items()}
    except Exception as e:  # noqa: BLE001 - any failure of one architecture is recorded, the search goes on
        out = {"error": f"{type(e).__name__}: {e}"}
    out["seconds"] = time.perf_counter() - t0
    return out


class ProxyScoreError(MedNASError):
    """An architecture whose zero-cost scores could not be computed or are not finite (recorded as failed)."""


def score_trial(model: Any, sample: dict[str, Any], ctx: Any, report: Callable[[dict[str, Any]], None], *,
                proxies: list[str], objectives: list[str], proxy_batch_size: int = 64,
                init_seed: int | None = 0) -> dict[str, Any]:
    """Trial function: zero-cost scores of one frozen model (see :func:`score_model`) as the final metrics.

    ``default`` (what NNI's web UI plots) is bounded in [0, 1]: the share of the architectures scored before in
    this run whose first objective is worse than this one's (0.5 for the first), so trials compare on one scale.
    A failure or a non-finite objective raises :class:`ProxyScoreError` (the trial is recorded as failed).
    """
    inputs, targets = ctx.proxy_batch(proxy_batch_size)
    scores = score_model(model, inputs, targets, proxies, ctx.device, init_seed)
    if "error" in scores:
        raise ProxyScoreError(scores["error"])
    for spec in objectives:
        name = Objective(spec).name
        if not _finite(scores.get(name)):
            raise ProxyScoreError(f"proxy {name} is not finite ({scores.get(name)})")
    return {"default": _percentile(ctx, Objective(objectives[0]), scores), **scores}


def _percentile(ctx: Any, first: Objective, scores: dict[str, Any]) -> float:
    from mednas_nni.io import RunDir, read_jsonl

    mine = first.to_min(scores[first.name])
    before = [first.to_min(r["metrics"][first.name]) for r in read_jsonl(ctx.run_dir / RunDir.ARCHS)
              if r.get("status") == "ok" and _finite((r.get("metrics") or {}).get(first.name))]
    return float(np.mean([mine < b for b in before])) if before else 0.5


class _IntegerProblem(Problem):
    """Integer decision vector, one variable per search-space label (bounds 0 .. len(values) - 1)."""

    def __init__(self, upper: list[int], n_obj: int, constrained: bool):
        super().__init__(n_var=len(upper), n_obj=n_obj, n_ieq_constr=1 if constrained else 0,
                         xl=np.zeros(len(upper)), xu=np.asarray(upper, dtype=float), vtype=int)


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
        self._algorithm: Any = None
        self._asked: Any = None
        self._snapshot: bytes | None = None
        self._labels: dict[str, list[Any]] = {}

    def __repr__(self) -> str:
        p = self.params
        return (f"ZeroCostNSGA2(algorithm={p.algorithm!r}, pop_size={p.pop_size}, generations={p.generations}, "
                f"objectives={p.objectives}, seed={self.seed})")

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

    def _build_algorithm(self, n_labels: list[int]) -> Any:
        from pymoo.algorithms.moo.moead import MOEAD
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.operators.sampling.rnd import IntegerRandomSampling
        from pymoo.util.ref_dirs import get_reference_directions

        p = self.params
        upper = [n - 1 for n in n_labels]
        constrained = p.algorithm == "nsga2"   # pymoo's MOEA/D supports no constraints: failed archs get a penalty
        problem = _IntegerProblem(upper, len(self.objectives), constrained)
        crossover = SBX(prob=p.crossover_prob, eta=p.crossover_eta, vtype=float, repair=RoundingRepair())
        mutation = PM(eta=p.mutation_eta, vtype=float, repair=RoundingRepair())
        if p.algorithm == "nsga2":
            algo = NSGA2(pop_size=p.pop_size, sampling=IntegerRandomSampling(), crossover=crossover,
                         mutation=mutation, eliminate_duplicates=True)
        else:
            ref_dirs = get_reference_directions("energy", len(self.objectives), p.pop_size, seed=self.seed)
            algo = MOEAD(ref_dirs, n_neighbors=min(15, p.pop_size), prob_neighbor_mating=0.7,
                         sampling=IntegerRandomSampling(), crossover=crossover, mutation=mutation)
        algo.setup(problem, termination=("n_gen", p.generations), seed=self.seed, verbose=False)
        return algo

    def propose(self) -> list[dict[str, Any]] | None:
        """The next generation (pymoo ``ask``), or None when the search is finished."""
        if self._algorithm is None:
            self._algorithm = self._build_algorithm([len(v) for v in self._labels.values()])
            self._snapshot = pickle.dumps(self._algorithm)
        if not self._algorithm.has_next():
            return None
        self._asked = self._algorithm.ask()
        if self._asked is None or (hasattr(self._asked, "__len__") and len(self._asked) == 0):
            # pymoo mated no new offspring (a small space with duplicates eliminated): nothing new to try
            _logger.info("pymoo proposed no new architecture at generation %d; the search ends", self.generation)
            return None
        X = np.atleast_2d(np.asarray(self._asked.get("X"))).round().astype(int)
        return [{k: vals[int(i)] for (k, vals), i in zip(self._labels.items(), x)} for x in X]

    def observe(self, results: list[TrialResult]) -> None:
        """pymoo ``tell``: objectives of the asked generation (failed architectures are infeasible)."""
        F = np.zeros((len(results), len(self.objectives)))
        ok = np.array([r.ok for r in results])
        for i, r in enumerate(results):
            if r.ok:
                F[i] = [o.to_min(r.metrics[o.name]) for o in self.objectives]
                self.scored.setdefault(r.hash, F[i].tolist())
        if self.params.algorithm == "nsga2":
            G: np.ndarray | None = np.where(ok, -1.0, 1.0)[:, None]
        else:
            good = np.asarray(list(self.scored.values())) if self.scored else np.zeros((1, len(self.objectives)))
            worst = good.max(axis=0)
            F[~ok] = worst + np.abs(worst) + 1.0               # MOEA/D: failed get a penalty beyond the worst
            G = None
        problem = self._algorithm.problem
        _PymooEvaluator().eval(StaticProblem(problem, F=F, G=G) if G is not None else StaticProblem(problem, F=F),
                               self._asked)
        self._algorithm.tell(infills=self._asked)
        self._asked = None
        # pymoo counts the initial population as generation 1 and increments after each tell; MOEA/D (loop-wise)
        # asks one offspring at a time, so a MOEA/D generation spans pop_size ask/tell rounds.
        self.generation = max(0, int(self._algorithm.n_gen or 1) - 1)
        # The state holds the algorithm as of the last completed batch; pymoo's loop-wise MOEA/D holds a live
        # generator inside a generation, so it is snapshot at generation boundaries only.
        try:
            self._snapshot = pickle.dumps(self._algorithm)
        except TypeError:
            pass

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

        write_pareto(ctx.run_dir, self, records, finalists)

    def progress_postfix(self) -> dict[str, Any]:
        if not self.scored:
            return {"gen": self.generation}
        best = np.asarray(list(self.scored.values())).min(axis=0)
        return {"gen": self.generation, **{o.name: f"{o.to_min(b):.3g}" for o, b in zip(self.objectives, best)}}

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        # NOTE: pymoo's algorithm object is kept as a pickle inside the JSON state (its population, RNG and
        # operators); rebuilding it from plain data is the hardening issue's work.
        return {"generation": self.generation, "scored": self.scored,
                "algorithm": base64.b64encode(self._snapshot).decode("ascii") if self._snapshot else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generation = int(state["generation"])
        self.scored = {h: list(v) for h, v in state.get("scored", {}).items()}
        raw = state.get("algorithm")
        self._snapshot = base64.b64decode(raw) if raw else None
        self._algorithm = pickle.loads(self._snapshot) if self._snapshot is not None else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

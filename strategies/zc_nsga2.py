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

import logging
import math
import pickle
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import nni
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ModelStatus
from nni.nas.strategy.base import Strategy
from pydantic import Field, field_validator, model_validator
from pymoo.core.evaluator import Evaluator as _PymooEvaluator
from pymoo.core.problem import Problem
from pymoo.problems.static import StaticProblem

from mednas_nni.plugins import PluginParams, SearchDriver

from ._utils import arch_hash, categorical_space, decode

__all__ = ["ZeroCostNSGA2", "ZeroCostNSGA2Params", "Objective", "score_model", "score_architecture", "pareto_mask",
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


def score_architecture(model: Any, inputs: Any, targets: Any, proxies: list[str], device: str = "cpu",
                       init_seed: int | None = 0) -> None:
    """NNI evaluator function: :func:`score_model`, reported as NNI's final metric.

    The metric dict has ``default`` (the first proxy, ``-inf`` on failure) plus every proxy (or ``error``),
    so the strategy sees all objectives and why an architecture failed.
    """
    scores = score_model(model, inputs, targets, proxies, device, init_seed)
    nni.report_final_result({"default": scores.get(proxies[0], float("-inf")), **scores})


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
class ZeroCostNSGA2(Strategy, SearchDriver):
    """Zero-cost NSGA-II/MOEA-D search (MedNAS / MSTF-NAS): training-free proxies, pymoo ask/tell, NNI engine."""

    name = "zc_nsga2"
    Params = ZeroCostNSGA2Params

    def __init__(self, *, algorithm: str = "nsga2", pop_size: int = 20, generations: int = 10,
                 objectives: list[str] | None = None, proxy_batch_size: int = 64, crossover_prob: float = 0.9,
                 crossover_eta: float = 15.0, mutation_eta: float = 20.0, top_k: int = 1, knee: bool = True,
                 rank_by: str = "mean_rank", seed: int | None = None):
        super().__init__()
        params = ZeroCostNSGA2Params(algorithm=algorithm, pop_size=pop_size, generations=generations,
                                     objectives=objectives or ZeroCostNSGA2Params().objectives,
                                     proxy_batch_size=proxy_batch_size, crossover_prob=crossover_prob,
                                     crossover_eta=crossover_eta, mutation_eta=mutation_eta, top_k=top_k,
                                     knee=knee, rank_by=rank_by, seed=seed)
        self.params = params
        self.objectives = [Objective(o) for o in params.objectives]
        self.seed = 0 if seed is None else seed
        # hash -> record {hash, sample, status: ok|failed, scores, error, generation}
        self.cache: dict[str, dict[str, Any]] = {}
        self.generation = 0
        self.cache_hits = 0
        self._algorithm: Any = None
        self._asked: Any = None
        self._snapshot: bytes | None = None
        self._pending: dict[str, dict[str, Any]] = {}
        # Hooks set by run_search (persistence, progress); None when used directly from Python.
        self.on_record: Callable[[dict[str, Any]], None] | None = None
        self.on_generation: Callable[[ZeroCostNSGA2], None] | None = None
        self.progress: Any = None

    def extra_repr(self) -> str:
        p = self.params
        return (f"algorithm={p.algorithm!r}, pop_size={p.pop_size}, generations={p.generations}, "
                f"objectives={p.objectives}, seed={self.seed}")

    # ------------------------------------------------------------------ NNI strategy protocol
    def _initialize(self, model_space: Any, engine: Any) -> Any:
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_end)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_end)

    def _on_final(self, event: FinalMetricEvent) -> None:
        # The raw dict (all proxies), before NNI's Metrics keeps only 'default'.
        h = arch_hash(event.model.sample)
        if h in self._pending:
            self._pending[h]["metric"] = event.metric

    def _on_end(self, event: TrainingEndEvent) -> None:
        h = arch_hash(event.model.sample)
        pend = self._pending.pop(h, None)
        if pend is None:
            return
        metric = pend.get("metric") if isinstance(pend.get("metric"), dict) else {}
        error = None if event.status == ModelStatus.Trained else f"evaluation ended with status {event.status.value}"
        self.record_result(event.model.sample, metric, pend["generation"], error)

    def record_result(self, sample: dict[str, Any], metric: dict[str, Any], generation: int,
                      error: str | None = None) -> dict[str, Any]:
        """Turn one evaluation's raw metric dict into a cache record (``ok`` or ``failed`` with the reason)."""
        rec: dict[str, Any] = {"hash": arch_hash(sample), "sample": sample, "generation": generation,
                               "seconds": metric.get("seconds")}
        needed = [o.name for o in self.objectives]
        if error is not None:
            rec.update(status="failed", error=error)
        elif "error" in metric:
            rec.update(status="failed", error=str(metric["error"]))
        elif any(not _finite(metric.get(k)) for k in needed):
            bad = next(k for k in needed if not _finite(metric.get(k)))
            rec.update(status="failed", error=f"proxy {bad} is not finite ({metric.get(bad)})")
        else:
            rec.update(status="ok", scores={k: float(v) for k, v in metric.items()
                                            if k not in ("default", "seconds") and _finite(v)})
        self._record(rec)
        return rec

    def _record(self, rec: dict[str, Any]) -> None:
        self.cache[rec["hash"]] = rec
        if self.on_record is not None:
            self.on_record(rec)

    def _proxies(self) -> list[str]:
        names = [o.name for o in self.objectives]
        return names + [p for p in ("params", "flops") if p not in names]

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

    def ask_generation(self, label_values: dict[str, list[Any]]) -> list[dict[str, Any]] | None:
        """The next generation's architectures (pymoo ``ask``), or None when the search is finished."""
        if self._algorithm is None:
            self._algorithm = self._build_algorithm([len(v) for v in label_values.values()])
            self._snapshot = pickle.dumps(self._algorithm)
        if not self._algorithm.has_next():
            return None
        self._asked = self._algorithm.ask()
        X = np.atleast_2d(np.asarray(self._asked.get("X"))).round().astype(int)
        return [decode(label_values, x) for x in X]

    def tell_generation(self, samples: list[dict[str, Any]]) -> None:
        """Give pymoo the scores of the asked generation (every sample must be in the cache)."""
        F, G = self._objective_matrix(samples)
        problem = self._algorithm.problem
        _PymooEvaluator().eval(StaticProblem(problem, F=F, G=G) if G is not None else StaticProblem(problem, F=F),
                               self._asked)
        self._algorithm.tell(infills=self._asked)
        self._asked = None
        # pymoo's own generation counter: NSGA-II asks a whole population at a time, MOEA/D (loop-wise)
        # one offspring per ask, so a MOEA/D generation spans pop_size ask/tell rounds.
        # (pymoo counts the initial population as generation 1 and increments after each tell.)
        self.generation = max(0, int(self._algorithm.n_gen or 1) - 1)
        # Checkpoints hold the algorithm as of the last completed generation (before the next ask), so a
        # resumed search asks the same offspring again and the cache skips those already scored.
        # pymoo's loop-wise MOEA/D holds a live generator inside a generation: snapshot only at boundaries.
        try:
            self._snapshot = pickle.dumps(self._algorithm)
        except TypeError:
            pass
        if self.on_generation is not None:
            self.on_generation(self)

    def _run(self) -> None:
        label_values = categorical_space(self.model_space)
        while (samples := self.ask_generation(label_values)) is not None:
            exhausted = False
            for sample in samples:
                h = arch_hash(sample)
                if h in self.cache:
                    self.cache_hits += 1
                    self._tick()
                    continue
                if h in self._pending:
                    continue
                if not self.wait_for_resource():
                    _logger.warning("NNI budget used up during generation %d; stopping the search", self.generation)
                    exhausted = True
                    break
                self._pending[h] = {"generation": self.generation}
                self.engine.submit_models(self.model_space.freeze(sample))
                self._tick()
            self.engine.wait_models()
            if exhausted:
                break
            self.tell_generation(samples)
        ok = self.scored()
        _logger.info("search done: %d architectures scored (%d failed), %d cache hits, %d generations",
                     len(self.cache), len(self.cache) - len(ok), self.cache_hits, self.generation)

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)
            best = self.best_scores()
            if best:
                self.progress.set_postfix(gen=self.generation, **{k: f"{v:.3g}" for k, v in best.items()})

    def _objective_matrix(self, samples: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        recs = [self.cache[arch_hash(s)] for s in samples]
        F = np.zeros((len(recs), len(self.objectives)))
        ok = np.array([r["status"] == "ok" for r in recs])
        for i, r in enumerate(recs):
            if r["status"] == "ok":
                F[i] = [o.to_min(r["scores"][o.name]) for o in self.objectives]
        if self.params.algorithm == "nsga2":
            return F, np.where(ok, -1.0, 1.0)[:, None]          # failed: infeasible
        good = [self.cache[h] for h in self.cache if self.cache[h]["status"] == "ok"]
        worst = (np.max([[o.to_min(r["scores"][o.name]) for o in self.objectives] for r in good], axis=0)
                 if good else np.zeros(len(self.objectives)))
        F[~ok] = worst + np.abs(worst) + 1.0                     # MOEA/D: failed get a penalty beyond the worst
        return F, None

    # ------------------------------------------------------------------ results
    def scored(self) -> list[dict[str, Any]]:
        return [r for r in self.cache.values() if r["status"] == "ok"]

    def best_scores(self) -> dict[str, float]:
        ok = self.scored()
        if not ok:
            return {}
        out = {}
        for o in self.objectives:
            vals = [r["scores"][o.name] for r in ok]
            out[o.name] = max(vals) if o.goal == "max" else min(vals)
        return out

    def objective_matrix(self, records: list[dict[str, Any]]) -> np.ndarray:
        return np.array([[o.to_min(r["scores"][o.name]) for o in self.objectives] for r in records], dtype=float)

    def pareto_front(self) -> list[dict[str, Any]]:
        """Non-dominated architectures among everything scored (not only the last population)."""
        ok = self.scored()
        if not ok:
            return []
        mask = pareto_mask(self.objective_matrix(ok))
        return [r for r, m in zip(ok, mask) if m]

    def finalists(self) -> list[dict[str, Any]]:
        front = self.pareto_front()
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

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "generation": self.generation, "cache": dict(self.cache),
                "cache_hits": self.cache_hits, "params": self.params.model_dump(),
                "algorithm": self._snapshot}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("version") != 1:
            raise ValueError(f"strategy state: expected version 1, got {state_dict.get('version')!r}")
        self.generation = int(state_dict["generation"])
        self.cache = dict(state_dict["cache"])
        self.cache_hits = int(state_dict.get("cache_hits", 0))
        self._snapshot = state_dict.get("algorithm")
        self._algorithm = pickle.loads(self._snapshot) if self._snapshot is not None else None

    # ------------------------------------------------------------------ mednas driver
    def attach_run_dir(self, rd: Any) -> None:
        """Restore progress from a run directory and persist to it from now on (``mednas search`` and the nnictl
        tuner): ``strategy_state.pt`` plus ``archs.jsonl``, which is authoritative (it also holds what was scored
        after the last state checkpoint); every new record is appended, every generation checkpointed."""
        import torch

        from mednas_nni.io import RunDir, append_jsonl, atomic_torch_save, read_jsonl

        if (rd / RunDir.STATE).exists():
            self.load_state_dict(torch.load(rd / RunDir.STATE, weights_only=False))
        for rec in read_jsonl(rd / RunDir.ARCHS):
            self.cache.setdefault(rec["hash"], rec)
        if self.cache:
            _logger.info("resuming: %d architectures already scored, generation %d", len(self.cache), self.generation)
        self.on_record = lambda rec: append_jsonl(rd / RunDir.ARCHS, rec)
        self.on_generation = lambda s: atomic_torch_save(s.state_dict(), rd / RunDir.STATE)

    def run_search(self, ctx: Any) -> list[dict[str, Any]]:
        """Run (or resume) inside a run directory: archs.jsonl, strategy_state.pt, pareto.csv/png."""
        from nni.nas.evaluator import FunctionalEvaluator
        from nni.nas.execution import SequentialExecutionEngine
        from nni.nas.space import RawFormatModelSpace
        from tqdm.auto import tqdm

        from ._report import write_pareto

        rd = ctx.run_dir
        self.attach_run_dir(rd)
        if self.params.seed is None:
            self.seed = ctx.cfg.run.seed
        inputs, targets = ctx.proxy_batch(self.params.proxy_batch_size)
        evaluator = FunctionalEvaluator(score_architecture, inputs=inputs, targets=targets,
                                        proxies=self._proxies(), device=ctx.device, init_seed=self.seed)
        space = RawFormatModelSpace.from_model(ctx.build_space(), evaluator)
        engine = SequentialExecutionEngine(continue_on_failure=True)
        total = self.params.pop_size * self.params.generations
        with tqdm(total=total, initial=min(total, self.generation * self.params.pop_size), unit="arch",
                  desc=f"zc_{self.params.algorithm}", disable=not ctx.progress, dynamic_ncols=True) as bar:
            self.progress = bar
            try:
                self(space, engine)
            finally:
                self.progress = None
        finalists = self.finalists()
        write_pareto(rd, self, finalists)
        return finalists


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)

"""The pymoo side of the zero-cost search as plain data: build the algorithm, save it as JSON data, rebuild it.

The algorithm is never pickled: its state at a batch boundary is its population (integer codes ``X``, objectives
``F``, constraints ``G``, NSGA-II's ``rank``/``crowding``, MOEA/D's ``ok`` flags, in population order), the generation
counter, the evaluation counter, MOEA/D's running ideal/nadir points and the state of its NumPy ``PCG64`` generator.
:func:`restore_algorithm` builds a fresh algorithm with the same settings and puts that state back, so that the next
``ask`` draws exactly what the uninterrupted algorithm would. The strategy rebuilds its algorithm from this data
after every batch, killed or not, so a resumed search and an uninterrupted one take the same path by construction.

:class:`AlgorithmState` validates the data (types and shapes) before anything is built: a state file holding
anything else (a pickle string, say) is refused with one line.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from mednas_nni.errors import RunDirError

__all__ = ["AlgorithmState", "algorithm_state", "restore_algorithm", "build_algorithm", "NormalisedMOEAD",
           "IntegerProblem"]

Number = float | int | Literal["inf", "-inf", "nan"]


class AlgorithmState(BaseModel):
    """The JSON form of a pymoo algorithm at a batch boundary (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["nsga2", "moead"]
    n_iter: int
    n_eval: int
    rng: dict[str, Any]
    X: list[list[int]]
    F: list[list[Number]]
    G: list[list[Number]] | None = None
    rank: list[int | None] | None = None          # None: infeasible (pymoo ranks feasible individuals only)
    crowding: list[Number | None] | None = None
    ok: list[bool] | None = None
    ideal: list[Number] | None = None
    nadir: list[Number] | None = None


def _enc(a: Any) -> Any:
    """Floats as JSON numbers, the non-finite ones as strings (JSON has no inf/NaN)."""
    if isinstance(a, np.ndarray):
        a = a.tolist()
    if isinstance(a, list):
        return [_enc(v) for v in a]
    if isinstance(a, float) and not math.isfinite(a):
        return "nan" if math.isnan(a) else ("inf" if a > 0 else "-inf")
    return a


def _dec(a: Any) -> np.ndarray:
    return np.array(a, dtype=float)


# ---------------------------------------------------------------------------------------------------- building
from pymoo.algorithms.moo.moead import ParallelMOEAD  # noqa: E402
from pymoo.core.problem import Problem  # noqa: E402


class IntegerProblem(Problem):
    """Integer decision vector, one variable per search-space label (bounds 0 .. len(values) - 1)."""

    def __init__(self, upper: list[int], n_obj: int, constrained: bool):
        super().__init__(n_var=len(upper), n_obj=n_obj, n_ieq_constr=1 if constrained else 0,
                         xl=np.zeros(len(upper)), xu=np.asarray(upper, dtype=float), vtype=int)


class NormalisedMOEAD(ParallelMOEAD):
    """pymoo's batch MOEA/D (one offspring per subproblem per ask) on *normalised* objectives.

    pymoo scalarises raw objectives (PBI for 3 objectives), so an objective with a large range (FLOPs, ~1e7) decides
    every subproblem. Here each subproblem compares ``(F - ideal) / (nadir - ideal)``, with the running ideal and
    nadir points over every architecture scored so far (failed ones, which carry a penalty ``F``, excluded), as
    the reproduction normalised per population. Individuals carry an ``ok`` flag (False: failed).
    """

    #: what the search has met (:class:`~.zc_operators.Archive`; not pymoo's own ``archive``); None: no check
    met: Any = None
    #: matings per subproblem to get a child that is new and valid before the last one stands (a repeat is then a
    #: cache hit, never re-scored; an invalid one is recorded by the core, never built)
    redraws: int = 20

    def _infill(self) -> Any:
        """pymoo's batch infill, then each child met before (or twice in the batch) or rejected by the space is
        mated again from its subproblem's neighbourhood, as NSGA-II's duplicate elimination does for its mating."""
        off = super()._infill()
        if self.met is None:
            return off
        n_parents, batch = self.mating.crossover.n_parents, set()
        for k in range(len(off)):
            for _ in range(self.redraws):
                if self.met.admit(np.asarray(off[k].X), batch):
                    break
                P = self.selection.do(self.problem, self.pop, 1, n_parents,
                                      neighbors=self.neighbors[self.indices[k:k + 1]], random_state=self.random_state)
                pool = self.mating.do(self.problem, self.pop, 1e12, n_max_iterations=1, parents=P,
                                      random_state=self.random_state)
                off[k] = self.random_state.choice(pool)
        return off

    def _update_bounds(self, pop: Any) -> None:
        ok = np.asarray([bool(v) if v is not None else True for v in pop.get("ok")], dtype=bool)
        F = np.asarray(pop.get("F"), dtype=float)[ok]
        if len(F) == 0:
            return
        lo, hi = F.min(0), F.max(0)
        self.ideal = lo if getattr(self, "ideal", None) is None else np.minimum(self.ideal, lo)
        self.nadir = hi if getattr(self, "nadir", None) is None else np.maximum(self.nadir, hi)

    def _initialize_advance(self, infills: Any = None, **kwargs: Any) -> None:
        super()._initialize_advance(infills, **kwargs)
        self.ideal, self.nadir = None, None
        self._update_bounds(infills)

    def _advance(self, infills: Any = None, **kwargs: Any) -> None:
        assert len(self.indices) == len(infills), "one infill per subproblem asked"
        self._update_bounds(infills)
        for k, off in enumerate(infills):
            self._replace(self.indices[k], off)

    def normalise(self, F: np.ndarray) -> np.ndarray:
        if getattr(self, "ideal", None) is None or self.nadir is None:
            return F
        span = np.where(self.nadir > self.ideal, self.nadir - self.ideal, 1.0)
        return (F - self.ideal) / span

    def _replace(self, k: int, off: Any) -> None:
        N = self.neighbors[k]
        zero = np.zeros(self.problem.n_obj)
        FV = self.decomposition.do(self.normalise(self.pop[N].get("F")), weights=self.ref_dirs[N, :],
                                   ideal_point=zero)
        off_FV = self.decomposition.do(self.normalise(off.F[None, :]), weights=self.ref_dirs[N, :], ideal_point=zero)
        better = np.where(off_FV < FV)[0]
        self.pop[N[better]] = off


def build_algorithm(kind: str, upper: list[int], n_obj: int, pop_size: int, generations: int, seed: int, *,
                    sampling: Any, crossover: Any, mutation: Any, mating_factory: Any,
                    eliminate_duplicates: Any) -> Any:
    """A set-up pymoo NSGA-II or (normalised, batch) MOEA/D on :class:`IntegerProblem`."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.selection.tournament import TournamentSelection
    from pymoo.algorithms.moo.nsga2 import binary_tournament
    from pymoo.util.ref_dirs import get_reference_directions

    constrained = kind == "nsga2"       # pymoo's MOEA/D supports no constraints: failed archs get a penalty F
    problem = IntegerProblem(upper, n_obj, constrained)
    if kind == "nsga2":
        selection = TournamentSelection(func_comp=binary_tournament)
        mating = mating_factory(selection, crossover, mutation, eliminate_duplicates=eliminate_duplicates,
                                n_max_iterations=100)
        algo = NSGA2(pop_size=pop_size, sampling=sampling, crossover=crossover, mutation=mutation,
                     eliminate_duplicates=eliminate_duplicates, mating=mating)
    else:
        ref_dirs = get_reference_directions("energy", n_obj, pop_size, seed=seed)
        algo = NormalisedMOEAD(ref_dirs, n_neighbors=min(15, pop_size), prob_neighbor_mating=0.7,
                               sampling=sampling, crossover=crossover, mutation=mutation)
        # MOEA/D keeps one child per subproblem; its own NeighborhoodSelection picks the parents, and a child met
        # before or rejected by the space is mated again (NormalisedMOEAD._infill)
        algo.mating = mating_factory(algo.selection, crossover, mutation, n_max_iterations=1)
        algo.met = getattr(eliminate_duplicates, "archive", None)
    algo.setup(problem, termination=("n_gen", generations), seed=seed, verbose=False)
    return algo


# ---------------------------------------------------------------------------------------------------- state
def algorithm_state(algo: Any, kind: str) -> dict[str, Any]:
    """The JSON data of ``algo`` after a ``tell`` (see :class:`AlgorithmState`)."""
    pop = algo.pop
    state: dict[str, Any] = {
        "kind": kind, "n_iter": int(algo.n_iter), "n_eval": int(algo.evaluator.n_eval),
        "rng": algo.random_state.bit_generator.state,
        "X": np.asarray(pop.get("X")).round().astype(int).tolist(), "F": _enc(np.asarray(pop.get("F"), dtype=float)),
    }
    if kind == "nsga2":
        state["G"] = _enc(np.asarray(pop.get("G"), dtype=float))
        state["rank"] = [None if r is None else int(r) for r in pop.get("rank")]
        state["crowding"] = [None if c is None else _enc(float(c)) for c in pop.get("crowding")]
    else:
        state["ok"] = [bool(v) if v is not None else True for v in pop.get("ok")]
        for key in ("ideal", "nadir"):
            v = getattr(algo, key, None)
            state[key] = None if v is None else _enc(np.asarray(v, dtype=float))
    return state


def validate_state(state: Any, where: str) -> AlgorithmState:
    """:class:`AlgorithmState` of ``state``, or a one-line :class:`RunDirError` naming ``where``."""
    if not isinstance(state, dict):
        raise RunDirError(f"{where}: expected the pymoo algorithm as JSON data (population, generation, RNG state), "
                          f"got a {type(state).__name__} (a pickled object from mednas-nni <= 0.2?); it is never "
                          "unpickled: start a new search")
    try:
        st = AlgorithmState.model_validate(state)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise RunDirError(f"{where}.{loc}: expected the pymoo algorithm state as data, got {err['msg'].lower()}") \
            from None
    n = len(st.X)
    bad = [k for k in ("F", "G", "rank", "crowding", "ok") if getattr(st, k) is not None and len(getattr(st, k)) != n]
    if bad or n == 0:
        raise RunDirError(f"{where}: expected {n or 'at least 1'} rows in X, {', '.join(bad) or 'F'} "
                          "(one per individual of the population), got a different number")
    if not isinstance(st.rng.get("state"), dict) or st.rng.get("bit_generator") != "PCG64":
        raise RunDirError(f"{where}.rng: expected the state of a NumPy PCG64 generator, got {st.rng!r:.80}")
    return st


def restore_algorithm(algo: Any, st: AlgorithmState) -> Any:
    """Put ``st`` into ``algo`` (fresh from :func:`build_algorithm` with the same settings); returns ``algo``."""
    from pymoo.core.population import Population

    data: dict[str, Any] = {"X": np.array(st.X, dtype=int), "F": _dec(st.F)}
    if st.G is not None:
        data["G"] = _dec(st.G)
    if st.rank is not None:
        data["rank"] = np.array([None if r is None else int(r) for r in st.rank], dtype=object)
    if st.crowding is not None:
        data["crowding"] = np.array([None if c is None else float(c) for c in st.crowding], dtype=object)
    if st.ok is not None:
        data["ok"] = np.array(st.ok, dtype=bool)
    pop = Population.new(**data)
    for ind in pop:
        ind.evaluated = {"F", "G", "H", "CV"} if st.G is not None else {"F"}
    algo._initialize()                      # pymoo's start-of-run bookkeeping (timer, empty optimum)
    algo.pop, algo.is_initialized = pop, True
    algo.evaluator.n_eval = st.n_eval
    try:
        algo.random_state.bit_generator.state = st.rng
    except (TypeError, ValueError, KeyError) as e:
        raise RunDirError(f"strategy state: rng: expected the state of a NumPy PCG64 generator, got an invalid one "
                          f"({e})") from None
    if st.kind == "moead":
        algo.ideal = None if st.ideal is None else _dec(st.ideal)
        algo.nadir = None if st.nadir is None else _dec(st.nadir)
    # pymoo updates the termination with the counter of the finished iteration, then increments it
    algo.n_iter = st.n_iter - 1
    algo._set_optimum()
    algo.termination.update(algo)
    algo.n_iter = st.n_iter
    return algo

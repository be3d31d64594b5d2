"""GeNAS-WF: a generational genetic algorithm over plain-CNN chromosomes, as an NNI 3.0 multi-trial strategy.

Miahi, Mirroshandel & Nasr, "Genetic Neural Architecture Search for automatic assessment of human sperm images",
arXiv:1909.09432. What the abstract fixes: a GA as meta-controller over a constrained space of plain CNNs
(:mod:`mednas_nni.search_spaces.genas_cnn`), one search per MHSMA label, the "GeNAS Weighting Factor" fitness for
noisy validation curves (:mod:`mednas_nni.evaluators.fitness`) and a hash table so that no architecture is trained
twice. Everything else is **our reading** (every constant is a parameter):

* **Population.** ``population_size`` distinct, valid random chromosomes (canonical, see below).
* **Evaluation.** Each new individual is one NNI trial (:func:`~mednas_nni.strategies._train_trial.train_and_score`,
  ``epochs_per_trial`` epochs of the task's training); its result holds ``fitness``, a function of the validation
  curve (``fitness`` names one in :data:`~mednas_nni.evaluators.fitness.FITNESS`, GeNAS-WF by default), while
  ``default`` (what NNI's web UI plots) is the task's selection metric.
* **Selection.** Tournament of ``tournament_size`` individuals drawn without replacement from the scored members
  of the current generation; the fittest wins.
* **Elitism.** The ``elitism`` best of a generation go on unchanged (cache hits: they are not retrained).
* **Crossover** (probability ``crossover_prob``): one-point crossover over the *layer list*. With parents' layer
  lists ``A`` (depth ``dA``) and ``B`` (``dB``) and a cut ``c`` in ``1 .. max(dA, dB) - 1``, the children are
  ``A[:c] + B[c:]`` and ``B[:c] + A[c:]`` (a layer = its filters/kernel/stride/pool genes, moved together). Their
  depths stay within ``[min(dA, dB), max(dA, dB)]``, hence within the space. The head gene comes from the first parent.
* **Mutation**: each gene (depth, every active layer gene, head dropout) is redrawn with probability
  ``mutation_prob`` (a different value). Layers added by a depth mutation get random genes.
* **Pruning.** A child whose feature map would shrink to ``<= 0`` pixels (``space.is_valid``) is recorded as
  ``invalid`` in ``archs.jsonl`` and never trained; another child is drawn instead.
* **Hash cache.** Every result is kept by :func:`~mednas_nni.strategies._utils.arch_hash` of the *canonical*
  chromosome (genes of layers beyond ``depth`` reset, so they never change the hash). A cached architecture is never
  submitted again (a cache hit). The cache is persisted in the run directory (``archs.jsonl``), and re-seeded from
  NNI's trial database (``engine.list_models()``) on resume.
* **Budget.** At most ``max_trials`` trainings (default ``population_size * generations``); failed trials count.
* **Finalists**: the ``top_k`` architectures by fitness, retrained by the core.

The core runs the GA (``propose`` = a generation, ``observe`` = its fitnesses) on the engine of the config's
``engine`` section: in-process, one NNI trial per individual on NNI's local training service (web UI), or under
``nnictl`` with :class:`~mednas_nni.engines.nnictl_tuner.MedNASTuner`. Each individual's training is the task's
(:func:`~mednas_nni.strategies._train_trial.train_and_score`); the cache, pruning records, checkpoints and resume
are the core's (:class:`~mednas_nni.engines.search_loop.SearchLoop`): the GA state (population, generation, RNG)
is saved at every generation boundary, so a resumed search proposes the interrupted generation again and
everything already trained is a cache hit.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from mednas_nni.contracts import MultiTrialStrategy, PluginParams, TrialResult, TrialSpec
from mednas_nni.engines.records import arch_hash

__all__ = ["GeNASWF", "GeNASWFParams"]

_logger = logging.getLogger(__name__)


class GeNASWFParams(PluginParams):
    """Config ``params`` of the ``genas_wf`` strategy. Every default is ours (the paper's are not available)."""

    population_size: int = Field(10, ge=2)
    generations: int = Field(5, ge=1)
    tournament_size: int = Field(3, ge=1)
    elitism: int = Field(1, ge=0)
    crossover_prob: float = Field(0.9, ge=0, le=1)
    mutation_prob: float = Field(0.1, ge=0, le=1)
    epochs_per_trial: int = Field(5, ge=1)
    fitness: str = "genas_wf"
    fitness_params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None                       # None: the run's seed
    top_k: int = Field(3, ge=1)                   # finalists retrained by the core
    max_trials: int | None = Field(None, ge=1)    # trainings in all; None: population_size * generations
    # training of one individual (one trial)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    augment: bool = False                         # MONAI flip + affine in trials (slow on CPU)
    max_batches_per_epoch: int | None = Field(None, ge=1)
    torch_threads: int | None = Field(None, ge=1)

    @field_validator("tournament_size")
    @classmethod
    def _tournament(cls, v: int, info: ValidationInfo) -> int:
        pop = info.data.get("population_size")
        if pop is not None and v > pop:
            raise ValueError(f"at most population_size ({pop})")
        return v

    @field_validator("elitism")
    @classmethod
    def _elitism(cls, v: int, info: ValidationInfo) -> int:
        pop = info.data.get("population_size")
        if pop is not None and v >= pop:
            raise ValueError(f"less than population_size ({pop})")
        return v

    @field_validator("fitness")
    @classmethod
    def _fitness(cls, v: str) -> str:
        from mednas_nni.errors import did_you_mean
        from mednas_nni.evaluators.fitness import FITNESS

        if v not in FITNESS:
            raise ValueError(f"a fitness function{did_you_mean(v, FITNESS)} (one of {', '.join(FITNESS)})")
        return v

    @field_validator("fitness_params")
    @classmethod
    def _fitness_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from mednas_nni.evaluators.fitness import get_fitness

        if info.data.get("fitness") is not None:
            get_fitness(info.data["fitness"], v)    # ValueError naming the bad parameter
        return v


def _jsonable_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _restore_rng(state: list[Any]) -> random.Random:
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


class GeNASWF(MultiTrialStrategy):
    """GeNAS-WF genetic search (tournament, elitism, the space's crossover and mutation, hash cache).

    Miahi et al., arXiv:1909.09432; the operators and constants are our reading (see the module doc). Parameters
    are those of :class:`GeNASWFParams`; the training of one individual is ``epochs_per_trial`` epochs of the task.

    Example::

        strategy = GeNASWF(population_size=8, generations=4, seed=0)
        # the core: SearchLoop(strategy, space, ctx) on an engine (mednas_nni.engines)
    """

    name = "genas_wf"
    Params = GeNASWFParams

    def __init__(self, **params: Any):
        self.params = GeNASWFParams(**params)
        p = self.params
        self.max_evaluations = p.max_trials or p.population_size * p.generations
        self.rng = random.Random(0 if p.seed is None else p.seed)
        self.population: list[dict[str, Any]] | None = None
        self.generation = 0
        self.finished = False
        self.exhausted = False
        # hash -> {"sample", "fitness", "generation"} of every individual trained so far
        self.scores: dict[str, dict[str, Any]] = {}
        self._labels: dict[str, list[Any]] = {}

    def __repr__(self) -> str:
        p = self.params
        return (f"GeNASWF(population_size={p.population_size}, generations={p.generations}, "
                f"tournament_size={p.tournament_size}, elitism={p.elitism}, crossover_prob={p.crossover_prob}, "
                f"mutation_prob={p.mutation_prob}, fitness={p.fitness!r})")

    # ------------------------------------------------------------------ contract
    def setup(self, space: Any, ctx: Any, reject: Callable[[dict[str, Any], str], None]) -> None:
        super().setup(space, ctx, reject)
        self._labels = space.label_values()

    def trial(self, ctx: Any) -> TrialSpec:
        from ._train_trial import training_trial_spec

        return training_trial_spec(ctx, self.params)

    def propose(self) -> list[dict[str, Any]] | None:
        if self.finished:
            return None
        if self.population is None:
            self.generation = 0
            self.population = self._initial_population()
        else:
            self._log_generation()
            if self.exhausted or self.generation + 1 >= self.params.generations:
                self.finished = True
                return None
            self.population = self._next_generation()
            self.generation += 1
        return [dict(s) for s in self.population]

    def observe(self, results: list[TrialResult]) -> None:
        for r in results:
            if r.status == "skipped":
                self.exhausted = True
            elif r.ok and r.hash not in self.scores:
                self.scores[r.hash] = {"sample": r.sample, "fitness": float(r.metrics["fitness"]),
                                       "generation": self.generation}

    def finalists(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The ``top_k`` trained architectures by fitness (ties: the earlier generation)."""
        ok = [r for r in records if r["status"] == "ok"]
        ok.sort(key=lambda r: (-r["metrics"]["fitness"], r.get("batch", 0)))
        return [{"hash": r["hash"], "sample": r["sample"], "describe": r.get("describe"),
                 "fitness": r["metrics"]["fitness"], "generation": r.get("batch"),
                 "chosen_as": f"top-{i + 1} by {self.params.fitness} fitness"}
                for i, r in enumerate(ok[:self.params.top_k])]

    def state_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "finished": self.finished, "exhausted": self.exhausted,
                "population": [dict(s) for s in self.population] if self.population is not None else None,
                "rng": _jsonable_state(self.rng), "scores": self.scores}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generation = int(state["generation"])
        self.finished, self.exhausted = bool(state["finished"]), bool(state.get("exhausted", False))
        self.population = [dict(s) for s in state["population"]] if state["population"] is not None else None
        self.rng = _restore_rng(state["rng"])
        self.scores = {h: dict(v) for h, v in state.get("scores", {}).items()}

    def progress_postfix(self) -> dict[str, Any]:
        best = max((v["fitness"] for v in self.scores.values()), default=None)
        return {"gen": self.generation, **({"best": f"{best:.4f}"} if best is not None else {})}

    # ------------------------------------------------------------------ GA
    def _draw_valid(self, make: Callable[[], dict[str, Any]], attempts: int) -> dict[str, Any] | None:
        """``make()`` until a valid chromosome comes out; invalid ones are recorded (once) and never trained."""
        for _ in range(attempts):
            s = self.space.canonicalize(make())
            ok, why = self.space.is_valid(s)
            if ok:
                return s
            self.reject(s, why)
        return None

    def _random_sample(self) -> dict[str, Any]:
        return {k: self.rng.choice(v) for k, v in self._labels.items()}

    def _initial_population(self) -> list[dict[str, Any]]:
        pop: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(self.params.population_size * 20):
            if len(pop) == self.params.population_size:
                break
            s = self._draw_valid(self._random_sample, 100)
            if s is None:
                break
            if arch_hash(s) not in seen:
                seen.add(arch_hash(s))
                pop.append(s)
        if not pop:
            from mednas_nni.errors import SearchError

            raise SearchError("genas_wf: no valid architecture found in 100 random draws; the space is too deep for "
                              "the input size (lower max_depth, or use padding: same)")
        return pop

    def _scored(self, pop: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
        out, seen = [], set()
        for s in pop:
            h = arch_hash(s)
            rec = self.scores.get(h)
            if rec is not None and h not in seen:
                seen.add(h)
                out.append((rec["sample"], rec["fitness"]))
        return out

    def _tournament(self, scored: list[tuple[dict[str, Any], float]]) -> dict[str, Any]:
        k = min(self.params.tournament_size, len(scored))
        picks = self.rng.sample(range(len(scored)), k)
        return scored[max(picks, key=lambda i: (scored[i][1], -i))][0]

    def _next_generation(self) -> list[dict[str, Any]]:
        p = self.params
        scored = self._scored(self.population or [])
        if not scored:   # the whole generation failed: fall back to everything scored so far
            scored = [(v["sample"], v["fitness"]) for v in self.scores.values()]
        if not scored:
            _logger.warning("generation %d: nothing was scored; drawing a new random population", self.generation)
            return self._initial_population()
        ranked = sorted(scored, key=lambda t: -t[1])
        children = [dict(s) for s, _ in ranked[:p.elitism]]
        queue: list[dict[str, Any]] = []

        def make() -> dict[str, Any]:
            if not queue:
                a, b = self._tournament(scored), self._tournament(scored)
                if self.rng.random() < p.crossover_prob:
                    queue.extend(self.space.crossover(a, b, self.rng))
                else:
                    queue.extend([dict(a), dict(b)])
            return self.space.mutate(queue.pop(0), p.mutation_prob, self.rng)

        while len(children) < p.population_size:
            child = self._draw_valid(make, 100)
            if child is None:
                break
            children.append(child)
        return children

    def _log_generation(self) -> None:
        fits = [f for _, f in self._scored(self.population or [])]
        _logger.info("generation %d: %d/%d scored, best %.4f, mean %.4f", self.generation, len(fits),
                     len(self.population or []), max(fits, default=float("nan")),
                     sum(fits) / len(fits) if fits else float("nan"))

"""GeNAS-WF: a generational genetic algorithm over plain-CNN chromosomes, as an NNI 3.0 multi-trial strategy.

Miahi, Mirroshandel & Nasr, "Genetic Neural Architecture Search for automatic assessment of human sperm images",
arXiv:1909.09432. What the abstract fixes: a GA as meta-controller over a constrained space of plain CNNs
(:mod:`mednas_nni.search_spaces.genas_cnn`), one search per MHSMA label, the "GeNAS Weighting Factor" fitness for
noisy validation curves (:mod:`mednas_nni.evaluators.fitness`) and a hash table so that no architecture is trained
twice. Everything else is **our reading** (every constant is a parameter):

* **Population.** ``population_size`` distinct, valid random chromosomes (canonical, see below).
* **Evaluation.** Each new individual is one NNI trial (:func:`~mednas_nni.evaluators.genas_trial.genas_trial`,
  ``epochs_per_trial`` epochs); its final metric ``default`` is the fitness (``fitness`` names a function of
  :data:`~mednas_nni.evaluators.fitness.FITNESS`, GeNAS-WF by default).
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

``mednas search`` runs the GA as a multi-trial :class:`~nni.nas.experiment.NasExperiment` on NNI's local training
service (``engine: local``: web UI on ``port``, ``trial_concurrency`` trials at a time, GPU keys passed through),
or in-process on NNI's ``SequentialExecutionEngine`` (``engine: sequential``: fast, no web UI, for tests and
benchmarks). **The NNI manager listens on all network interfaces** (NNI has no host option): browse
``http://127.0.0.1:PORT`` and firewall the port on shared machines.

Resume (``mednas resume RUN_DIR``): the GA state is saved at every generation boundary (``strategy_state.pt``) and
every result as it arrives (``archs.jsonl``). The NNI experiment id is kept in ``status.json``
(``nni_experiment``) and ``nni_experiment.json``. On resume an orphaned NNI manager of that id (left by a killed
driver) is stopped by its id, the experiment is resumed with NNI's ``resume`` (with the NNI 3.0 ``ImportData``
hang patched once, see :func:`patch_nni_resume_hang`), and the current generation is replayed: what was already
trained is a cache hit. Trials that were running when the driver died were cancelled with the orphaned manager;
they are trained again (an interrupted training is not a result).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ModelStatus
from nni.nas.strategy.base import Strategy
from pydantic import Field, ValidationInfo, field_validator

from mednas_nni.plugins import PluginParams, SearchDriver

from ._utils import arch_hash, categorical_space

__all__ = ["GeNASWF", "GeNASWFParams", "patch_nni_resume_hang", "stop_nni_experiment", "one_point_crossover"]

_logger = logging.getLogger(__name__)

_STATE_VERSION = 1
_TERMINAL = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")


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
    # training of one individual (one NNI trial)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    augment: bool = False                         # MONAI flip + affine in trials (slow on CPU)
    max_batches_per_epoch: int | None = Field(None, ge=1)
    torch_threads: int | None = Field(None, ge=1)
    input_size: int | None = Field(None, ge=1)    # None: the data set's image size
    # NNI
    engine: Literal["local", "sequential"] = "local"
    trial_concurrency: int = Field(1, ge=1)
    trial_gpu_number: int = Field(0, ge=0)
    use_active_gpu: bool = False
    port: int = Field(8080, ge=1, le=65535)
    max_trial_number: int | None = Field(None, ge=1)   # NNI's cap; None: max_trials + population_size

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


# ---------------------------------------------------------------------------------------------------- operators
def _layer_keys(label_values: dict[str, list[Any]]) -> tuple[int, list[str]]:
    """``(max_depth, gene names per layer)`` from labels ``layer{i}/{gene}``."""
    idx = sorted({int(k[5:k.index("/")]) for k in label_values if k.startswith("layer") and "/" in k})
    genes = [k.split("/", 1)[1] for k in label_values if k.startswith("layer0/")]
    return (idx[-1] + 1 if idx else 0), genes


def _get_layers(sample: dict[str, Any], genes: list[str]) -> list[dict[str, Any]]:
    return [{g: sample[f"layer{i}/{g}"] for g in genes} for i in range(int(sample["depth"]))]


def _set_layers(base: dict[str, Any], layers: list[dict[str, Any]], label_values: dict[str, list[Any]]
                ) -> dict[str, Any]:
    """A canonical sample: ``base``'s non-layer genes, ``layers`` as the active layers, the rest reset."""
    out = {k: (v[0] if k.startswith("layer") else base[k]) for k, v in label_values.items()}
    out["depth"] = len(layers)
    for i, layer in enumerate(layers):
        for g, v in layer.items():
            out[f"layer{i}/{g}"] = v
    return out


def one_point_crossover(a: dict[str, Any], b: dict[str, Any], label_values: dict[str, list[Any]],
                        rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    """One-point crossover over the layer lists (see the module doc); returns two canonical children."""
    _, genes = _layer_keys(label_values)
    la, lb = _get_layers(a, genes), _get_layers(b, genes)
    longest = max(len(la), len(lb))
    if longest < 2:
        return dict(a), dict(b)
    c = rng.randint(1, longest - 1)
    return (_set_layers(a, la[:c] + lb[c:], label_values), _set_layers(b, lb[:c] + la[c:], label_values))


def mutate(sample: dict[str, Any], label_values: dict[str, list[Any]], prob: float, rng: random.Random
           ) -> dict[str, Any]:
    """Per-gene mutation: each active gene is redrawn (to a different value) with probability ``prob``."""
    _, genes = _layer_keys(label_values)

    def redraw(key: str, current: Any) -> Any:
        others = [v for v in label_values[key] if v != current]
        return rng.choice(others) if others else current

    layers = _get_layers(sample, genes)
    out = dict(sample)
    if "depth" in label_values and rng.random() < prob:
        depth = redraw("depth", int(sample["depth"]))
        while len(layers) < depth:    # new layers get random genes
            i = len(layers)
            layers.append({g: rng.choice(label_values[f"layer{i}/{g}"]) for g in genes})
        layers = layers[:depth]
    for i, layer in enumerate(layers):
        for g in genes:
            if rng.random() < prob:
                layer[g] = redraw(f"layer{i}/{g}", layer[g])
    for k in label_values:
        if k != "depth" and not k.startswith("layer") and rng.random() < prob:
            out[k] = redraw(k, sample[k])
    return _set_layers(out, layers, label_values)


# ---------------------------------------------------------------------------------------------------- NNI helpers
_PATCHED = False


def patch_nni_resume_hang() -> None:
    """Let NNI 3.0's tuner command channel skip unknown commands (applied once per process).

    On a NAS resume the NNI manager sends ``ImportData``; ``TunerCommandChannel.receive`` raises
    ``ValueError('Unknown command type')``, the listener thread dies and the strategy waits forever for a worker
    (NNI_NOTES §5). Skipping the unknown command is all the NAS engine needs (it replays nothing from it).
    """
    global _PATCHED
    if _PATCHED:
        return
    from nni.runtime.tuner_command_channel import channel as _ch

    original = _ch.TunerCommandChannel.receive

    def _receive_skip_unknown(self: Any) -> Any:
        while True:
            try:
                return original(self)
            except ValueError as e:
                if "Unknown command type" not in str(e):
                    raise
                _logger.debug("skipping an unknown NNI command on the tuner channel: %s", e)

    _ch.TunerCommandChannel.receive = _receive_skip_unknown
    _PATCHED = True


def _manifest(exp_id: str, manifest: Path | None = None) -> dict[str, Any] | None:
    if manifest is not None:
        try:
            info = json.loads(Path(manifest).read_text()).get(exp_id)
        except (OSError, json.JSONDecodeError):
            return None
    else:
        from nni.tools.nnictl.config_utils import Experiments

        info = Experiments().get_all_experiments().get(exp_id)
    return info if isinstance(info, dict) else None


def _experiment_processes(exp_id: str, manager_pid: int | None) -> list[Any]:
    """The NNI manager of ``exp_id`` (its command line names the id) and its trials (``NNI_EXP_ID`` = the id)."""
    import psutil

    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in me:
            continue
        try:
            if proc.pid == manager_pid and exp_id in " ".join(proc.info["cmdline"] or []):
                out.insert(0, proc)
            elif proc.environ().get("NNI_EXP_ID") == exp_id:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def stop_nni_experiment(exp_id: str, timeout: float = 30.0, manifest: Path | None = None) -> bool:
    """Stop what is left of NNI experiment ``exp_id`` (e.g. after its driver was killed): manager, then trials.

    Only processes of exactly this experiment are signalled: the manager recorded for this id in NNI's manifest
    (``~/nni-experiments/.experiment``, or ``manifest``) whose command line names the id, and trial processes whose
    ``NNI_EXP_ID`` is the id (a killed driver's manager keeps running its trials; cancelling them keeps a late
    result of an orphaned trial from landing in the database after the resumed search re-submitted it). This is
    ``nnictl stop ID`` plus the trials; never ``--all``. Returns True if anything was stopped.
    """
    import psutil

    info = _manifest(exp_id, manifest)
    if info is None:
        return False
    procs = _experiment_processes(exp_id, info.get("pid"))
    for proc in procs:
        _logger.warning("stopping %s of NNI experiment %s (pid %d)",
                        "the orphaned manager" if proc.pid == info.get("pid") else "an orphaned trial", exp_id,
                        proc.pid)
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    if manifest is None and info.get("status") != "STOPPED":
        from nni.tools.nnictl.config_utils import Experiments

        Experiments().update_experiment(exp_id, "status", "STOPPED")
        Experiments().update_experiment(exp_id, "endTime", int(time.time() * 1000))
    return bool(procs)


def _user_space(model_space: Any) -> Any:
    """The user's ModelSpace behind an NNI executable space (raw or simplified format)."""
    inner = getattr(model_space, "model_space", None)
    if inner is not None:
        return inner
    model = getattr(model_space, "model", None)
    if model is not None and hasattr(model, "trace_symbol"):
        return model.trace_symbol(*model.trace_args, **model.trace_kwargs)
    return model_space


def _jsonable_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _restore_rng(state: list[Any]) -> random.Random:
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


# ---------------------------------------------------------------------------------------------------- strategy
class GeNASWF(Strategy, SearchDriver):
    """GeNAS-WF genetic search (tournament, elitism, layer-list crossover, hash cache) as an NNI strategy.

    Miahi et al., arXiv:1909.09432; the operators and constants are our reading (see the module doc).

    Args:
        population_size: individuals per generation.
        generations: generations (the first one is random).
        tournament_size: individuals drawn per tournament (at most ``population_size``).
        elitism: best individuals copied unchanged into the next generation (cache hits).
        crossover_prob: probability of one-point layer-list crossover for a pair of parents.
        mutation_prob: per-gene probability of redrawing a gene.
        epochs_per_trial: training epochs of one individual (one NNI trial).
        fitness: name in :data:`mednas_nni.evaluators.fitness.FITNESS` (``genas_wf``: GeNAS-WF of the val
            balanced-accuracy curve); ``fitness_params`` are its keyword arguments.
        seed: seed of the GA's random choices and of the trials' training (None: ``run.seed``).
        top_k: finalists handed to the core for retraining.
        max_trials: trainings in all, failed ones included (None: ``population_size * generations``).
        batch_size, lr, weight_decay, augment, max_batches_per_epoch, torch_threads: training of one trial.
        input_size: image size for the validity check (None: the data set's).
        engine: ``local`` (NasExperiment on NNI's local training service, web UI) or ``sequential`` (in-process).
        trial_concurrency, trial_gpu_number, use_active_gpu, port, max_trial_number: passed to NNI's experiment
            config (``max_trial_number`` None: ``max_trials + population_size``, slack for cancelled trials).

    Example::

        strategy = GeNASWF(population_size=8, generations=4, input_size=64, engine="sequential", seed=0)
        strategy(SimplifiedModelSpace.from_model(GeNASCNNSpace(), FunctionalEvaluator(genas_trial, ...)),
                 SequentialExecutionEngine(continue_on_failure=True))
        strategy.finalists()
    """

    name = "genas_wf"
    Params = GeNASWFParams

    def __init__(self, *, population_size: int = 10, generations: int = 5, tournament_size: int = 3,
                 elitism: int = 1, crossover_prob: float = 0.9, mutation_prob: float = 0.1,
                 epochs_per_trial: int = 5, fitness: str = "genas_wf", fitness_params: dict[str, Any] | None = None,
                 seed: int | None = None, top_k: int = 3, max_trials: int | None = None, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 0.0, augment: bool = False,
                 max_batches_per_epoch: int | None = None, torch_threads: int | None = None,
                 input_size: int | None = None, engine: str = "local", trial_concurrency: int = 1,
                 trial_gpu_number: int = 0, use_active_gpu: bool = False, port: int = 8080,
                 max_trial_number: int | None = None):
        super().__init__()
        self.params = GeNASWFParams(
            population_size=population_size, generations=generations, tournament_size=tournament_size,
            elitism=elitism, crossover_prob=crossover_prob, mutation_prob=mutation_prob,
            epochs_per_trial=epochs_per_trial, fitness=fitness, fitness_params=dict(fitness_params or {}), seed=seed,
            top_k=top_k, max_trials=max_trials, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            augment=augment, max_batches_per_epoch=max_batches_per_epoch, torch_threads=torch_threads,
            input_size=input_size, engine=engine, trial_concurrency=trial_concurrency,
            trial_gpu_number=trial_gpu_number, use_active_gpu=use_active_gpu, port=port,
            max_trial_number=max_trial_number)
        p = self.params
        self.max_trials = p.max_trials or p.population_size * p.generations
        self.input_size = p.input_size
        self.rng = random.Random(0 if seed is None else seed)
        # hash -> record {hash, sample, status: trained|failed|invalid, fitness, generation, ...}
        self.cache: dict[str, dict[str, Any]] = {}
        self.population: list[dict[str, Any]] | None = None
        self.generation = 0
        self.finished = False
        self.cache_hits = 0
        self.submitted: list[str] = []            # hashes submitted by this process, in order (tests, benchmark)
        self._submitted_set: set[str] = set()
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._space: Any = None
        self._labels: dict[str, list[Any]] = {}
        self._exhausted = False
        # Hooks set by run_search (persistence, progress); None when used directly from Python.
        self.on_record: Callable[[dict[str, Any]], None] | None = None
        self.on_checkpoint: Callable[[GeNASWF], None] | None = None
        self.error_dir: Path | None = None
        self.progress: Any = None

    def extra_repr(self) -> str:
        p = self.params
        return (f"population_size={p.population_size}, generations={p.generations}, "
                f"tournament_size={p.tournament_size}, elitism={p.elitism}, crossover_prob={p.crossover_prob}, "
                f"mutation_prob={p.mutation_prob}, fitness={p.fitness!r}, engine={p.engine!r}")

    def _set_seed(self, seed: int) -> None:
        """Reseed before the search starts (``mednas search`` fills an unset seed from ``run.seed``)."""
        if self.population is None and not self.cache:
            self.rng = random.Random(seed)

    # ------------------------------------------------------------------ chromosome helpers
    def canonical(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The space's canonical form; for a space without ``canonicalize``, values mapped to the space's objects
        (a JSON round trip through NNI's manager turns ``0.0`` into ``0``)."""
        canon = getattr(self._space, "canonicalize", None)
        if canon is not None:
            return canon(sample)
        return {k: next((v for v in self._labels.get(k, []) if v == x), x) for k, x in sample.items()}

    def hash(self, sample: dict[str, Any]) -> str:
        """Canonical architecture hash (genes beyond ``depth`` ignored)."""
        return arch_hash(self.canonical(sample))

    def valid(self, sample: dict[str, Any]) -> tuple[bool, str]:
        check = getattr(self._space, "is_valid", None)
        if check is None:
            return True, ""
        if check(sample, self.input_size):
            return True, ""
        sizes = self._space.spatial_sizes(sample, self.input_size)
        return False, f"feature map shrinks to {sizes[-1]} px at layer {len(sizes) - 1} (sizes {sizes})"

    # ------------------------------------------------------------------ NNI strategy protocol
    def _initialize(self, model_space: Any, engine: Any) -> Any:
        if self._space is None:
            self._space = _user_space(model_space)
        self._labels = categorical_space(model_space)
        if hasattr(self._space, "is_valid") and self.input_size is None:
            raise ValueError("GeNASWF: input_size is not set; give the image size (mednas search takes it from "
                             "the data set) so that invalid architectures can be pruned before training")
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_end)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_end)

    def _on_final(self, event: FinalMetricEvent) -> None:
        # The raw dict (fitness, curve, val metrics), before NNI's Metrics keeps only 'default'.
        with self._lock:
            pend = self._pending.get(self.hash(event.model.sample))
            if pend is not None:
                pend["metric"] = event.metric

    def _on_end(self, event: TrainingEndEvent) -> None:
        with self._lock:
            h = self.hash(event.model.sample)
            pend = self._pending.pop(h, None)
            if pend is None or h in self.cache:
                return
            if event.status == ModelStatus.Interrupted:
                _logger.warning("training of %s was interrupted; it is not recorded and will run again on resume", h)
                return
            metric = pend.get("metric")
            rec: dict[str, Any] = {"hash": h, "sample": self.canonical(event.model.sample),
                                   "generation": pend["generation"], "seconds": time.time() - pend["t0"]}
            if event.status == ModelStatus.Trained and isinstance(metric, dict) and _finite(metric.get("default")):
                rec.update(status="trained", fitness=float(metric["default"]),
                           metrics={k: v for k, v in metric.items() if k not in ("default", "history")},
                           history=metric.get("history"))
            elif event.status == ModelStatus.Trained and _finite(metric):
                rec.update(status="trained", fitness=float(metric), metrics={}, history=None)
            else:
                rec.update(status="failed", fitness=None, error=self._failure_reason(h, event.status, metric))
            self._record(rec)

    def _failure_reason(self, h: str, status: ModelStatus, metric: Any) -> str:
        if self.error_dir is not None and (self.error_dir / f"{h}.txt").exists():
            return (self.error_dir / f"{h}.txt").read_text().splitlines()[0][:500]
        if status == ModelStatus.Trained:
            return f"the trial reported no numeric final 'default' metric (got {metric!r})"
        return (f"the trial ended with status {status.value} (NNI: FAILED, or USER_CANCELED when killed or over "
                "maxTrialDuration); see the trial log in the NNI web UI")

    def _record(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self.cache[rec["hash"]] = rec
            if self.on_record is not None:
                self.on_record(rec)
            if self.progress is not None and rec["status"] != "invalid":
                self.progress.update(1)
                best = self.best()
                if best is not None:
                    self.progress.set_postfix(gen=self.generation, best=f"{best['fitness']:.4f}",
                                              hits=self.cache_hits)

    def _engine_trials(self) -> list[tuple[dict[str, Any], str, Any]]:
        """``(sample, 'running' | 'trained' | 'failed', final metric)`` of every model the engine knows.

        With NNI's training service this reads the manager's trial list directly: a trial NNI re-ran on resume
        carries two parameter records (``parameter_source: resumed``), and ``engine.list_models()`` skips such
        trials ("unexpected number of parameters").
        """
        binding = getattr(self.engine, "nodejs_binding", None)
        out: list[tuple[dict[str, Any], str, Any]] = []
        if binding is None or not hasattr(binding, "list_trial_jobs"):
            for m in self.engine.list_models():
                state = ("running" if m.status == ModelStatus.Training else
                         "trained" if m.status == ModelStatus.Trained else "failed")
                if m.sample is not None:
                    out.append((m.sample, state, m.metric))
            return out
        for trial in binding.list_trial_jobs():
            if not trial.hyperParameters:
                continue
            params = trial.hyperParameters[-1].parameters
            sample = params.get("sample") if isinstance(params, dict) else getattr(params, "sample", None)
            if not isinstance(sample, dict):
                continue
            # NOTE: a trial NNI re-runs on resume shows status ADD_RESUMED first (NNI's own engine counts that as
            # Failed); only the terminal states below are final.
            state = ("trained" if trial.status == "SUCCEEDED" else
                     "failed" if trial.status in _TERMINAL else "running")
            _logger.debug("NNI trial %s: %s (%d parameter records)", trial.trialJobId, trial.status,
                          len(trial.hyperParameters))
            out.append((sample, state, trial.finalMetricData[-1].data if trial.finalMetricData else None))
        return out

    def _wait_for_resumed_trials(self, timeout: float = 3600.0) -> None:
        """Wait for trials NNI itself re-runs on resume (those running when the driver died: ``ADD_RESUMED``).

        Their results land in NNI's database, not in our callbacks; waiting and then re-seeding the cache from the
        database keeps the GA from training the same architecture a second time in parallel.
        """
        t0, told = time.time(), False
        while time.time() - t0 < timeout:
            running = [s for s, state, _ in self._engine_trials() if state == "running"]
            if not running:
                return
            if not told:
                _logger.info("waiting for %d trial(s) that NNI resumed from the interrupted session", len(running))
                told = True
            time.sleep(2.0)
        _logger.warning("NNI's resumed trials did not finish within %.0f s; going on without them", timeout)

    def _reseed_from_engine(self) -> None:
        """Add every architecture NNI already trained (its database survives a killed driver) to the cache."""
        self._wait_for_resumed_trials()
        n = 0
        for sample, state, metric in self._engine_trials():
            h = self.hash(sample)
            if state != "trained" or (h in self.cache and self.cache[h]["status"] == "trained"):
                continue
            raw = metric if isinstance(metric, dict) else {"default": metric}
            if not _finite(raw.get("default")):
                continue
            rec = {"hash": h, "sample": self.canonical(sample), "status": "trained", "fitness": float(raw["default"]),
                   "generation": self.generation, "source": "nni-db",
                   "metrics": {k: v for k, v in raw.items() if k not in ("default", "history")},
                   "history": raw.get("history")}
            self._record(rec)
            n += 1
        if n:
            _logger.info("re-seeded %d trained architecture(s) from NNI's trial database", n)

    # ------------------------------------------------------------------ GA
    def trials_used(self) -> int:
        """Trainings started so far (trained + failed + running)."""
        return sum(r["status"] in ("trained", "failed") for r in self.cache.values()) + len(self._pending)

    def _draw_valid(self, make: Callable[[], dict[str, Any]], attempts: int) -> dict[str, Any] | None:
        """``make()`` until a valid chromosome comes out; invalid ones are recorded (once) and never trained."""
        for _ in range(attempts):
            s = self.canonical(make())
            ok, why = self.valid(s)
            if ok:
                return s
            h = arch_hash(s)
            if h not in self.cache:
                self._record({"hash": h, "sample": s, "status": "invalid", "fitness": None,
                              "generation": self.generation, "error": why})
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
            raise RuntimeError("GeNASWF: no valid architecture found in 100 random draws; the space is too deep "
                               f"for input size {self.input_size} (lower max_depth or use padding: same)")
        return pop

    def _scored(self, pop: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
        out, seen = [], set()
        for s in pop:
            h = arch_hash(s)
            rec = self.cache.get(h)
            if rec is not None and rec["status"] == "trained" and h not in seen:
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
            scored = [(r["sample"], r["fitness"]) for r in self.cache.values() if r["status"] == "trained"]
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
                    queue.extend(one_point_crossover(a, b, self._labels, self.rng))
                else:
                    queue.extend([dict(a), dict(b)])
            return mutate(queue.pop(0), self._labels, p.mutation_prob, self.rng)

        while len(children) < p.population_size:
            child = self._draw_valid(make, 100)
            if child is None:
                break
            children.append(child)
        return children

    def _evaluate(self, pop: list[dict[str, Any]]) -> None:
        """Train every individual not in the cache (one NNI trial each); wait for all of them.

        A cache hit is an individual whose architecture was already trained (or is being trained) before in this
        search; re-meeting, after a resume, what the interrupted session trained in this same generation is not one.
        """
        models = []
        seen: set[str] = set()
        for s in pop:
            h = arch_hash(s)
            with self._lock:
                if h in self.cache or h in self._pending:
                    rec = self.cache.get(h, {})
                    if h in seen or h in self._submitted_set or rec.get("generation") != self.generation:
                        self.cache_hits += 1
                    seen.add(h)
                    continue
            seen.add(h)
            if self.trials_used() >= self.max_trials:
                _logger.info("trial budget used up (%d trainings); stopping", self.max_trials)
                self._exhausted = True
                break
            if not self.wait_for_resource():
                _logger.warning("NNI reports no budget left (max_trial_number / duration); stopping")
                self._exhausted = True
                break
            model = self.model_space.freeze(s)
            with self._lock:
                self._pending[h] = {"generation": self.generation, "t0": time.time()}
                self.submitted.append(h)
                self._submitted_set.add(h)
            self.engine.submit_models(model)
            models.append(model)
        if models:
            self.engine.wait_models(*models)

    def _checkpoint(self) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(self)

    def _run(self) -> None:
        p = self.params
        self._reseed_from_engine()
        if self.finished:
            _logger.info("the search had already finished; nothing to do")
            return
        if self.population is None:
            self.generation = 0
            self.population = self._initial_population()
            self._checkpoint()
        while True:
            self._evaluate(self.population)
            self._log_generation()
            if self._exhausted or self.generation + 1 >= p.generations:
                break
            self.population = self._next_generation()
            self.generation += 1
            self._checkpoint()
        self.finished = True
        self._checkpoint()
        trained = [r for r in self.cache.values() if r["status"] == "trained"]
        _logger.info("search done: %d trained, %d failed, %d pruned as invalid, %d cache hits, %d generations",
                     len(trained), sum(r["status"] == "failed" for r in self.cache.values()),
                     sum(r["status"] == "invalid" for r in self.cache.values()), self.cache_hits,
                     self.generation + 1)

    def _log_generation(self) -> None:
        scored = self._scored(self.population or [])
        fits = [f for _, f in scored]
        _logger.info("generation %d: %d/%d scored, best %.4f, mean %.4f; %d trainings used, %d cache hits",
                     self.generation, len(scored), len(self.population or []), max(fits, default=float("nan")),
                     sum(fits) / len(fits) if fits else float("nan"), self.trials_used(), self.cache_hits)

    # ------------------------------------------------------------------ results
    def best(self) -> dict[str, Any] | None:
        ok = [r for r in self.cache.values() if r["status"] == "trained"]
        return max(ok, key=lambda r: r["fitness"]) if ok else None

    def finalists(self) -> list[dict[str, Any]]:
        """The ``top_k`` trained architectures by fitness (ties: the earlier generation)."""
        ok = [r for r in self.cache.values() if r["status"] == "trained"]
        ok.sort(key=lambda r: (-r["fitness"], r.get("generation", 0)))
        out = []
        for i, r in enumerate(ok[:self.params.top_k]):
            out.append({"hash": r["hash"], "sample": r["sample"], "fitness": r["fitness"],
                        "generation": r.get("generation"), "metrics": r.get("metrics", {}),
                        "chosen_as": f"top-{i + 1} by {self.params.fitness} fitness"})
        return out

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"version": _STATE_VERSION, "params": self.params.model_dump(), "generation": self.generation,
                    "population": [dict(s) for s in self.population] if self.population is not None else None,
                    "rng": _jsonable_state(self.rng), "finished": self.finished, "cache_hits": self.cache_hits,
                    "cache": {h: {k: v for k, v in r.items() if not k.startswith("_")}
                              for h, r in self.cache.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a saved state. Caches are merged; the GA position is taken only if it is further along.

        (NNI reloads its own start-time checkpoint on resume, after ``mednas`` restored the newer run-directory
        state, so an older state must never rewind the search.)
        """
        if state_dict.get("version") != _STATE_VERSION:
            raise ValueError(f"strategy state: expected version {_STATE_VERSION}, got {state_dict.get('version')!r}")
        with self._lock:
            for h, rec in state_dict.get("cache", {}).items():
                if h not in self.cache or (self.cache[h]["status"] != "trained" and rec["status"] == "trained"):
                    self.cache[h] = dict(rec)
            theirs = (bool(state_dict.get("finished")), int(state_dict.get("generation", 0)),
                      state_dict.get("population") is not None)
            mine = (self.finished, self.generation, self.population is not None)
            if self.population is None or theirs[:2] > mine[:2]:
                if state_dict.get("population") is not None:
                    self.population = [dict(s) for s in state_dict["population"]]
                    self.generation = int(state_dict["generation"])
                    self.finished = bool(state_dict.get("finished"))
                    self.rng = _restore_rng(state_dict["rng"])
                    self.cache_hits = int(state_dict.get("cache_hits", 0))

    # ------------------------------------------------------------------ mednas driver
    def _evaluator(self, ctx: Any) -> Any:
        from nni.nas.evaluator import FunctionalEvaluator

        from mednas_nni.evaluators.genas_trial import genas_trial

        p, cfg = self.params, ctx.cfg
        return FunctionalEvaluator(
            genas_trial, data={"name": cfg.data.name, "params": dict(cfg.data.params)},
            epochs=p.epochs_per_trial, fitness=p.fitness, fitness_params=dict(p.fitness_params),
            batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay, seed=int(cfg.run.seed),
            device=ctx.device if p.engine == "sequential" else cfg.run.device, augment=p.augment,
            max_batches_per_epoch=p.max_batches_per_epoch, error_dir=str(ctx.run_dir / "trial_errors"),
            torch_threads=p.torch_threads)

    def attach_run_dir(self, ctx: Any) -> None:
        """Restore progress from ``ctx.run_dir`` and persist to it from now on (``mednas search`` and the nnictl
        tuner): seed, ``strategy_state.pt``, ``archs.jsonl`` (authoritative: it also holds what finished after the
        last state checkpoint), the space and input size for pruning, and the record/checkpoint hooks."""
        import torch

        from mednas_nni.io import RunDir, append_jsonl, atomic_torch_save, read_jsonl

        rd = ctx.run_dir
        if self.params.seed is None:
            self._set_seed(int(ctx.cfg.run.seed))
        if (rd / RunDir.STATE).exists():
            self.load_state_dict(torch.load(rd / RunDir.STATE, weights_only=False))
        for rec in read_jsonl(rd / RunDir.ARCHS):
            if rec["hash"] not in self.cache or rec["status"] == "trained":
                self.cache[rec["hash"]] = rec
        if self.cache:
            _logger.info("resuming: %d architectures in the cache, generation %d", len(self.cache), self.generation)
        self.input_size = self.params.input_size or int(ctx.dataset.info.image_size)
        self._space = ctx.build_space()
        self._labels = categorical_space(self._space)
        self.error_dir = rd / "trial_errors"
        self.on_record = lambda rec: append_jsonl(rd / RunDir.ARCHS, {k: v for k, v in rec.items()
                                                                       if not k.startswith("_")})
        self.on_checkpoint = lambda s: atomic_torch_save(s.state_dict(), rd / RunDir.STATE)

    def run_search(self, ctx: Any) -> list[dict[str, Any]]:
        """Run (or resume) inside a run directory: ``archs.jsonl``, ``strategy_state.pt``, ``genas_summary.json``."""
        from tqdm.auto import tqdm

        from mednas_nni.io import atomic_write_json

        rd = ctx.run_dir
        self.attach_run_dir(ctx)
        evaluator = self._evaluator(ctx)
        done = sum(r["status"] in ("trained", "failed") for r in self.cache.values())
        with tqdm(total=self.max_trials, initial=min(done, self.max_trials), unit="trial", desc="genas_wf",
                  disable=not ctx.progress, dynamic_ncols=True) as bar:
            self.progress = bar
            try:
                if self.params.engine == "sequential":
                    self._run_sequential(evaluator)
                else:
                    self._run_local(ctx, evaluator)
            finally:
                self.progress = None
        finalists = self.finalists()
        recs = list(self.cache.values())
        atomic_write_json(rd / "genas_summary.json", {
            "trained": sum(r["status"] == "trained" for r in recs),
            "failed": sum(r["status"] == "failed" for r in recs),
            "invalid_pruned": sum(r["status"] == "invalid" for r in recs),
            "cache_hits": self.cache_hits, "generations": self.generation + 1, "max_trials": self.max_trials,
            "fitness": self.params.fitness, "fitness_params": self.params.fitness_params,
            "finalists": [{k: f[k] for k in ("hash", "fitness", "chosen_as", "sample")} for f in finalists]})
        return finalists

    def _run_sequential(self, evaluator: Any) -> None:
        from nni.nas.execution import SequentialExecutionEngine
        from nni.nas.space import SimplifiedModelSpace

        space = SimplifiedModelSpace.from_model(self._space, evaluator)
        self(space, SequentialExecutionEngine(continue_on_failure=True))

    def _run_local(self, ctx: Any, evaluator: Any) -> None:
        from nni.experiment import management
        from nni.nas.experiment import NasExperiment, NasExperimentConfig

        from mednas_nni.errors import SearchError
        from mednas_nni.io import atomic_write_json

        p, rd = self.params, ctx.run_dir
        patch_nni_resume_hang()
        exp_id = rd.status().get("nni_experiment")
        resume = exp_id is not None and _manifest(exp_id) is not None
        if exp_id is not None:
            stop_nni_experiment(exp_id)          # a killed driver leaves its manager running
            if not resume:
                _logger.warning("NNI experiment %s is not in NNI's manifest (another HOME?); starting a new NNI "
                                "experiment (the run directory's cache still prevents retraining)", exp_id)
        if not resume:
            exp_id = management.generate_experiment_id()
        work = rd / "nni"
        rd.set_status(nni_experiment=exp_id, nni_port=p.port)
        atomic_write_json(rd / "nni_experiment.json", {
            "id": exp_id, "port": p.port, "web_ui": f"http://127.0.0.1:{p.port}", "working_directory": str(work),
            "stop": f"nnictl stop {exp_id}", "note": "the NNI manager listens on all interfaces"})
        config = NasExperimentConfig("ts", "simplified", "local")
        config.experiment_name = f"mednas {ctx.cfg.run_name()}"
        config.experiment_working_directory = str(work)
        config.trial_concurrency = p.trial_concurrency
        config.max_trial_number = p.max_trial_number or self.max_trials + p.population_size
        config.trial_gpu_number = p.trial_gpu_number
        config.training_service.use_active_gpu = p.use_active_gpu
        exp = NasExperiment(self._space, evaluator, self, config=config, id=exp_id)
        _logger.info("NNI experiment %s: web UI on http://127.0.0.1:%d (the manager listens on all interfaces)",
                     exp_id, p.port)
        try:
            if resume:
                exp.resume(port=p.port, wait_completion=False)
            else:
                exp.run(port=p.port, wait_completion=False)
        except RuntimeError as e:
            if "port" in str(e).lower() or "address" in str(e).lower():
                raise SearchError(f"NNI could not start on port {p.port}: {e}; set strategy.params.port to a "
                                  "free port") from None
            raise
        finally:
            exp.stop()
        if not self.finished:
            raise SearchError(f"NNI experiment {exp_id} ended before the GA finished; see its log in "
                              f"{work / exp_id / 'log'} and resume with 'mednas resume {rd.path}'")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

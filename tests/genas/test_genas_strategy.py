"""The ``genas_wf`` strategy through the core's search loop (sequential engine, real run directory) with a fast fake
trial: operators, pruning, cache, budget, determinism, failures, kill and resume."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strategies"))
import _harness as H  # noqa: E402

from _genas_helpers import one_torch_thread  # noqa: E402,F401 (autouse fixture)
from mednas_nni.engines.search_loop import STATE_FILE  # noqa: E402
from mednas_nni.io import read_jsonl  # noqa: E402
from mednas_nni.search_spaces.genas_cnn import GeNASCNNSpace  # noqa: E402
from mednas_nni.search_spaces.genas_operators import mutate, one_point_crossover  # noqa: E402
from mednas_nni.strategies.genas_wf import GeNASWF, GeNASWFParams  # noqa: E402

SMALL = dict(max_depth=4, min_depth=2, filters=[4, 8], kernels=[3, 5], strides=[1, 2], pools=["none", "max"],
             dropouts=[0.0, 0.5])
SPACE = GeNASCNNSpace(image_size=32, **SMALL)
DEEP = GeNASCNNSpace(image_size=16, max_depth=6, min_depth=2, filters=[4], kernels=[3, 5, 7], strides=[1, 2, 3],
                     pools=["none", "max"], dropouts=[0.0])


@pytest.fixture(autouse=True)
def _reset_calls():
    H.CALLS.clear()


def _valid_parent(space, rnd):
    while True:
        s = space.random_sample(rnd)
        if space.is_valid(s)[0]:
            return s


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10 ** 6), prob=st.floats(0, 1))
def test_crossover_and_mutation_give_canonical_children_in_the_space(seed, prob) -> None:
    rnd = random.Random(seed)
    a, b = _valid_parent(DEEP, rnd), _valid_parent(DEEP, rnd)
    c1, c2 = DEEP.crossover(a, b, rnd)
    # the layer lists are cut and spliced: total depth is kept, each child stays within the parents' depths
    assert c1["depth"] + c2["depth"] == a["depth"] + b["depth"]
    for child in (c1, c2, DEEP.mutate(c1, prob, rnd)):
        assert DEEP.contains(child)                            # every label, every value allowed
        assert child == DEEP.canonicalize(child)               # inactive genes reset
        assert DEEP.min_depth <= child["depth"] <= DEEP.max_depth
    layers = lambda s: [tuple(s[f"layer{i}/{g}"] for g in ("filters", "kernel", "stride", "pool"))
                        for i in range(s["depth"])]
    assert sorted(layers(c1) + layers(c2)) == sorted(layers(a) + layers(b))   # genes move with their layer
    assert DEEP.mutate(a, 0.0, rnd) == DEEP.canonicalize(a)
    # the space's methods are the module-level operators (same RNG use)
    r1, r2 = random.Random(seed), random.Random(seed)
    assert DEEP.crossover(a, b, r1) == one_point_crossover(a, b, DEEP.label_values(), r2)
    assert DEEP.mutate(a, prob, r1) == mutate(a, DEEP.label_values(), prob, r2)


def test_every_child_is_valid_or_pruned_and_never_trained_when_invalid(tmp_path) -> None:
    """A deep space on 16 px images: many children break; they are recorded invalid and never reach a trial."""
    loop = H.run(GeNASWF(population_size=6, generations=4, seed=1, tournament_size=2), DEEP, tmp_path,
                 input_size=16)
    recs = read_jsonl(tmp_path / "archs.jsonl")
    invalid = [r for r in recs if r["status"] == "invalid"]
    assert invalid, "this space/size must produce invalid chromosomes"
    assert all(not DEEP.is_valid(r["sample"])[0] and "shrinks" in r["error"] for r in invalid)
    assert not set(H.CALLS) & {r["hash"] for r in invalid}
    assert all(r["status"] == "ok" for r in recs if r["hash"] in H.CALLS)   # the forward never failed
    assert loop.finished


def test_cache_hits_never_run_a_trial(tmp_path) -> None:
    tiny = GeNASCNNSpace(image_size=32, max_depth=2, min_depth=2, filters=[4, 8], kernels=[3], strides=[1],
                         pools=["none"], dropouts=[0.0])                      # exactly 4 architectures
    loop = H.run(GeNASWF(population_size=4, generations=6, seed=0, tournament_size=2, mutation_prob=0.5), tiny,
                 tmp_path)
    assert len(H.CALLS) == len(set(H.CALLS)) == loop.evaluations() <= 4
    assert loop.cache_hits >= 6 * 4 - 4                        # every other individual came from the cache


def test_seeded_run_is_deterministic(tmp_path) -> None:
    runs = []
    for i in range(2):
        H.CALLS.clear()
        loop = H.run(GeNASWF(population_size=6, generations=4, seed=7), SPACE, tmp_path / str(i))
        runs.append((list(H.CALLS), loop.finalists(), loop.cache_hits))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    assert [f["hash"] for f in runs[0][1]] == [f["hash"] for f in runs[1][1]]
    H.CALLS.clear()
    H.run(GeNASWF(population_size=6, generations=4, seed=8), SPACE, tmp_path / "other")
    assert H.CALLS != runs[0][0]


def test_ga_improves_on_its_first_generation(tmp_path) -> None:
    space = GeNASCNNSpace(image_size=32, max_depth=5, filters=[4, 8, 16, 32], kernels=[3], strides=[1],
                          pools=["none"], dropouts=[0.0])
    loop = H.run(GeNASWF(population_size=8, generations=6, seed=3, mutation_prob=0.2), space, tmp_path)
    recs = [r for r in loop.store.records() if r["status"] == "ok"]
    first = max(r["metrics"]["fitness"] for r in recs if r["batch"] == 0)
    assert max(r["metrics"]["fitness"] for r in recs) > first
    fin = loop.finalists()
    assert [f["fitness"] for f in fin] == sorted((f["fitness"] for f in fin), reverse=True) and len(fin) == 3
    assert all(f["describe"] for f in fin)


def test_failed_trial_is_recorded_and_the_search_goes_on(tmp_path) -> None:
    loop = H.run(GeNASWF(population_size=6, generations=3, seed=2), SPACE, tmp_path,
                 fail_if={"head/dropout": 0.5})
    recs = loop.store.records()
    failed = [r for r in recs if r["status"] == "failed"]
    ok = [r for r in recs if r["status"] == "ok"]
    assert failed and ok
    assert all(r["sample"]["head/dropout"] == 0.5 and "injected failure" in r["error"] for r in failed)
    assert all(r["sample"]["head/dropout"] == 0.0 for r in ok)
    assert loop.finished and len(H.CALLS) == len(set(H.CALLS))
    assert all(f["sample"]["head/dropout"] == 0.0 for f in loop.finalists())


def test_budget_caps_trainings(tmp_path) -> None:
    loop = H.run(GeNASWF(population_size=6, generations=10, seed=4, max_trials=9), SPACE, tmp_path)
    assert len(H.CALLS) == 9 and loop.finished


def test_killed_search_resumes_without_retraining_and_matches_an_uninterrupted_run(tmp_path) -> None:
    params = dict(population_size=6, generations=4, seed=11)
    full = H.run(GeNASWF(**params), SPACE, tmp_path / "full")
    reference = list(H.CALLS)

    H.CALLS.clear()
    with pytest.raises(KeyboardInterrupt):      # killed in the middle of generation 1
        H.run(GeNASWF(**params), SPACE, tmp_path / "cut", interrupt_at=9)
    before = list(H.CALLS)
    state = json.loads((tmp_path / "cut" / STATE_FILE).read_text())
    assert len(before) == 9 and state["strategy"]["generation"] == 0 and state["batch"] == 1

    H.CALLS.clear()
    resumed = H.run(GeNASWF(**params), SPACE, tmp_path / "cut")   # a new process would do exactly this
    trained = before[:-1] + H.CALLS               # the interrupted 9th training is not a result: it runs again
    assert len(trained) == len(set(trained))
    assert trained == reference
    assert [f["hash"] for f in resumed.finalists()] == [f["hash"] for f in full.finalists()]


def test_state_of_another_strategy_is_refused(tmp_path) -> None:
    from mednas_nni.errors import RunDirError
    from mednas_nni.strategies.random_search import RandomSearch

    H.run(GeNASWF(population_size=4, generations=1, seed=5), SPACE, tmp_path)
    with pytest.raises(RunDirError, match="strategy_state.json: expected a version-2 state of strategy 'random'"):
        H.run(RandomSearch(num_samples=2, seed=5), SPACE, tmp_path)


def test_params_validation() -> None:
    with pytest.raises(ValidationError, match="at most population_size"):
        GeNASWFParams(population_size=4, tournament_size=5)
    with pytest.raises(ValidationError, match="less than population_size"):
        GeNASWFParams(population_size=4, elitism=4)
    with pytest.raises(ValidationError, match="did you mean 'genas_wf'"):
        GeNASWFParams(fitness="genaswf")
    with pytest.raises(ValidationError, match="unexpected keyword"):
        GeNASWFParams(fitness_params={"bogus": 1})
    with pytest.raises(ValidationError, match="extra"):
        GeNASWFParams(pop_size=3)
    assert "population_size=10" in repr(GeNASWF())

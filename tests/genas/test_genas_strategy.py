"""The ``genas_wf`` strategy on NNI's sequential engine with a fast fake trial: operators, cache, determinism, resume."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nni.nas.space import ModelStatus
from pydantic import ValidationError

import _genas_helpers as H
from _genas_helpers import one_torch_thread  # noqa: F401 (autouse fixture)
from mednas_nni.search_spaces.genas_cnn import GeNASCNNSpace
from mednas_nni.strategies._utils import arch_hash
from mednas_nni.strategies.genas_wf import GeNASWF, GeNASWFParams, mutate, one_point_crossover

SPACE = GeNASCNNSpace(**H.SMALL)
DEEP = GeNASCNNSpace(max_depth=6, min_depth=2, filters=[4], kernels=[3, 5, 7], strides=[1, 2, 3],
                     pools=["none", "max"], dropouts=[0.0])


@pytest.fixture(autouse=True)
def _reset_calls():
    H.CALLS.clear()


def _valid_parent(space, size, rnd):
    while True:
        s = space.random_sample(rnd)
        if space.is_valid(s, size):
            return s


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10 ** 6), prob=st.floats(0, 1))
def test_crossover_and_mutation_give_canonical_children_in_the_space(seed, prob) -> None:
    rnd = random.Random(seed)
    a, b = _valid_parent(DEEP, 32, rnd), _valid_parent(DEEP, 32, rnd)
    c1, c2 = one_point_crossover(a, b, DEEP.label_values, rnd)
    # the layer lists are cut and spliced: total depth is kept, each child stays within the parents' depths
    assert c1["depth"] + c2["depth"] == a["depth"] + b["depth"]
    for child in (c1, c2, mutate(c1, DEEP.label_values, prob, rnd)):
        assert DEEP.contains(child)                            # every label, every value allowed
        assert child == DEEP.canonicalize(child)               # inactive genes reset
        assert DEEP.min_depth <= child["depth"] <= DEEP.max_depth
    layers = lambda s: [tuple(s[f"layer{i}/{g}"] for g in ("filters", "kernel", "stride", "pool"))
                        for i in range(s["depth"])]
    assert sorted(layers(c1) + layers(c2)) == sorted(layers(a) + layers(b))   # genes move with their layer
    assert mutate(a, DEEP.label_values, 0.0, rnd) == DEEP.canonicalize(a)


def test_every_child_is_valid_or_pruned_and_never_trained_when_invalid() -> None:
    """A deep space on 16 px images: many children break; they are recorded invalid, never reach a trial."""
    st_, engine = H.run_ga(DEEP, evaluator_kwargs={"input_size": 16}, population_size=6, generations=4, seed=1,
                           input_size=16, tournament_size=2)
    invalid = [r for r in st_.cache.values() if r["status"] == "invalid"]
    assert invalid, "this space/size must produce invalid chromosomes"
    assert all(not DEEP.is_valid(r["sample"], 16) and "shrinks" in r["error"] for r in invalid)
    trained = {arch_hash(m.sample) for m in engine.list_models()}
    assert not trained & {r["hash"] for r in invalid}
    assert all(m.status == ModelStatus.Trained for m in engine.list_models())   # the forward never failed


def test_cache_hits_never_submit_a_trial() -> None:
    tiny = GeNASCNNSpace(max_depth=2, min_depth=2, filters=[4, 8], kernels=[3], strides=[1], pools=["none"],
                         dropouts=[0.0])                      # exactly 4 architectures
    st_, engine = H.run_ga(tiny, population_size=4, generations=6, seed=0, tournament_size=2, mutation_prob=0.5)
    assert len(H.CALLS) == len(set(H.CALLS)) == len(st_.submitted) == len(list(engine.list_models())) <= 4
    assert st_.cache_hits >= 6 * 4 - 4                         # every other individual came from the cache
    assert st_.trials_used() == len(H.CALLS)


def test_seeded_run_is_deterministic() -> None:
    runs = []
    for _ in range(2):
        H.CALLS.clear()
        st_, _ = H.run_ga(SPACE, population_size=6, generations=4, seed=7)
        runs.append((list(H.CALLS), st_.finalists(), st_.cache_hits))
    assert runs[0] == runs[1]
    H.CALLS.clear()
    H.run_ga(SPACE, population_size=6, generations=4, seed=8)
    assert H.CALLS != runs[0][0]


def test_ga_improves_on_its_first_generation() -> None:
    st_, _ = H.run_ga(GeNASCNNSpace(max_depth=5, filters=[4, 8, 16, 32], kernels=[3], strides=[1],
                                    pools=["none"], dropouts=[0.0]),
                      population_size=8, generations=6, seed=3, mutation_prob=0.2)
    first = max(r["fitness"] for r in st_.cache.values() if r["status"] == "trained" and r["generation"] == 0)
    assert st_.best()["fitness"] > first
    fin = st_.finalists()
    assert [f["fitness"] for f in fin] == sorted((f["fitness"] for f in fin), reverse=True) and len(fin) == 3


def test_failed_trial_is_recorded_and_the_search_goes_on() -> None:
    st_, engine = H.run_ga(SPACE, evaluator_kwargs={"fail_dropout": 0.5}, population_size=6, generations=3, seed=2)
    failed = [r for r in st_.cache.values() if r["status"] == "failed"]
    trained = [r for r in st_.cache.values() if r["status"] == "trained"]
    assert failed and trained
    assert all(r["sample"]["head/dropout"] == 0.5 and "status failed" in r["error"] for r in failed)
    assert all(r["sample"]["head/dropout"] == 0.0 for r in trained)
    assert st_.finished and len(H.CALLS) == len(set(H.CALLS))


def test_budget_caps_trainings() -> None:
    st_, _ = H.run_ga(SPACE, population_size=6, generations=10, seed=4, max_trials=9)
    assert len(H.CALLS) == 9 and st_.finished


def test_resume_from_state_dict_submits_no_duplicate_and_matches_an_uninterrupted_run() -> None:
    params = dict(population_size=6, generations=4, seed=11)
    full, _ = H.run_ga(SPACE, **params)
    reference = list(H.CALLS)

    H.CALLS.clear()
    with pytest.raises(KeyboardInterrupt):      # killed in the middle of generation 1
        H.run_ga(SPACE, strategy=(first := GeNASWF(input_size=32, engine="sequential", **params)),
                 evaluator_kwargs={"interrupt_at": 9})
    state = first.state_dict()
    before = list(H.CALLS)
    assert len(before) == 9 and state["generation"] == 1

    H.CALLS.clear()
    second = GeNASWF(input_size=32, engine="sequential", **params)
    second.load_state_dict(state)
    H.run_ga(SPACE, strategy=second)
    trained = before[:-1] + H.CALLS               # the interrupted 9th training is not a result: it runs again
    assert len(trained) == len(set(trained))
    assert trained == reference and second.finalists() == full.finalists()


def test_load_state_dict_merges_and_never_rewinds() -> None:
    st_, _ = H.run_ga(SPACE, population_size=4, generations=3, seed=5)
    late = st_.state_dict()
    early = dict(late, generation=0, finished=False, cache={})
    fresh = GeNASWF(population_size=4, generations=3, seed=5, input_size=32)
    fresh.load_state_dict(late)
    fresh.load_state_dict(early)                  # NNI's older start-time checkpoint, loaded afterwards
    assert fresh.generation == late["generation"] and fresh.finished and len(fresh.cache) == len(late["cache"])
    with pytest.raises(ValueError, match="version"):
        fresh.load_state_dict({"version": 99})


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
    with pytest.raises(ValueError, match="input_size is not set"):
        H.run_ga(SPACE, strategy=GeNASWF(engine="sequential"))


@pytest.mark.parametrize("kind,name,skip", [("strategies", "genas_wf", set()),
                                            ("search_spaces", "genas_cnn", {"in_channels", "num_classes"}),
                                            ("datasets", "mhsma", set())])
def test_entry_points_and_params_match_the_constructors(kind, name, skip) -> None:
    import inspect

    from mednas_nni.registry import get_plugin

    cls = get_plugin(kind, name)
    assert cls.name == name
    if kind == "search_spaces":       # NNI wraps a ModelSpace's __init__; its recorded args show the signature
        init = set(cls().args) - skip
    else:
        init = {p for p in inspect.signature(cls.__init__).parameters if p != "self"} - skip
    assert init == set(cls.Params.model_fields)

"""Categorical variation of the zero-cost search, measured on the real 42-gene mstf_cell space, and MOEA/D on
normalised objectives (a toy problem whose objectives differ in scale by 1e7)."""
from __future__ import annotations

import numpy as np
import pytest
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.problems.static import StaticProblem

from mednas_nni.engines.records import arch_hash
from mednas_nni.search_spaces.mstf_cell import MSTFCellSpace
from mednas_nni.strategies.zc_operators import (Archive, ArchiveDuplicateElimination, CategoricalSampling,
                                                RandomResetMutation, TrackedMating, VariationStats, make_crossover)
from mednas_nni.strategies.zc_state import IntegerProblem, build_algorithm

SPACE = MSTFCellSpace()                                   # the default space: 3 blocks x 5 nodes, 42 genes
LABELS = SPACE.label_values()
UPPER = [len(v) - 1 for v in LABELS.values()]


def _decode(x):
    s = SPACE.canonicalize({k: v[int(i)] for (k, v), i in zip(LABELS.items(), x)})
    return s, arch_hash(s)


def _archive(stats, rejected=None):
    return Archive(_decode, SPACE.is_valid, (lambda s, why: rejected.append(why)) if rejected is not None else None,
                   stats)


def _mate(kind: str, stats: VariationStats, n: int = 400, seed: int = 0):
    from pymoo.operators.selection.rnd import RandomSelection

    rng = np.random.default_rng(seed)
    problem = IntegerProblem(UPPER, 3, False)
    parents = Population.new(X=np.column_stack([rng.integers(0, u + 1, size=40) for u in UPPER]))
    mating = TrackedMating(RandomSelection(), make_crossover(kind, 0.9), RandomResetMutation(), stats)
    return parents, mating.do(problem, parents, n, random_state=rng, n_max_iterations=1)


@pytest.mark.parametrize("kind", ["uniform", "one_point"])
def test_children_differ_from_both_parents_on_the_42_gene_space(kind):
    assert len(LABELS) == 42
    stats = VariationStats()
    _, off = _mate(kind, stats)
    d = stats.as_dict()
    assert d["children"] == len(off) == 400
    # crossover mixes two different parents (probability 0.9) and mutation resets ~1 gene in 42 per child:
    # the old SBX + PM with rounding changed a gene in ~8 % of children
    assert d["differ_from_both_fraction"] > 0.9
    expected_mutated = 1 - (1 - 1 / 42) ** 42            # ~0.64 (genes with one category are never reset)
    assert abs(d["mutated_fraction"] - expected_mutated) < 0.1
    assert 0.5 / 42 < d["novel_gene_fraction"] < 1.5 / 42
    X = np.asarray(off.get("X"))
    assert X.dtype.kind in "iu" and (X >= 0).all() and (X <= np.array(UPPER)).all()


def test_random_reset_always_changes_a_mutated_gene_to_another_category():
    problem = IntegerProblem([3, 0, 5], 2, False)
    X = np.zeros((2000, 3), dtype=int)
    Y = RandomResetMutation(prob_var=1.0)._do(problem, X, random_state=np.random.default_rng(0))
    assert (Y[:, 0] != 0).all() and (Y[:, 1] == 0).all() and (Y[:, 2] != 0).all()
    counts = np.bincount(Y[:, 2], minlength=6)[1:]          # the 5 other categories, uniformly
    assert counts.min() > 300


def test_sampling_and_dedup_never_give_a_dead_or_already_met_architecture():
    stats, rejected = VariationStats(), []
    archive = _archive(stats, rejected)
    problem = IntegerProblem(UPPER, 3, False)
    X = CategoricalSampling(archive)._do(problem, 200, random_state=np.random.default_rng(1))
    hashes = [_decode(x)[1] for x in X]
    assert len(X) == 200 and len(set(hashes)) == 200
    assert all(SPACE.is_valid(_decode(x)[0])[0] for x in X)
    assert stats.invalid_dropped == len(rejected) > 10 and all("dead cell" in r for r in rejected)  # ~15 % dead
    # everything sampled is now "met": a population of those rows and one new row keeps only the new one
    archive.seen |= set(hashes)
    new = CategoricalSampling(archive)._do(problem, 1, random_state=np.random.default_rng(2))
    pop = Population.new(X=np.vstack([X[:5], X[:1], new]))
    kept = ArchiveDuplicateElimination(archive).do(pop)
    assert [_decode(x)[1] for x in kept.get("X")] == [_decode(new[0])[1]]
    assert stats.duplicates_dropped >= 6


def _toy_moead(seed: int, n_gen: int = 12, pop_size: int = 12):
    """MOEA/D on 3 objectives of a 10-gene integer problem: f0 in units (~0..10), f1 in units, f2 in 1e7."""
    from mednas_nni.strategies.zc_operators import CategoricalSampling

    upper = [9] * 10
    stats = VariationStats()
    archive = Archive(lambda x: ({}, ",".join(str(int(v)) for v in x)), lambda s: (True, ""), None, stats)

    def mating(selection, crossover, mutation, **kw):
        return TrackedMating(selection, crossover, mutation, stats, **kw)

    algo = build_algorithm("moead", upper, 3, pop_size, n_gen, seed, sampling=CategoricalSampling(archive),
                           crossover=make_crossover("uniform", 0.9), mutation=RandomResetMutation(),
                           mating_factory=mating, eliminate_duplicates=None)
    seen = []
    while algo.has_next():
        pop = algo.ask()
        X = np.asarray(pop.get("X"), dtype=float)
        F = np.column_stack([X[:, :5].sum(1) / 4.5, (9 - X[:, 5:]).sum(1) / 4.5,
                             1.5e7 + 2.2e7 * X.sum(1) / 90.0 + 1e5 * X[:, 0]])
        pop.set("ok", np.ones(len(X), dtype=bool))
        Evaluator().eval(StaticProblem(algo.problem, F=F), pop)
        algo.tell(infills=pop)
        seen.append(F)
    return algo, np.vstack(seen)


def test_moead_on_normalised_objectives_spans_every_objective(monkeypatch):
    """Normalised, the final population has, for every objective, a member in the best quarter of that objective's
    range; on raw objectives (pymoo's PBI as is) the 1e7-scale objective decides and the others are left behind."""
    from mednas_nni.strategies.zc_state import NormalisedMOEAD

    def best_quarter(seed):
        algo, everything = _toy_moead(seed=seed)
        lo, hi = everything.min(0), everything.max(0)
        return (np.asarray(algo.pop.get("F")) - lo) / (hi - lo), algo, everything

    for seed in (0, 1):
        norm, algo, everything = best_quarter(seed)
        assert (norm.min(0) < 0.25).all(), norm.min(0)
        np.testing.assert_array_equal(algo.ideal, everything.min(0))
        np.testing.assert_array_equal(algo.nadir, everything.max(0))
    monkeypatch.setattr(NormalisedMOEAD, "normalise", lambda self, F: F)      # pymoo's raw scalarisation
    raw, _, _ = best_quarter(0)
    assert raw.min(0)[2] < 0.25 and raw.min(0)[1] > 0.25, raw.min(0)          # FLOPs-like objective wins alone


def test_moead_never_proposes_a_repeat_or_a_dead_cell_on_the_42_gene_space():
    """MOEA/D's children are checked against everything met, as NSGA-II's: every asked architecture is new and
    valid (before, a child equal to a scored one was proposed again and dead cells were proposed)."""
    stats, rejected = VariationStats(), []
    archive = _archive(stats, rejected)

    def mating(selection, crossover, mutation, **kw):
        return TrackedMating(selection, crossover, mutation, stats, **kw)

    algo = build_algorithm("moead", UPPER, 2, 10, 8, 0, sampling=CategoricalSampling(archive),
                           crossover=make_crossover("uniform", 0.9), mutation=RandomResetMutation(),
                           mating_factory=mating, eliminate_duplicates=ArchiveDuplicateElimination(archive))
    asked, rng = [], np.random.default_rng(0)
    while algo.has_next():
        pop = algo.ask()
        hashes = [_decode(x)[1] for x in np.asarray(pop.get("X"))]
        assert all(SPACE.is_valid(_decode(x)[0])[0] for x in np.asarray(pop.get("X")))
        asked += hashes
        archive.seen |= set(hashes)
        # two objectives with few distinct values: a population converges and its children repeat their parents
        F = np.round(rng.random((len(pop), 2)), 1)
        pop.set("ok", np.ones(len(pop), dtype=bool))
        Evaluator().eval(StaticProblem(algo.problem, F=F), pop)
        algo.tell(infills=pop)
    assert len(asked) == 80 and len(set(asked)) == 80
    assert stats.duplicates_dropped + stats.invalid_dropped > 0      # the check had something to do

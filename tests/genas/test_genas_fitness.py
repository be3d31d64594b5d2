"""GeNAS-WF fitness: the robustness property (one lucky epoch never beats a steadily good curve), the registry."""
from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mednas_nni.evaluators.fitness import FITNESS, best_epoch, genas_wf, get_fitness, weighted_mean_std


def _hist(values, key="val_balanced_acc"):
    return [{key: v, "val_f05": v / 2, "epoch": i + 1} for i, v in enumerate(values)]


@st.composite
def lucky_vs_steady(draw, min_epochs=3):
    """A steady curve (level b, jitter <= eps) and a noisy one: <= b - delta everywhere except ONE lucky epoch."""
    n = draw(st.integers(min_epochs, 30))
    b = draw(st.floats(0.3, 0.95))
    eps = draw(st.floats(0.0, 0.004))
    delta = draw(st.floats(0.02, 0.3))
    assume(b - delta >= 0.0)
    steady = [min(1.0, max(0.0, b + draw(st.floats(-eps, eps)))) for _ in range(n)]
    noisy = [draw(st.floats(0.0, b - delta)) for _ in range(n)]
    j = draw(st.integers(0, n - 1))                 # anywhere, the last epoch included
    noisy[j] = draw(st.floats(b, 1.0))             # the lucky epoch: at least as good as the steady level
    return steady, noisy, b, delta, eps


@settings(max_examples=300, deadline=None)
@given(case=lucky_vs_steady())
def test_one_lucky_epoch_scores_below_a_steady_curve(case) -> None:
    steady, noisy, b, delta, eps = case
    s, z = genas_wf(_hist(steady)), genas_wf(_hist(noisy))
    assert z < s, (steady, noisy, s, z)
    assert z <= b - delta + 1e-9                    # the bound proved in the module docstring
    assert best_epoch(_hist(noisy)) >= best_epoch(_hist(steady)) - eps   # ... while best-epoch selection is fooled


@settings(max_examples=200, deadline=None)
@given(case=lucky_vs_steady(min_epochs=2))
def test_from_two_epochs_with_penalty_sqrt2(case) -> None:
    """With two epochs w_max = 2/3, so the guarantee needs lambda >= sqrt(2) (and that suffices for any length)."""
    steady, noisy, *_ = case
    lam = math.sqrt(2)
    assert genas_wf(_hist(noisy), penalty=lam) < genas_wf(_hist(steady), penalty=lam)


@given(level=st.floats(0.0, 1.0), n=st.integers(1, 20))
def test_a_flat_curve_scores_its_level(level, n) -> None:
    assert genas_wf(_hist([level] * n)) == pytest.approx(level)


def test_later_epochs_weigh_more_and_variability_costs() -> None:
    up, down = [0.5, 0.6, 0.7], [0.7, 0.6, 0.5]
    assert weighted_mean_std(up, penalty=0) > weighted_mean_std(down, penalty=0)
    assert weighted_mean_std(up, power=0, penalty=0) == pytest.approx(0.6)
    assert weighted_mean_std([0.6, 0.6, 0.6]) > weighted_mean_std([0.5, 0.7, 0.6])


def test_registry_and_errors() -> None:
    assert {"genas_wf", "genas_wf_f05", "last_epoch", "best_epoch", "mean"} <= set(FITNESS)
    h = _hist([0.5, 0.7, 0.6])
    assert get_fitness("last_epoch")(h) == 0.6
    assert get_fitness("genas_wf_f05")(h) == pytest.approx(weighted_mean_std([0.25, 0.35, 0.3]))
    assert get_fitness("genas_wf", {"metric": "f05", "penalty": 0.0})(h) == pytest.approx(
        weighted_mean_std([0.25, 0.35, 0.3], penalty=0.0))
    with pytest.raises(ValueError, match="did you mean 'genas_wf'"):
        get_fitness("genas-wf")
    with pytest.raises(ValueError, match="unexpected keyword"):
        get_fitness("genas_wf", {"lambda": 1})
    with pytest.raises(ValueError, match="not in the history"):
        genas_wf(_hist([0.5]), metric="dice")
    with pytest.raises(ValueError, match="at least one epoch"):
        genas_wf([])
    with pytest.raises(ValueError, match="non-finite"):
        genas_wf(_hist([0.5, float("nan")]))

"""GeNAS-WF fitness functions: one score from a whole per-epoch validation curve.

GeNAS (Miahi et al., arXiv:1909.09432) scores each trained individual with the "GeNAS Weighting Factor", meant
for noisy, low-resolution, imbalanced data whose validation accuracy swings from epoch to epoch. The paper's
formula is not available to us; :func:`genas_wf` is **our reading** ("GeNAS-WF (mednas reading)"):

.. math::

    w_e = e^p / \\sum_{j=1}^{E} j^p, \\qquad
    m = \\sum_e w_e s_e, \\qquad
    \\sigma = \\sqrt{\\sum_e w_e (s_e - m)^2}, \\qquad
    \\mathrm{WF} = m - \\lambda \\sigma

where ``s_e`` is the validation score after epoch ``e`` (balanced accuracy by default, so a majority-class
predictor scores 0.5 on every epoch whatever the imbalance), ``p`` (``power``, default 1: a linear ramp) makes
later epochs count more and ``lambda`` (``penalty``, default 1) penalises the weighted spread of the curve.

Why ``lambda = 1``: a curve that sits at most at ``b - delta`` except for ONE lucky epoch (any value, any position,
even the last) scores at most ``b - delta`` whenever ``lambda >= sqrt(w_max / (1 - w_max))``, while a steady curve
at ``b`` scores ``b``. Proof: split the weights into the lucky epoch (``q = w_j``, value ``x``) and the rest (mean
``mu <= b - delta``); the weighted variance is at least ``q (1 - q) (x - mu)^2``, so
``WF <= mu + (x - mu)(q - lambda sqrt(q (1 - q))) <= mu``. With linear weights ``w_max = 2 / (E + 1) <= 1/2`` for
``E >= 3`` epochs, so ``lambda = 1`` suffices; ``E = 2`` needs ``lambda >= sqrt(2)``, and one epoch is no curve
(WF = s_1). ``tests/genas/test_genas_fitness.py`` checks this property with hypothesis.

The functions are swappable: :data:`FITNESS` maps a name to a function ``fn(history, **params) -> float`` where
``history`` is the list of per-epoch metric dicts a GeNAS trial reports (keys ``val_balanced_acc``, ``val_f05``,
``val_acc``, ``val_auc``, ...). The ``genas_wf`` strategy picks one with its ``fitness`` parameter and passes
``fitness_params``. Larger is better for all of them (NNI's convention).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["FITNESS", "genas_wf", "genas_wf_f05", "last_epoch", "best_epoch", "mean_curve", "weighted_mean_std",
           "get_fitness", "curve"]

History = Sequence[dict[str, Any]]


def curve(history: History, key: str) -> list[float]:
    """The per-epoch values of ``key`` (``val_`` prefix optional) from a trial's history."""
    if not history:
        raise ValueError("fitness: expected at least one epoch in the history, got none")
    k = key if key in history[0] else f"val_{key}"
    try:
        values = [float(h[k]) for h in history]
    except KeyError:
        raise ValueError(f"fitness: metric {key!r} is not in the history; keys: {', '.join(history[0])}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"fitness: {k} has non-finite values: {values}")
    return values


def weighted_mean_std(values: Sequence[float], power: float = 1.0, penalty: float = 1.0) -> float:
    """``m - penalty * sigma`` with epoch weights ``e ** power`` (the GeNAS-WF aggregation, see the module doc)."""
    if not values:
        raise ValueError("fitness: empty curve")
    if power < 0 or penalty < 0:
        raise ValueError(f"fitness: power >= 0 and penalty >= 0 must hold, got power={power}, penalty={penalty}")
    w = [(e + 1) ** power for e in range(len(values))]
    total = sum(w)
    w = [x / total for x in w]
    m = sum(wi * v for wi, v in zip(w, values))
    var = sum(wi * (v - m) ** 2 for wi, v in zip(w, values))
    return m - penalty * math.sqrt(max(var, 0.0))


def genas_wf(history: History, metric: str = "balanced_acc", power: float = 1.0, penalty: float = 1.0) -> float:
    """GeNAS-WF (mednas reading) on the per-epoch validation ``metric`` (default balanced accuracy)."""
    return weighted_mean_std(curve(history, metric), power, penalty)


def genas_wf_f05(history: History, power: float = 1.0, penalty: float = 1.0) -> float:
    """GeNAS-WF on the per-epoch F0.5 of the abnormal class (positive = abnormal)."""
    return weighted_mean_std(curve(history, "f05"), power, penalty)


def last_epoch(history: History, metric: str = "balanced_acc") -> float:
    """The last epoch's validation score (what a single held-out evaluation after training gives)."""
    return curve(history, metric)[-1]


def best_epoch(history: History, metric: str = "balanced_acc") -> float:
    """The best epoch's validation score (the naive choice GeNAS-WF is meant to improve on: it rewards luck)."""
    return max(curve(history, metric))


def mean_curve(history: History, metric: str = "balanced_acc") -> float:
    """Plain mean of the curve (no weighting, no penalty)."""
    values = curve(history, metric)
    return sum(values) / len(values)


FITNESS: dict[str, Callable[..., float]] = {
    "genas_wf": genas_wf,
    "genas_wf_f05": genas_wf_f05,
    "last_epoch": last_epoch,
    "best_epoch": best_epoch,
    "mean": mean_curve,
}
"""Fitness functions by name (the ``fitness`` parameter of the ``genas_wf`` strategy)."""


def get_fitness(name: str, params: dict[str, Any] | None = None) -> Callable[[History], float]:
    """``history -> float`` for a registered name with its parameters bound; parameters checked against its signature.

    Raises:
        ValueError: unknown name (with the known ones) or parameters the function does not take.
    """
    from mednas_nni.errors import did_you_mean

    if name not in FITNESS:
        raise ValueError(f"fitness: unknown function {name!r}{did_you_mean(name, FITNESS)} "
                         f"known: {', '.join(FITNESS)}")
    import inspect

    fn, params = FITNESS[name], dict(params or {})
    try:   # the signature only: the metric names depend on the task (val_dice has no classification dummy)
        inspect.signature(fn).bind([], **params)
    except TypeError as e:
        raise ValueError(f"fitness_params for {name!r}: {e}") from None

    def bound(history: History) -> float:
        return float(fn(history, **params))

    bound.__name__ = name
    return bound

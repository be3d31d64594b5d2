"""``calibration.png``: the reliability diagram of a classifier (scikit-learn's ``calibration_curve``) beside the
distribution of its scores per true class, with the operating threshold marked (binary tasks).

Binary: the positive-class probability ``p`` (the observed fraction of positives per bin of ``p``); multi-class:
the top-label confidence (the accuracy per bin of confidence). Drawn with a pyplot-free ``Figure`` (Agg, no GUI).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CALIBRATION_FILE", "calibration_figure", "write_calibration_png"]

CALIBRATION_FILE = "calibration.png"


def _curve(y_hit: np.ndarray, conf: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.calibration import calibration_curve

    if y_hit.min(initial=0) == y_hit.max(initial=0):        # one class only: no curve to draw
        return np.array([]), np.array([])
    frac, mean = calibration_curve(y_hit, conf, n_bins=n_bins, strategy="uniform")
    return mean, frac


def calibration_figure(splits: dict[str, tuple[np.ndarray, np.ndarray]], label_names: Sequence[str],
                       positive: int | None, threshold: float | None, n_bins: int = 10,
                       title: str = "") -> Any:
    """The figure for ``splits`` = ``{"val": (y_true, y_score), "test": ...}`` (see the module doc)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 4.0), layout="constrained")
    ax_rel, ax_hist = fig.subplots(1, 2)
    ax_rel.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
    names = [str(n) for n in label_names]
    for (split, (y, s)), colour in zip(splits.items(), ("tab:orange", "tab:blue")):
        y = np.asarray(y).reshape(-1).astype(int)
        s = np.asarray(s, dtype=np.float64)
        if positive is not None:
            conf, hit = s[:, positive], (y == positive).astype(int)
        else:
            conf, hit = s.max(1), (s.argmax(1) == y).astype(int)
        mean, frac = _curve(hit, conf, n_bins)
        ax_rel.plot(mean, frac, marker="o", ms=4, color=colour, label=f"{split} (n={len(y)})")
    what = f"P({names[positive]})" if positive is not None else "top-label confidence"
    ax_rel.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"predicted {what} (bin mean)",
               ylabel=f"observed fraction {names[positive]}" if positive is not None else "observed accuracy",
               title=f"reliability diagram ({n_bins} bins)")
    ax_rel.legend(fontsize=8, loc="upper left")
    y, s = next(reversed(splits.values()))
    y = np.asarray(y).reshape(-1).astype(int)
    split = next(reversed(splits))
    conf = s[:, positive] if positive is not None else s.max(1)
    bins = np.linspace(0, 1, 21)
    others = iter(["tab:green", "tab:purple", "tab:brown", "tab:gray", "tab:olive", "tab:cyan", "tab:pink"] * 4)
    for c, name in enumerate(names):
        if (y == c).any():
            colour = "tab:red" if c == positive else next(others)
            ax_hist.hist(conf[y == c], bins=bins, alpha=0.5, color=colour, label=f"true {name} (n={(y == c).sum()})")
    if threshold is not None:
        ax_hist.axvline(threshold, color="k", lw=1.2, ls="--", label=f"operating threshold {threshold:.3f}")
    ax_hist.set(xlim=(0, 1), xlabel=f"predicted {what}", ylabel="images", title=f"scores on {split} by true class")
    ax_hist.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def write_calibration_png(path: str | Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                          label_names: Sequence[str], positive: int | None, threshold: float | None,
                          n_bins: int = 10, title: str = "") -> Path:
    """Draw :func:`calibration_figure` and save it atomically at ``path``."""
    from ..io import atomic_savefig

    fig = calibration_figure(splits, label_names, positive, threshold, n_bins, title)
    return atomic_savefig(fig, Path(path), dpi=110)

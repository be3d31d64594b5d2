"""Pareto front outputs of a multi-objective search: ``pareto.csv`` and ``pareto.png``."""
from __future__ import annotations

import csv
import io
import itertools
import json
from typing import Any

from mednas_nni.io import RunDir, atomic_savefig, atomic_write_text

__all__ = ["write_pareto"]


def write_pareto(rd: RunDir, strategy: Any, records: list[dict[str, Any]], finalists: list[dict[str, Any]]) -> None:
    front = strategy.pareto_front(records)
    names = [o.name for o in strategy.objectives]
    extra = [k for k in ("params", "flops") if k not in names]
    fin = {r["hash"]: r.get("chosen_as", "") for r in finalists}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["hash", *names, *extra, "finalist", "generation", "arch"])
    for r in sorted(front, key=lambda r: r["metrics"][names[0]], reverse=True):
        w.writerow([r["hash"], *[r["metrics"].get(n) for n in names + extra], fin.get(r["hash"], ""),
                    r.get("batch"), json.dumps(r["sample"], sort_keys=True)])
    atomic_write_text(rd / RunDir.PARETO_CSV, buf.getvalue())
    _plot(rd, strategy, records, front, finalists, names)


def _plot(rd: RunDir, strategy: Any, records: list[dict], front: list[dict], finalists: list[dict],
          names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    allr = [r for r in records if r["status"] == "ok"]
    pairs = list(itertools.combinations(range(len(names)), 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.4), squeeze=False)
    goals = {o.name: o.goal for o in strategy.objectives}
    for ax, (i, j) in zip(axes[0], pairs):
        xi, yj = names[i], names[j]
        ax.scatter([r["metrics"][xi] for r in allr], [r["metrics"][yj] for r in allr], s=10, c="0.7",
                   label=f"scored ({len(allr)})")
        ax.scatter([r["metrics"][xi] for r in front], [r["metrics"][yj] for r in front], s=22, c="tab:red",
                   label=f"Pareto front ({len(front)})")
        for r in finalists:
            ax.scatter(r["metrics"][xi], r["metrics"][yj], s=140, facecolors="none", edgecolors="k", linewidths=1.5)
            ax.annotate(r.get("chosen_as", ""), (r["metrics"][xi], r["metrics"][yj]), textcoords="offset points",
                        xytext=(6, 6), fontsize=8)
        if xi == "flops":
            ax.set_xscale("log")
        if yj == "flops":
            ax.set_yscale("log")
        ax.set_xlabel(f"{xi} ({goals[xi]})")
        ax.set_ylabel(f"{yj} ({goals[yj]})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    failed = sum(r["status"] == "failed" for r in records)
    fig.suptitle(f"{strategy.name}: {len(allr)} architectures scored, {failed} failed, "
                 f"{strategy.generation} generations\ncircles = finalists", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, rd / RunDir.PARETO_PNG, dpi=110)
    plt.close(fig)

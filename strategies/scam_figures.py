"""Figures of a NAS-SCAM search: ``alpha_<module>.png`` per attention module and ``scam_cells.png``, the derived
attention cells.

* ``alpha_<module>.png``: the per-epoch softmax(α) of the module's 12 edges (6 SAM + 6 CAM) from the one-shot
  engine's recorder rows, as two heat maps (rows = edge and op, columns = epochs): 84 curves would not be readable
  as line plots, and 8 figures of 12 line panels each took over a minute to draw on 2 busy cores.
* ``scam_cells.png``: for every module, its derived SAM and CAM cell as a small DAG (input node ``x``, hidden nodes 1
  and 2, map node ``M``); every kept edge is an arrow labelled with its op and its final probability, ``none`` edges
  are left out, exactly as the derived network leaves them out.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from mednas_nni.io import atomic_savefig
from mednas_nni.search_spaces.attention_cells import NONE, NUM_NODES, cell_edges, edge_label

__all__ = ["CELLS_PNG", "alpha_png_name", "plot_module_alphas", "plot_derived_cells"]

_logger = logging.getLogger(__name__)

CELLS_PNG = "scam_cells.png"


def alpha_png_name(scope: str) -> str:
    """``alpha_<module>.png``."""
    return f"alpha_{scope}.png"


def _alpha_matrix(rows: list[dict[str, Any]], prefix: str) -> tuple[Any, list[str], list[str]]:
    """``(rows x epochs)`` probabilities of every ``edge/op`` under ``prefix`` (``p/<scope>/<kind>/``), with the
    edge boundaries (row names) in label order."""
    import numpy as np

    cols = [c for c in (rows[0] if rows else {}) if c.startswith(prefix)]
    names = [c[len(prefix):] for c in cols]
    m = np.array([[float(r.get(c, np.nan)) for r in rows] for c in cols], dtype=float)
    edges = []
    for n in names:
        edge = n.rpartition("/")[0]
        if edge not in edges:
            edges.append(edge)
    return m, names, edges


def _edge_text(edge: str) -> str:
    node, _, src = edge.partition("_in")
    src_name = "x" if src == "0" else src
    dst = "M" if node == f"node{NUM_NODES}" else node[4:]
    return f"{src_name}->{dst}"


def plot_module_alphas(rows: list[dict[str, Any]], folder: Path, scopes: list[str], title: str) -> list[Path]:
    """``alpha_<scope>.png`` for every scope: softmax(α) of every edge and op over the epochs as its departure from
    uniform (p − 1/n_ops; red: gained, blue: lost), one heat map for the SAM cell and one for the CAM cell (rows: edge
    ``source->node`` and op; columns: epochs, 0 = initial α)."""
    import numpy as np
    from matplotlib.figure import Figure

    out = []
    for scope in scopes:
        mats = {kind: _alpha_matrix(rows, f"p/{scope}/{kind}/") for kind in ("sam", "cam")}
        n_rows = max(len(m[1]) for m in mats.values())
        if not n_rows:
            continue
        fig = Figure(figsize=(9.0, 0.16 * n_rows + 1.6))
        axes = fig.subplots(1, 2)
        fig.subplots_adjust(left=0.14, right=0.86, wspace=0.55, top=1 - 0.75 / (0.16 * n_rows + 1.6),
                            bottom=0.45 / (0.16 * n_rows + 1.6))
        image = None
        # colour = p - 1/n_ops of the edge, on a diverging scale centred at 0 (uniform): a search moves α away from
        # uniform by a few hundredths at first, which a 0..1 (or 0..max) scale does not show; SAM (6 ops) and CAM
        # (8 ops) share the scale because both are departures from their own uniform
        devs = {kind: m - 1.0 / np.array([[sum(x.rpartition("/")[0] == n.rpartition("/")[0] for x in names)]
                                          for n in names], dtype=float)
                for kind, (m, names, _) in mats.items() if len(names)}
        top = max((float(np.nanmax(np.abs(d))) for d in devs.values() if d.size), default=0.0)
        for ax, (kind, (m, names, edges)) in zip(axes, mats.items()):
            if not names:
                ax.set_axis_off()
                continue
            image = ax.imshow(devs[kind], aspect="auto", cmap="RdBu_r", vmin=-max(top, 1e-6), vmax=max(top, 1e-6),
                              interpolation="nearest")
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels([f"{_edge_text(n.rpartition('/')[0])} {n.rpartition('/')[2]}" for n in names],
                               fontsize=5.5)
            for k in range(1, len(edges)):       # a line between edges
                first = next(i for i, n in enumerate(names) if n.startswith(edges[k] + "/"))
                ax.axhline(first - 0.5, color="white", lw=1.2)
            ax.set_xticks(range(m.shape[1]))
            ax.set_xticklabels([str(e) for e in range(m.shape[1])], fontsize=6)
            ax.set_xlabel("epoch (0: initial α)", fontsize=7)
            ax.set_title(f"{kind.upper()} ({'spatial' if kind == 'sam' else 'channel'})", fontsize=8)
        cax = fig.add_axes((0.885, 0.25, 0.015, 0.5))
        fig.colorbar(image, cax=cax).ax.tick_params(labelsize=6)
        cax.set_ylabel("p − 1/n_ops (0 = uniform)", fontsize=7)
        fig.suptitle(f"{title}: softmax(α) of module {scope} per edge (x = module input, M = map node) and op",
                     fontsize=9)
        out.append(atomic_savefig(fig, Path(folder) / alpha_png_name(scope), dpi=110))
    return out


def _node_xy(node: int) -> tuple[float, float]:
    return float(node), 0.0


def _draw_cell(ax: Any, sample: dict[str, Any], probs: dict[str, dict[Any, float]], prefix: str, name: str) -> None:
    from matplotlib.patches import FancyArrowPatch

    names = ["x", "1", "2", "M"]
    kept = 0
    for i, j in cell_edges():
        label = f"{prefix}/{edge_label(i, j)}"
        op = str(sample.get(label, NONE))
        if op == NONE:
            continue
        kept += 1
        (x0, y0), (x1, y1) = _node_xy(j), _node_xy(i)
        rad = 0.0 if i - j == 1 else (0.35 if i - j == 2 else -0.42)    # span 2 below the nodes, x -> map above
        colour = "tab:red" if i == NUM_NODES else "tab:blue"
        ax.add_patch(FancyArrowPatch((x0 + 0.12, y0), (x1 - 0.12, y1), connectionstyle=f"arc3,rad={rad}",
                                     arrowstyle="-|>", mutation_scale=9, lw=1.1, color=colour))
        p = probs.get(label, {}).get(op)
        text = op if p is None else f"{op} {p:.2f}"
        ty = 0.11 if rad == 0 else -rad * (x1 - x0) / 2 * 1.05
        ax.text((x0 + x1) / 2, ty, text, ha="center", va="center", fontsize=6.5,
                bbox=dict(boxstyle="round,pad=0.12", fc="white", ec="none", alpha=0.85))
    for n in range(NUM_NODES + 1):
        x, y = _node_xy(n)
        ax.scatter([x], [y], s=170, color="0.92", edgecolors="0.3", zorder=3)
        ax.text(x, y, names[n], ha="center", va="center", fontsize=6.5, zorder=4)
    ax.set_title(f"{name} ({kept}/6 edges)", fontsize=8)
    ax.set_xlim(-0.4, NUM_NODES + 0.4)
    ax.set_ylim(-0.75, 0.85)
    ax.set_axis_off()


def plot_derived_cells(sample: dict[str, Any], probs: dict[str, dict[Any, float]], scopes: list[str], path: Path,
                       title: str) -> Path:
    """``scam_cells.png``: the derived SAM and CAM cell of every scope (see the module doc)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    ncol_modules = 2 if len(scopes) > 1 else 1
    nrow = math.ceil(len(scopes) / ncol_modules)
    fig = Figure(figsize=(3.6 * 2 * ncol_modules, 1.7 * nrow + 1.0), layout="constrained")
    axes = fig.subplots(nrow, 2 * ncol_modules, squeeze=False)
    for k, scope in enumerate(scopes):
        r, c = k % nrow, 2 * (k // nrow)
        _draw_cell(axes[r][c], sample, probs, f"{scope}/sam", f"{scope}: SAM (spatial)")
        _draw_cell(axes[r][c + 1], sample, probs, f"{scope}/cam", f"{scope}: CAM (channel)")
    for ax in list(axes.flat)[2 * len(scopes):]:
        ax.axis("off")
    handles = [Line2D([], [], color="tab:blue", label="edge into a hidden node (ReLU)"),
               Line2D([], [], color="tab:red", label="edge into the map node M (sigmoid; map = sum / 3)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{title}\nderived cells: argmax op per edge and its final probability; 'none' edges dropped",
                 fontsize=10)
    return atomic_savefig(fig, Path(path), dpi=110)

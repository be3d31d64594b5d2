"""``cell.png``: a derived Auto-LW-MISN cell drawn as a graph (networkx layout, matplotlib ``Figure``)."""
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["draw_cells"]

_OP_COLOURS = {"identity": "#7f7f7f", "sep_conv_3x3": "#1f77b4", "dil_conv_3x3": "#2ca02c", "ghost_conv": "#9467bd",
               "sk_conv": "#d62728", "shuffle_conv_3x3": "#ff7f0e", "max_pool_3x3": "#8c564b"}


def _positions(nodes: int) -> Dict[str, Tuple[float, float]]:
    """Inputs on the left, intermediate nodes on a zig-zag in the middle, the output on the right."""
    pos = {"c_{k-2}": (0.0, 1.0), "c_{k-1}": (0.0, -1.0)}
    for j in range(nodes):
        pos[str(j)] = (1.2 + 1.1 * j, 0.9 if j % 2 == 0 else -0.9)
    pos["c_{k}"] = (1.2 + 1.1 * nodes + 0.6, 0.0)
    return pos


def draw_cells(kept: Dict[str, List[Tuple[int, int, str]]], nodes: int, path: Path, title: str = "") -> Optional[Path]:
    """Draw every scope's cell (``kept``: ``{scope: [(node, input, op), ...]}`` from ``LWMISNSpace.kept_edges``)
    into ``path``; one panel per scope. Edges are coloured and labelled by op; the output concatenates the nodes."""
    import networkx as nx
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .lw_misn import SHORT

    from mednas_nni.io import atomic_savefig

    n = len(kept)
    fig = Figure(figsize=(9.5, 4.4 * n + 0.5), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    names = ["c_{k-2}", "c_{k-1}"] + [str(j) for j in range(nodes)]
    pos = _positions(nodes)
    for ax, (scope, edges) in zip(axes, kept.items()):
        g = nx.MultiDiGraph()
        g.add_nodes_from(pos)
        for j, i, op in edges:
            g.add_edge(names[i], str(j), op=op)
        for j in range(nodes):
            g.add_edge(str(j), "c_{k}", op="concat")
        colours = {"c_{k-2}": "#c6dbef", "c_{k-1}": "#c6dbef", "c_{k}": "#fdd0a2"}
        nx.draw_networkx_nodes(g, pos, ax=ax, node_size=1500, node_color=[colours.get(v, "#e5f5e0") for v in g],
                               edgecolors="0.3")
        nx.draw_networkx_labels(g, pos, ax=ax, labels={v: f"${v}$" if v.startswith("c_") else f"node {v}" for v in g},
                                font_size=9)
        placed: List[Tuple[float, float]] = []
        for u, v, data in g.edges(data=True):
            op = data["op"]
            colour = _OP_COLOURS.get(op, "0.55")
            # curve edges that skip over a node so that they do not run through it
            rad = 0.0 if op == "concat" or abs(pos[u][0] - pos[v][0]) < 1.5 else 0.25
            nx.draw_networkx_edges(g, pos, ax=ax, edgelist=[(u, v)], edge_color=colour,
                                   width=2.0 if op != "concat" else 1, style="solid" if op != "concat" else "dashed",
                                   arrows=True, arrowsize=14, node_size=1500, connectionstyle=f"arc3,rad={rad}")
            if op == "concat":
                continue
            (x0, y0), (x1, y1) = pos[u], pos[v]
            cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)   # arc3's control point
            for t in (0.5, 0.36, 0.64, 0.26, 0.74):       # the first spot on the curve away from other labels
                xm = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t ** 2 * x1
                ym = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1
                if all(abs(xm - a) > 0.45 or abs(ym - b) > 0.22 for a, b in placed):
                    break
            placed.append((xm, ym))
            ax.text(xm, ym, SHORT.get(op, op), fontsize=8.5, color=colour, ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colour, "lw": 0.6})
        handles = [Line2D([], [], color=c, lw=2, label=f"{SHORT[o]} = {o}") for o, c in _OP_COLOURS.items()]
        ax.legend(handles=handles, loc="lower right", fontsize=7, ncol=2, frameon=False)
        ax.set_title(f"{scope}: two inputs per node (DARTS rule); output = concat of nodes 0-{nodes - 1}", fontsize=10)
        ax.set_xlim(-0.6, pos["c_{k}"][0] + 0.6)
        ax.set_ylim(-2.3, 1.7)
        ax.set_aspect("equal")        # arc3 bends in display space: equal scales keep the labels on the curves
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return atomic_savefig(fig, path, dpi=110)

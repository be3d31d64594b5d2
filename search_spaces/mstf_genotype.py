"""The MSTF-NAS (MedNAS) genotype as plain dicts: labels, size and readable text of an architecture.

Method: Wang et al., "MedNAS: Multiscale Training-Free Neural Architecture Search for Medical Image Analysis",
IEEE Transactions on Evolutionary Computation 28(3):668-681, 2024, doi:10.1109/TEVC.2024.3352641. The labels are
documented in :mod:`.mstf_cell`, whose space and network use these helpers.
"""
import logging
import math
import re
from typing import Any, Dict, List

from .ops import OP_NAMES, POOL_NAMES

__all__ = ["NUM_BRANCHES", "arch_labels", "space_size", "describe_arch", "describe_short", "dead_cells",
           "live_nodes"]

_logger = logging.getLogger(__name__)

NUM_BRANCHES = 4
"""Number of pooling branches of each reduction cell."""


def arch_labels(num_blocks: int, num_nodes: int) -> List[str]:
    """All labels of a space, in ``simplify()`` order."""
    out: List[str] = []
    for b in range(num_blocks):
        for i in range(1, num_nodes + 1):
            out += [f"block{b}/normal/node{i}/op", f"block{b}/normal/node{i}/input"]
        out += [f"block{b}/reduce/branch{k}" for k in range(NUM_BRANCHES)]
    return out


def space_size(num_blocks: int, num_nodes: int) -> int:
    """Number of architectures: ``(len(OPS)**N * N! * len(POOLS)**4) ** B``."""
    per_block = len(OP_NAMES) ** num_nodes * math.factorial(num_nodes) * len(POOL_NAMES) ** NUM_BRANCHES
    return per_block ** num_blocks


def live_nodes(ops: List[str], inputs: List[int]) -> List[bool]:
    """Per node (1-based, ``[0]`` = the cell input): does its output depend on the cell input?

    Node ``i`` is live when its op is not ``'zero'`` and its input (0 = the cell input, always live) is live: an op
    applied to a constant (a ``zero`` node, or a node that reads one) gives a constant whatever the cell input.
    """
    live = [True]
    for op, j in zip(ops, inputs):
        live.append(op != "zero" and 0 <= int(j) < len(live) and live[int(j)])
    return live


def dead_cells(sample: Dict[str, Any], num_blocks: int, num_nodes: int) -> List[int]:
    """Blocks whose normal cell outputs a constant (every loose end is dead, see :func:`live_nodes`).

    The cell output is the mean of its loose ends (nodes no node reads), so it depends on the cell input exactly
    when one loose end is live; a constant cell makes every later layer, and so the logits, constant.
    """
    dead = []
    for b in range(num_blocks):
        ops = [sample[f"block{b}/normal/node{i}/op"] for i in range(1, num_nodes + 1)]
        inputs = [int(sample[f"block{b}/normal/node{i}/input"]) for i in range(1, num_nodes + 1)]
        live = live_nodes(ops, inputs)
        loose = [i for i in range(1, num_nodes + 1) if i not in set(inputs)]
        if not any(live[i] for i in loose):
            dead.append(b)
    return dead


_NODE_RE = re.compile(r"^block(\d+)/normal/node(\d+)/(op|input)$")
_BRANCH_RE = re.compile(r"^block(\d+)/reduce/branch(\d+)$")


def describe_arch(sample: Dict[str, Any]) -> str:
    """Short readable multi-line text of an architecture dict, for model cards and logs.

    Keys that are not labels of this space are ignored. Example output (one block, 2 nodes)::

        block0
          normal: node1 = sep_conv_3x3(input)
                  node2 = identity(node1)
                  output = node2
          reduce: avg_2 | max_3 | avg_4 | max_2 -> concat -> 1x1 conv (x2 channels)
    """
    nodes: Dict[int, Dict[int, Dict[str, Any]]] = {}
    branches: Dict[int, Dict[int, Any]] = {}
    for key, value in sample.items():
        m = _NODE_RE.match(str(key))
        if m:
            nodes.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
            continue
        m = _BRANCH_RE.match(str(key))
        if m:
            branches.setdefault(int(m.group(1)), {})[int(m.group(2))] = value
    lines: List[str] = []
    for b in sorted(set(nodes) | set(branches)):
        lines.append(f"block{b}")
        cell = nodes.get(b, {})
        used = set()
        first = True
        for i in sorted(cell):
            j = cell[i].get("input", "?")
            if isinstance(j, int):
                used.add(j)
            src = "input" if j == 0 else f"node{j}"
            lines.append(f"  {'normal:' if first else '       '} node{i} = {cell[i].get('op', '?')}({src})")
            first = False
        if cell:
            loose = [f"node{i}" for i in sorted(cell) if i not in used]
            out = loose[0] if len(loose) == 1 else f"mean({', '.join(loose)})"
            lines.append(f"          output = {out}")
        if b in branches:
            pools = " | ".join(str(branches[b][k]) for k in sorted(branches[b]))
            lines.append(f"  reduce: {pools} -> concat -> 1x1 conv (x2 channels)")
    return "\n".join(lines)


def describe_short(sample: Dict[str, Any]) -> str:
    """One line per architecture dict, blocks separated by ``;``, e.g. (one block, 2 nodes)::

        block0: node1=sep_conv_3x3(in) node2=identity(node1) | avg_2 max_3 avg_4 max_2
    """
    nodes: Dict[int, Dict[int, Dict[str, Any]]] = {}
    branches: Dict[int, Dict[int, Any]] = {}
    for key, value in sample.items():
        m = _NODE_RE.match(str(key))
        if m:
            nodes.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
            continue
        m = _BRANCH_RE.match(str(key))
        if m:
            branches.setdefault(int(m.group(1)), {})[int(m.group(2))] = value
    parts: List[str] = []
    for b in sorted(set(nodes) | set(branches)):
        cell = nodes.get(b, {})
        ops = " ".join(f"node{i}={cell[i].get('op', '?')}("
                       f"{'in' if cell[i].get('input') == 0 else 'node' + str(cell[i].get('input', '?'))})"
                       for i in sorted(cell))
        pools = " ".join(str(branches.get(b, {})[k]) for k in sorted(branches.get(b, {})))
        parts.append(f"block{b}: {ops} | {pools}")
    return "; ".join(parts)

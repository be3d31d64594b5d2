"""NAS-SAM and NAS-CAM: searched spatial and channel attention cells, and their SCAM combination.

Liu, Wang, Zhang, Wang and Qi, "NAS-SCAM: Neural Architecture Search-Based Spatial and Channel Joint Attention
Module for Nuclei Semantic Segmentation and Classification", MICCAI 2020, LNCS 12261, pp. 263-272,
doi:10.1007/978-3-030-59710-8_26. Everything below follows the authors' public code (``ZuhaoLiu/NAS-SCAM`` @ 9793d30:
``primitives.py``, ``network_search.py``, ``network_rebuild.py``), written anew on NNI's mutables.

Cell (both kinds)
-----------------
Three computed nodes over the cell input (node 0). Node ``i`` (1..3) sums one edge from every earlier node, so the
cell has 1 + 2 + 3 = 6 edges. Hidden nodes have 32 channels (``hidden_channels``), the last node 1. Every edge is
an NNI ``LayerChoice`` over the ops below, each candidate being ``conv -> BN -> activation``: ReLU on the 3 edges
into the hidden nodes, sigmoid on the 3 edges into the last node. The attention map is the sum of the last node's 3
edges divided by 3, so it lies in [0, 1]. Under NNI's DARTS every ``LayerChoice`` becomes
``Σ_k softmax(α)_k · candidate_k(x)``, the authors' ``MixedOp`` exactly.

* **NAS-SAM** (spatial): ops on the feature map ``(B, C, H, W)`` with ``Conv2d`` + ``BatchNorm2d``: ``none``,
  ``conv1``, ``conv3``, ``conv5``, ``dil3`` and ``dil5`` (3x3 / 5x5, dilation 2). The map is ``(B, 1, H, W)`` and
  multiplies the input.
* **NAS-CAM** (channel): the global-average-pooled channel vector, reshaped to ``(B, 1, C)``, goes through the same
  cell with ``Conv1d`` + ``BatchNorm1d`` ops along the channel axis: ``none``, ``conv1``, ``conv3``, ``conv5``,
  ``conv9``, ``conv15``, ``dil3``, ``dil5`` (ECA-style attention with a searched kernel). The map is
  ``(B, C, 1, 1)`` and multiplies the input.
* **SCAM**: ``parallel`` = element-wise max of SAM(x) and CAM(x) (the authors' ``SCAM_P``, their default) or
  ``serial`` = CAM(SAM(x)) (``SCAM_S``).

``none`` (our reading, a documented deviation): the authors' zero op is a 1x1 conv times 0 *followed by the edge's
activation*, so a ``none`` edge into the last node adds the constant sigmoid(0)/3 = 1/6 to the map. Here ``none``
outputs zeros with no activation, which makes the edge truly absent: a derived cell leaves the module out
altogether (:attr:`AttentionCell.edges` holds ``None`` there) and computes what the supernet's one-hot mixture
computes. A node whose every incoming edge is ``none`` is zero; a map whose three edges are all ``none`` is zero.

Labels
------
Built inside an NNI ``label_scope`` (the space uses ``down1`` .. ``down4``, ``up1`` .. ``up4``, or ``shared``), a
cell of kind ``sam`` / ``cam`` labels its edges ``<scope>/<kind>/node<i>_in<j>`` (i = 1..3, j = 0..i-1), one
categorical choice over the op names each. Two cells created under the same scope share their labels, hence one α
set under DARTS (NNI keys architecture parameters by label).
"""
import logging
from typing import Callable, Dict, List, Optional, Tuple

import torch
from nni.mutable import label_scope
from nni.nas.nn.pytorch import LayerChoice
from torch import nn

__all__ = ["SAM_OPS", "CAM_OPS", "NONE", "NUM_NODES", "HIDDEN_CHANNELS", "COMBINATIONS", "ZeroOp", "AttentionCell",
           "SpatialAttention", "ChannelAttention", "SCAM", "cell_edges", "edge_label"]

_logger = logging.getLogger(__name__)

NONE = "none"
"""The op name that drops an edge."""
NUM_NODES = 3
"""Computed nodes per cell (the authors' ``operation_number``)."""
HIDDEN_CHANNELS = 32
"""Channels of the hidden nodes (the authors' ``channel_list``)."""
COMBINATIONS = ("parallel", "serial")
"""How SAM and CAM combine: element-wise max (``SCAM_P``) or CAM(SAM(x)) (``SCAM_S``)."""

# op name -> (kernel size, dilation); "none" has no kernel. Order = the authors' PRIMITIVES order (label values).
SAM_OPS: Dict[str, Optional[Tuple[int, int]]] = {
    NONE: None, "conv1": (1, 1), "conv3": (3, 1), "conv5": (5, 1), "dil3": (3, 2), "dil5": (5, 2)}
CAM_OPS: Dict[str, Optional[Tuple[int, int]]] = {
    NONE: None, "conv1": (1, 1), "conv3": (3, 1), "conv5": (5, 1), "conv9": (9, 1), "conv15": (15, 1),
    "dil3": (3, 2), "dil5": (5, 2)}


def cell_edges(num_nodes: int = NUM_NODES) -> List[Tuple[int, int]]:
    """``(node, input)`` pairs of a cell in label order: (1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)."""
    return [(i, j) for i in range(1, num_nodes + 1) for j in range(i)]


def edge_label(node: int, source: int) -> str:
    """The label of the edge into ``node`` from ``source`` inside a cell's scope: ``node<i>_in<j>``."""
    return f"node{node}_in{source}"


class ZeroOp(nn.Module):
    """The ``none`` op: zeros with ``out_channels`` channels and the input's batch and spatial shape."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros((x.shape[0], self.out_channels, *x.shape[2:]))

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}"


def _conv_op(dims: int, in_ch: int, out_ch: int, kernel: int, dilation: int, act: Callable[[], nn.Module]
             ) -> nn.Sequential:
    conv = (nn.Conv2d if dims == 2 else nn.Conv1d)(in_ch, out_ch, kernel, padding=dilation * (kernel - 1) // 2,
                                                   dilation=dilation)
    norm = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(out_ch)
    return nn.Sequential(conv, norm, act())


def _candidates(ops: Dict[str, Optional[Tuple[int, int]]], dims: int, in_ch: int, out_ch: int,
                act: Callable[[], nn.Module]) -> Dict[str, nn.Module]:
    return {name: ZeroOp(out_ch) if spec is None else _conv_op(dims, in_ch, out_ch, spec[0], spec[1], act)
            for name, spec in ops.items()}


class AttentionCell(nn.Module):
    """The searched cell shared by SAM and CAM: input ``(B, in_channels, *S)`` -> map ``(B, 1, *S)`` in [0, 1].

    Args:
        kind: ``"sam"`` (``Conv2d`` ops, :data:`SAM_OPS`) or ``"cam"`` (``Conv1d`` ops, :data:`CAM_OPS`); also the
            label scope of the edges.
        in_channels: channels of the cell input (the feature channels for SAM, 1 for CAM).
        ops: op names to search (a subset of the kind's table, in table order); default: all of them.
        hidden_channels: channels of the two hidden nodes (the authors' 32).

    Frozen (inside ``model_context(sample)``) an edge whose choice is ``none`` is not built: ``edges[k]`` is None.
    """

    def __init__(self, kind: str, in_channels: int, ops: Optional[List[str]] = None,
                 hidden_channels: int = HIDDEN_CHANNELS):
        super().__init__()
        table = {"sam": SAM_OPS, "cam": CAM_OPS}.get(kind)
        if table is None:
            raise ValueError(f"attention cell kind: expected 'sam' or 'cam', got {kind!r}")
        names = list(table) if ops is None else [n for n in table if n in ops]
        unknown = sorted(set(ops or ()) - set(table))
        if unknown or not names:
            raise ValueError(f"{kind} ops: expected names among {', '.join(table)}, got {list(ops or [])}")
        self.kind, self.dims, self.in_channels = kind, 2 if kind == "sam" else 1, in_channels
        self.hidden_channels = hidden_channels
        channels = [in_channels] + [hidden_channels] * (NUM_NODES - 1) + [1]
        self.edge_names = [edge_label(i, j) for i, j in cell_edges()]
        edges: List[Optional[nn.Module]] = []
        with label_scope(kind):
            for i, j in cell_edges():
                act = nn.Sigmoid if i == NUM_NODES else nn.ReLU
                cands = _candidates({n: table[n] for n in names}, self.dims, channels[j], channels[i], act)
                edge = LayerChoice(cands, label=edge_label(i, j))
                edges.append(None if isinstance(edge, ZeroOp) else edge)   # frozen "none": no module at all
        # A ModuleList holds no None: keep the modules by edge name, the absent ones out.
        self.ops = nn.ModuleDict({n: e for n, e in zip(self.edge_names, edges) if e is not None})

    @property
    def edges(self) -> List[Optional[nn.Module]]:
        """The module of every edge in label order; None where a derived cell dropped a ``none`` edge."""
        return [self.ops[n] if n in self.ops else None for n in self.edge_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        edge_iter = iter(zip(cell_edges(), self.edge_names))
        for i in range(1, NUM_NODES + 1):
            total: Optional[torch.Tensor] = None
            for _ in range(i):
                (_, j), name = next(edge_iter)
                if name in self.ops:
                    out = self.ops[name](nodes[j])
                    total = out if total is None else total + out
            if total is None:       # every incoming edge dropped
                channels = 1 if i == NUM_NODES else self.hidden_channels
                total = x.new_zeros((x.shape[0], channels, *x.shape[2:]))
            nodes.append(total)
        return nodes[-1] / NUM_NODES


class SpatialAttention(nn.Module):
    """NAS-SAM: ``x * map`` with the searched map ``(B, 1, H, W)`` in [0, 1] (:meth:`attention_map`)."""

    def __init__(self, channels: int, ops: Optional[List[str]] = None, hidden_channels: int = HIDDEN_CHANNELS):
        super().__init__()
        self.cell = AttentionCell("sam", channels, ops, hidden_channels)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, 1, H, W)`` in [0, 1]."""
        return self.cell(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_map(x)


class ChannelAttention(nn.Module):
    """NAS-CAM: ``x * map`` with the searched map ``(B, C, 1, 1)`` in [0, 1] (:meth:`attention_map`)."""

    def __init__(self, ops: Optional[List[str]] = None, hidden_channels: int = HIDDEN_CHANNELS):
        super().__init__()
        self.cell = AttentionCell("cam", 1, ops, hidden_channels)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, 1, 1)`` in [0, 1]: the cell over the pooled vector as ``(B, 1, C)``."""
        b, c = x.shape[:2]
        return self.cell(x.mean(dim=(2, 3)).unsqueeze(1)).view(b, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_map(x)


class SCAM(nn.Module):
    """One NAS-SCAM module: a SAM and a CAM over ``channels`` feature channels, combined ``parallel`` (element-wise
    max of SAM(x) and CAM(x)) or ``serial`` (CAM(SAM(x))). Build it inside the module's ``label_scope``; its labels
    are then ``<scope>/sam/...`` and ``<scope>/cam/...``.

    Args:
        channels: feature channels of the input ``(B, channels, H, W)``; the output has the same shape.
        combination: ``"parallel"`` (default, the authors' ``SCAM_P``) or ``"serial"``.
        sam_ops, cam_ops: op names to search (default: all of :data:`SAM_OPS` / :data:`CAM_OPS`).
        hidden_channels: channels of the cells' hidden nodes (the authors' 32).
    """

    def __init__(self, channels: int, combination: str = "parallel", sam_ops: Optional[List[str]] = None,
                 cam_ops: Optional[List[str]] = None, hidden_channels: int = HIDDEN_CHANNELS):
        super().__init__()
        if combination not in COMBINATIONS:
            raise ValueError(f"combination: expected one of {', '.join(COMBINATIONS)}, got {combination!r}")
        self.combination = combination
        self.sam = SpatialAttention(channels, sam_ops, hidden_channels)
        self.cam = ChannelAttention(cam_ops, hidden_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.combination == "serial":
            return self.cam(self.sam(x))
        return torch.maximum(self.sam(x), self.cam(x))

    def extra_repr(self) -> str:
        return f"combination={self.combination!r}"

"""The 8 lightweight candidate operations of Auto-LW-MISN (Table 1) and their parameter / FLOP counts.

Zhang, Zhong and Mao, "Auto-LW-MISN: automatic construction of lightweight medical image segmentation networks",
*Computer Science* (计算机科学) 49(10):183-190, 2022, doi:10.11896/jsjkx.210800052, §2.1 and Table 1. Every op maps
``C -> C`` channels at stride 1 (shape kept), so any op fits any edge of a cell.

========================  =======================================================================================
``identity``              the input
``sep_conv_3x3``          DARTS' separable conv: 2 x (ReLU, 3x3 depthwise, 1x1 pointwise, BN)
``dil_conv_3x3``          ReLU, 3x3 depthwise conv with dilation 2 ("grouped, groups = channels", §2.1), 1x1, BN
``ghost_conv``            GhostNet module (Han et al., CVPR 2020), ratio 2: 1x1 conv to C/2 + BN + ReLU, then a
                          3x3 depthwise "cheap" conv of those C/2 maps + BN + ReLU, concatenated
``sk_conv``               selective-kernel conv (Li et al., CVPR 2019), 2 depthwise branches (3x3, 3x3 dilation 2)
                          + BN + ReLU, fused by a softmax attention from the global average (fc to d = max(C/2, 8)
                          + ReLU, fc to 2 x C)
``shuffle_conv_3x3``      ShuffleNet unit (Zhang et al., CVPR 2018), groups 4: 1x1 group conv to a C/4
                          bottleneck + BN + ReLU, channel shuffle, 3x3 depthwise + BN, 1x1 group conv + BN
``max_pool_3x3``          3x3 max pooling, stride 1
``zero``                  no connection (zeros)
========================  =======================================================================================

MONAI (1.x) has none of these blocks (no depthwise-separable, ghost, selective-kernel or shuffle unit), so they are
written here after the cited papers, each a few lines; the supernet around them uses MONAI blocks.

Costs (:func:`op_cost`): parameters of the op (conv weights and BN affine parameters) and FLOPs counted as
multiply-accumulates of the convolutions and linear layers (``torch.utils.flop_counter`` / 2), the paper's
convention (its 2.68 MFLOPs for the separable conv at 32 channels, 32x32 is exactly 2 x (288 + 1024) MACs x 1024
pixels). Pooling, identity and zero cost 0, as in Table 1. At 32 channels, 32x32 (the paper's Table 1 setting):

=================  ===================  ==================  ===========================================================
op                 ours params / MFLOPs paper kB / MB        why ours differs
=================  ===================  ==================  ===========================================================
sep_conv_3x3       2.75 k / 2.69        2.81 / 2.68          paper counts 64 more "params" (BN bookkeeping?)
dil_conv_3x3       1.38 k / 1.34        1.41 / 1.34          likewise 32 more on the one BN
ghost_conv         0.72 k / 0.67        0.74 / 0.67          likewise (BN)
sk_conv            2.26 k / 0.59        2.44 / 0.65          the fc width d is not given (d = 16 ours, no BN in the fc);
                                                             the paper also counts the attention's products as FLOPs
shuffle_conv_3x3   0.30 k / 0.20        0.30 / 0.20          -
=================  ===================  ==================  ===========================================================
"""
import math
from functools import lru_cache
from typing import Callable, Dict, Tuple

import torch
from torch import nn

__all__ = ["OP_NAMES", "PARAMETRIC_OPS", "build_op", "op_cost", "Zero", "SepConv", "DilConv", "GhostConv", "SKConv",
           "ShuffleConv", "ChannelShuffle"]

OP_NAMES = ("identity", "sep_conv_3x3", "dil_conv_3x3", "ghost_conv", "sk_conv", "shuffle_conv_3x3", "max_pool_3x3",
            "zero")
"""The candidate values of every edge label, in this order (Table 1's order)."""
PARAMETRIC_OPS = ("sep_conv_3x3", "dil_conv_3x3", "ghost_conv", "sk_conv", "shuffle_conv_3x3")
SHUFFLE_GROUPS = 4


class Zero(nn.Module):
    """No connection: zeros of the input's shape (``x * 0`` keeps the graph traceable and exportable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class SepConv(nn.Module):
    """DARTS' ``sep_conv_3x3``: (ReLU, depthwise 3x3, pointwise 1x1, BN) twice."""

    def __init__(self, c: int):
        super().__init__()
        layers = []
        for _ in range(2):
            layers += [nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False),
                       _bn(c)]
        self.op = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """``dil_conv_3x3``: ReLU, depthwise 3x3 with dilation 2 (groups = channels), pointwise 1x1, BN."""

    def __init__(self, c: int):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=2, dilation=2, groups=c, bias=False),
                                nn.Conv2d(c, c, 1, bias=False), _bn(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class GhostConv(nn.Module):
    """GhostNet's Ghost module with ratio 2 and a 3x3 depthwise cheap operation (``C`` must be even)."""

    def __init__(self, c: int):
        super().__init__()
        half = c // 2
        self.primary = nn.Sequential(nn.Conv2d(c, half, 1, bias=False), _bn(half), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(half, c - half, 3, padding=1, groups=half, bias=False), _bn(c - half),
                                   nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)


class SKConv(nn.Module):
    """Selective-kernel conv, M = 2 depthwise branches (3x3 and 3x3 dilation 2), attention width ``max(C/2, 8)``."""

    def __init__(self, c: int):
        super().__init__()
        d = max(c // 2, 8)
        self.branches = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, c, 3, padding=dil, dilation=dil, groups=c, bias=False), _bn(c), nn.ReLU())
            for dil in (1, 2)])
        # SKNet normalises z with BN; a BatchNorm1d on (N, d) cannot train on a batch of one image, so the fc has a
        # bias instead
        self.squeeze = nn.Sequential(nn.Linear(c, d), nn.ReLU())
        self.select = nn.Linear(d, 2 * c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = [b(x) for b in self.branches]
        z = self.squeeze((u[0] + u[1]).mean((2, 3)))
        a = torch.softmax(self.select(z).view(x.shape[0], 2, x.shape[1]), dim=1)
        return u[0] * a[:, 0, :, None, None] + u[1] * a[:, 1, :, None, None]


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle of ``groups`` groups."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleConv(nn.Module):
    """ShuffleNet unit (stride 1, no residual: the cell adds edges itself), groups 4, bottleneck ``C/4`` (rounded up
    to a multiple of 4); ``C`` must be a multiple of 4."""

    def __init__(self, c: int, groups: int = SHUFFLE_GROUPS):
        super().__init__()
        mid = max(groups, int(math.ceil(c / 4 / groups)) * groups)
        self.op = nn.Sequential(
            nn.Conv2d(c, mid, 1, groups=groups, bias=False), _bn(mid), nn.ReLU(), ChannelShuffle(groups),
            nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False), _bn(mid),
            nn.Conv2d(mid, c, 1, groups=groups, bias=False), _bn(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


_BUILDERS: Dict[str, Callable[[int], nn.Module]] = {
    "identity": lambda c: nn.Identity(),
    "sep_conv_3x3": SepConv,
    "dil_conv_3x3": DilConv,
    "ghost_conv": GhostConv,
    "sk_conv": SKConv,
    "shuffle_conv_3x3": ShuffleConv,
    "max_pool_3x3": lambda c: nn.MaxPool2d(3, stride=1, padding=1),
    "zero": lambda c: Zero(),
}


def build_op(name: str, channels: int) -> nn.Module:
    """The op ``name`` (one of :data:`OP_NAMES`) for ``channels`` channels (a multiple of 4)."""
    if name not in _BUILDERS:
        raise ValueError(f"lw_misn op: expected one of {', '.join(OP_NAMES)}, got {name!r}")
    return _BUILDERS[name](channels)


@lru_cache(maxsize=None)
def op_cost(name: str, channels: int, size: int) -> Tuple[int, int]:
    """``(params, flops)`` of op ``name`` at ``channels`` channels on a ``size`` x ``size`` map (FLOPs =
    multiply-accumulates of convolutions and linear layers, counted by ``torch.utils.flop_counter`` on meta
    tensors: nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    op = build_op(name, channels)
    params = sum(p.numel() for p in op.parameters())
    if params == 0:
        return 0, 0
    op = op.to("meta").eval()
    with FlopCounterMode(display=False) as counter:
        op(torch.empty(1, channels, size, size, device="meta"))
    return int(params), int(counter.get_total_flops() // 2)     # FlopCounterMode counts 2 FLOPs per MAC

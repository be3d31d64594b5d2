"""Candidate operations of the MSTF-NAS (MedNAS) search space.

* ``OPS`` -- the 8 normal-cell operations, ``{name: lambda C: module}``. All of them have stride 1 and keep the
  shape ``(N, C, H, W)``. ``OP_NAMES`` keeps the order in which the third-party reproduction lists its ops
  (project notes, METHODS.md section A4). The order is part of the public API: it fixes the ``values`` of every
  ``block{b}/normal/node{i}/op`` label, so a strategy's integer encoding (index into ``values``) depends on it.
* ``POOLS`` -- the 6 reduction-cell pooling types, ``{name: lambda: module}`` (average or max pooling with
  kernel 2, 3 or 4 and stride 2), padded so that every one of them gives ``ceil(H / 2)`` for any ``H >= 1``.

Normal-cell operations follow the DARTS definitions (ReLU -> conv -> BN ordering; a separable convolution applies
the depthwise + pointwise block twice; dilated convolutions are depthwise-separable with dilation 2). Source:
``quark0/darts``, file ``cnn/operations.py`` (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search",
ICLR 2019). We always use ``affine=True`` batch norm, as in DARTS's final (retraining) networks, because the
frozen models of this space are trained from scratch.
"""
import logging
import math
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "OPS", "OP_NAMES", "POOLS", "POOL_NAMES",
    "Zero", "SepConv", "DilConv", "HalvingPool2d", "halved_size",
]

_logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Normal-cell operations (DARTS, quark0/darts cnn/operations.py; stride fixed to 1, affine=True)
# --------------------------------------------------------------------------------------------------------------

class Zero(nn.Module):
    """The DARTS ``none`` operation for stride 1: an all-zero tensor of the input's shape (``x.mul(0.)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class SepConv(nn.Module):
    """DARTS separable convolution: (ReLU, depthwise k x k, pointwise 1x1, BN) applied twice."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride=stride, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(c_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride=1, padding=padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """DARTS dilated convolution: ReLU, depthwise dilated k x k, pointwise 1x1, BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=c_in,
                      bias=False),
            nn.Conv2d(c_in, c_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _conv_7x1_1x7(c: int) -> nn.Module:
    # DARTS 'conv_7x1_1x7' with stride 1: ReLU, 1x7 conv, 7x1 conv, BN (the order of the DARTS source).
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(c, c, (1, 7), stride=(1, 1), padding=(0, 3), bias=False),
        nn.Conv2d(c, c, (7, 1), stride=(1, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(c, affine=True),
    )


OPS: Dict[str, Callable[[int], nn.Module]] = {
    "zero": lambda c: Zero(),
    "identity": lambda c: nn.Identity(),
    "sep_conv_3x3": lambda c: SepConv(c, c, 3, 1, 1),
    "sep_conv_5x5": lambda c: SepConv(c, c, 5, 1, 2),
    "sep_conv_7x7": lambda c: SepConv(c, c, 7, 1, 3),
    "dil_conv_3x3": lambda c: DilConv(c, c, 3, 1, 2, 2),
    "dil_conv_5x5": lambda c: DilConv(c, c, 5, 1, 4, 2),
    "conv_7x1_1x7": _conv_7x1_1x7,
}
"""Normal-cell operations, ``{name: lambda C: module}``; every module maps ``(N, C, H, W)`` to the same shape."""

OP_NAMES: List[str] = list(OPS)
"""Normal-cell operation names in label-value order (do not reorder: integer encodings index into it)."""


# --------------------------------------------------------------------------------------------------------------
# Reduction-cell pooling (stride 2, output size ceil(H / 2) for every kernel)
# --------------------------------------------------------------------------------------------------------------

def halved_size(size: int) -> int:
    """Spatial size after one reduction cell: ``ceil(size / 2)``."""
    return int(math.ceil(size / 2))


class HalvingPool2d(nn.Module):
    """Average or max pooling with kernel ``k`` and stride 2 whose output size is ``ceil(H/2) x ceil(W/2)``.

    Why the padding is asymmetric: with stride 2 the output size is ``floor((H + p - k) / 2) + 1`` for a total
    padding ``p``. Plain symmetric padding ``k // 2`` gives different sizes for different kernels on odd inputs
    (H = 7: k = 2 -> 3, k = 3 -> 4), so the concatenation of the multi-scale branches would fail. A total padding
    of ``p = k - 1`` gives ``floor((H - 1) / 2) + 1 = ceil(H / 2)`` for every ``H >= 1`` and every ``k``; we put
    ``(k - 1) // 2`` before and ``k // 2`` after (k = 2: 0/1, k = 3: 1/1, k = 4: 1/2). Every window then starts
    at or before the last real pixel and ends at or after the first one, so it always covers a real pixel.

    Padding never counts as data: max pooling pads with ``-inf``; average pooling pads with zeros and divides by
    the number of real pixels in each window (the ``count_include_pad=False`` rule DARTS uses for its pools).
    """

    def __init__(self, mode: str, kernel_size: int):
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.mode = mode
        self.kernel_size = int(kernel_size)
        before, after = (self.kernel_size - 1) // 2, self.kernel_size // 2
        # F.pad order for the last two dims: (left, right, top, bottom).
        self.padding: Tuple[int, int, int, int] = (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        if self.mode == "max":
            return F.max_pool2d(F.pad(x, self.padding, value=float("-inf")), k, stride=2)
        summed = F.avg_pool2d(F.pad(x, self.padding), k, stride=2)
        ones = torch.ones_like(x[:1, :1])
        valid = F.avg_pool2d(F.pad(ones, self.padding), k, stride=2)  # fraction of real pixels per window (> 0)
        return summed / valid

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, kernel_size={self.kernel_size}, stride=2, padding={self.padding}"


POOLS: Dict[str, Callable[[], nn.Module]] = {
    "avg_2": lambda: HalvingPool2d("avg", 2),
    "avg_3": lambda: HalvingPool2d("avg", 3),
    "avg_4": lambda: HalvingPool2d("avg", 4),
    "max_2": lambda: HalvingPool2d("max", 2),
    "max_3": lambda: HalvingPool2d("max", 3),
    "max_4": lambda: HalvingPool2d("max", 4),
}
"""Reduction-cell pooling types, ``{name: lambda: module}``; each halves H and W (rounding up)."""

POOL_NAMES: List[str] = list(POOLS)
"""Pooling names in label-value order (do not reorder: integer encodings index into it)."""

"""Fixed (hand-designed) attention modules for the NAS-SCAM comparison: SE and CBAM-style, same hook as SCAM.

* **SE** (Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507): MONAI's
  :class:`monai.networks.blocks.ChannelSELayer` (global average pool, bottleneck MLP with reduction ``r``, sigmoid).
* **CBAM** (Woo, Park, Lee and Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv:1807.06521):
  channel attention (a shared MLP over the average- and max-pooled vectors, summed, sigmoid) followed by spatial
  attention (a 7x7 convolution over the channel-wise mean and max maps, sigmoid). Hand-written because MONAI has no
  CBAM block (its ``SpatialAttentionBlock`` is self-attention over positions, a different module).

:func:`fixed_attention` returns the factory that :class:`~.attention_unet.AttentionUNet` takes, so the fixed
modules sit exactly where NAS-SCAM puts its searched ones (after every down and up block).
"""
import logging
from typing import Callable, Optional

import torch
from monai.networks.blocks import ChannelSELayer
from torch import nn

__all__ = ["CBAM", "fixed_attention", "FIXED_KINDS"]

_logger = logging.getLogger(__name__)

FIXED_KINDS = ("none", "se", "cbam")
"""What :func:`fixed_attention` builds: no module, SE or CBAM."""


def _hidden(channels: int, reduction: int) -> int:
    return max(channels // reduction, 1)


class CBAM(nn.Module):
    """CBAM: ``x * Mc(x)`` then ``* Ms(.)`` (see the module doc); input and output ``(B, C, H, W)``.

    Args:
        channels: feature channels.
        reduction: MLP bottleneck ``C / reduction`` (at least 1 channel; the paper's 16).
        kernel_size: the spatial attention convolution (the paper's 7).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + mx)
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(stats))


def fixed_attention(kind: str, reduction: int = 4) -> Callable[[str, int], Optional[nn.Module]]:
    """The ``attention(name, channels)`` factory of :class:`~.attention_unet.AttentionUNet` for a fixed module.

    Args:
        kind: ``"none"`` (plain U-Net), ``"se"`` (MONAI ``ChannelSELayer``) or ``"cbam"``.
        reduction: the SE / CBAM bottleneck ratio (small networks: the papers' 16 would leave 1-channel MLPs).
    """
    if kind not in FIXED_KINDS:
        raise ValueError(f"fixed attention: expected one of {', '.join(FIXED_KINDS)}, got {kind!r}")

    def build(name: str, channels: int) -> Optional[nn.Module]:
        if kind == "se":
            return ChannelSELayer(spatial_dims=2, in_channels=channels, r=min(reduction, channels))
        if kind == "cbam":
            return CBAM(channels, reduction=reduction)
        return None

    return build

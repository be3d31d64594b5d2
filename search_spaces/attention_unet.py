"""The U-Net of NAS-SCAM from MONAI blocks, with an attention module after every down and up block.

The authors' network (``ZuhaoLiu/NAS-SCAM`` @ 9793d30, ``network_rebuild.py``) is a U-Net with feature root ``r``,
4 down and 4 up blocks of double convolutions (GroupNorm(4), dropout 0.2), transposed-convolution up-sampling and
one attention module after every down and up block (8 modules). Here the blocks are MONAI's BasicUNet blocks
(:class:`monai.networks.nets.basic_unet.TwoConv`, ``Down`` = max-pool + TwoConv, ``UpCat`` = transposed conv +
concatenation + TwoConv) at widths ``r, 2r, 4r, 8r, 16r`` (down) and ``8r, 4r, 2r, r`` (up); MONAI's BasicUNet
itself has no hook for a module between its blocks, hence this small composition.

``attention(name, channels)`` builds the module after each block, named ``down1`` .. ``down4`` (after the down
blocks, widths ``2r .. 16r``) and ``up1`` .. ``up4`` (after the up blocks, deepest first, widths ``8r .. r``);
``None`` gives the plain U-Net. The NAS-SCAM space passes searched :class:`~.attention_cells.SCAM` modules, the
benchmark passes fixed SE / CBAM-style modules (:mod:`.attention_fixed`) through the same hook, so every peer has
the same backbone.

Inputs of any size work: the image is padded (edge replication, bottom and right) to a multiple of 16 and the
logits are cropped back.
"""
import logging
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from monai.networks.nets.basic_unet import Down, TwoConv, UpCat
from torch import nn

__all__ = ["AttentionUNet", "MODULE_NAMES", "module_widths"]

_logger = logging.getLogger(__name__)

DEPTH = 4
MODULE_NAMES = tuple(f"down{i}" for i in range(1, DEPTH + 1)) + tuple(f"up{i}" for i in range(1, DEPTH + 1))
"""Names of the 8 attention positions in forward order."""


def module_widths(root_width: int) -> List[Tuple[str, int]]:
    """``(name, channels)`` of every attention position: down1..4 = 2r..16r, up1..4 = 8r..r."""
    down = [(f"down{i}", root_width * 2 ** i) for i in range(1, DEPTH + 1)]
    up = [(f"up{i}", root_width * 2 ** (DEPTH - i)) for i in range(1, DEPTH + 1)]
    return down + up


class AttentionUNet(nn.Module):
    """MONAI-block U-Net (4 down, 4 up) with ``attention(name, channels)`` after every down and up block.

    Args:
        in_channels: image channels.
        out_channels: logits per pixel (classes, background included).
        root_width: channels of the first level ``r`` (levels ``r .. 16r``); a multiple of ``norm_groups``.
        attention: factory of the module after each block (see the module doc); None: no attention.
        norm_groups: GroupNorm groups in every double convolution (the authors' 4).
        dropout: dropout inside every double convolution (the authors' 0.2).
    """

    def __init__(self, in_channels: int, out_channels: int, root_width: int = 16,
                 attention: Optional[Callable[[str, int], Optional[nn.Module]]] = None, norm_groups: int = 4,
                 dropout: float = 0.2):
        super().__init__()
        r = root_width
        widths = [r * 2 ** i for i in range(DEPTH + 1)]
        norm = ("group", {"num_groups": norm_groups})
        act = ("relu", {"inplace": False})
        self.conv_0 = TwoConv(2, in_channels, widths[0], act, norm, True, dropout)
        self.downs = nn.ModuleList([Down(2, widths[i], widths[i + 1], act, norm, True, dropout) for i in range(DEPTH)])
        self.ups = nn.ModuleList([
            UpCat(2, widths[DEPTH - i], widths[DEPTH - i - 1], widths[DEPTH - i - 1], act, norm, True, dropout,
                  "deconv", halves=i != DEPTH - 1)
            for i in range(DEPTH)])
        self.final_conv = nn.Conv2d(widths[0], out_channels, kernel_size=1)
        mods = {}
        for name, ch in module_widths(r):
            m = attention(name, ch) if attention is not None else None
            mods[name] = m if m is not None else nn.Identity()
        self.attention = nn.ModuleDict(mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)`` logits, any ``H, W >= 1``."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        multiple = 2 ** DEPTH
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = [self.conv_0(x)]
        for i, down in enumerate(self.downs, 1):
            skips.append(self.attention[f"down{i}"](down(skips[-1])))
        y = skips.pop()
        for i, up in enumerate(self.ups, 1):
            y = self.attention[f"up{i}"](up(y, skips.pop()))
        y = self.final_conv(y)
        return y[:, :, :h, :w] if (pad_h or pad_w) else y

"""Exponential-logarithmic Dice loss: ``mean_c (-ln Dice_c) ** gamma``.

Wong, Moradi, Tang and Syeda-Mahmood, "3D Segmentation with Exponential Logarithmic Loss for Highly Unbalanced Object
Sizes", MICCAI 2018, arXiv:1809.00076 (the Dice term of their loss, gamma = 0.3), as NAS-SCAM uses it (Liu et al.,
MICCAI 2020; authors' code ``ZuhaoLiu/NAS-SCAM`` @ 9793d30, sigmoid outputs there). ``-ln Dice`` grows without bound
as a class's Dice falls, and the exponent 0.3 < 1 flattens it near a perfect Dice, so badly segmented (usually small)
classes weigh more than in the plain Dice loss.

The per-class soft Dice is MONAI's (:class:`monai.losses.DiceLoss` with ``reduction="none"``, one Dice per class
over the whole batch, ``batch=True``): ``Dice_c = 1 - DiceLoss_c``. Only the exponential-log reduction is ours,
because MONAI has no such loss.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ExpLogDiceLoss"]


class ExpLogDiceLoss(nn.Module):
    """``mean_c (-ln Dice_c) ** gamma`` on softmax probabilities of ``(B, K, H, W)`` logits against ``(B, 1, H, W)``
    class-index masks (binary data: ``K = 2``), the same inputs as the segmentation task's MONAI losses.

    Args:
        gamma: the exponent (the paper's and the authors' 0.3).
        include_background: average over class 0 too (default True: with softmax, the background channel is a
            class like the others; False averages the foreground classes only).
        eps: lower bound of ``-ln Dice_c`` before the power: ``x ** 0.3`` has an infinite slope at 0, so a class
            segmented perfectly would give an infinite gradient.
        smooth: MONAI's ``smooth_nr`` / ``smooth_dr``.
    """

    def __init__(self, gamma: float = 0.3, include_background: bool = True, eps: float = 1e-6,
                 smooth: float = 1e-5):
        super().__init__()
        from monai.losses import DiceLoss

        if not gamma > 0:
            raise ValueError(f"ExpLogDiceLoss: gamma: expected > 0, got {gamma}")
        self.gamma, self.eps = float(gamma), float(eps)
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=include_background, batch=True,
                             reduction="none", smooth_nr=smooth, smooth_dr=smooth)

    def per_class_dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The soft Dice of every class (``(K,)``, or ``(K - 1,)`` without background)."""
        return 1.0 - self.dice(logits, target).reshape(-1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = self.per_class_dice(logits, target).clamp(min=1e-12, max=1.0)
        return (-torch.log(dice)).clamp(min=self.eps).pow(self.gamma).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, include_background={self.dice.include_background}"

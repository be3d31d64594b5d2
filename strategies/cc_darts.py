"""Complexity-constrained DARTS (Auto-LW-MISN): a differentiable search that pays for expected params and FLOPs.

Zhang, Zhong and Mao, "Auto-LW-MISN: automatic construction of lightweight medical image segmentation networks",
*Computer Science* (计算机科学) 49(10):183-190, 2022, doi:10.11896/jsjkx.210800052, §2.3 and §3.1; on DARTS (Liu et
al., ICLR 2019, arXiv:1806.09055, first-order as in NNI).

Loss of the architecture step (eq. 12)::

    L = L_seg + λ1 · E[params] / P0 + λ2 · E[FLOPs] / F0,   E[c] = Σ_edges Σ_ops softmax(α_edge)_op · c(op)

* ``L_seg``: the task's loss (MONAI ``DiceCELoss``, ``loss: task``) or, ``loss: bce_dice``, the paper's BCE + Dice:
  MONAI ``DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)`` (cross-entropy over the two softmax
  channels is the binary cross-entropy of the foreground probability; the Dice term is the foreground's soft Dice).
* ``E[·]`` over **softmax(α)**, not α as the paper writes (eq. 5-6): a probability keeps the penalty bounded and
  makes it the expected cost of the sampled network; its gradient w.r.t. α is what eq. 7 intends. ``c(op)`` is the
  space's cost hook (``op_costs``: params and multiply-accumulates of every op of every edge, summed over the blocks
  that share the edge, at the data's image size).
* ``P0``, ``F0``: E[params], E[FLOPs] of the untrained supernet (uniform α). The paper does not say how its terms are
  scaled (its λ multiply raw counts in a loss summed over pixels); dividing by the starting expectation makes each
  term start at λ and keeps λ comparable across image sizes and widths. The paper's λ1 = 0.015, λ2 = 0.005 (cells)
  are the defaults; 0.025/0.015 (liver CT) and 0.02/0.01 (prostate MR) are its others.
* The penalty enters the **α step only** (the weights see ``L_seg``), on the held-out search split; weights train on
  the train split with Cutout (MONAI ``RandCoarseDropoutd``, one ``cutout`` x ``cutout`` hole, as DARTS' Cutout 16).

Defaults follow §3.1: 25 epochs, batch 2, weights SGD lr 5e-3 (momentum 0.9, wd 3e-4, cosine), α Adam 6e-4 (wd
1e-3), drop-path 0.3. Derivation: the space's (``lw_misn``: two strongest inputs per node, the DARTS rule). The core
retrains the derived network with λ = 0 (the evaluator recipe; the paper: 30 epochs, batch 4, Adam 6e-3, wd 2e-4,
drop-path 0.15 = ``space.params.drop_path_prob``) and tests it through the task. Outputs: ``oneshot_metrics.csv``
(E_params, E_flops, the relative terms, the penalty), ``alpha.png`` and ``cell.png`` (the derived cell).
"""
from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from pydantic import Field

from mednas_nni.engines.oneshot_engine import OneShotHooks, run_oneshot
from mednas_nni.errors import ConfigError

from .darts import DARTSParams, DARTSSearch

__all__ = ["CCDARTSParams", "CCDARTS", "ComplexityPenalty", "bce_dice_loss", "cutout_transform"]

_logger = logging.getLogger(__name__)
CELL_PNG = "cell.png"


class CCDARTSParams(DARTSParams):
    """Parameters of :class:`CCDARTS` (``strategy.params``): the engine's, with the paper's DSB 2018 settings."""

    lambda_params: float = Field(0.015, ge=0)           # λ1 of eq. 12 (per E[params]/P0)
    lambda_flops: float = Field(0.005, ge=0)            # λ2 of eq. 12 (per E[FLOPs]/F0)
    loss: Literal["task", "bce_dice"] = "task"          # search loss: the task's, or the paper's BCE + Dice
    cutout: int = Field(16, ge=0)                       # Cutout hole side in pixels on weight batches; 0: off
    epochs: int = Field(25, ge=1)
    batch_size: int = Field(2, ge=1)
    optimizer: Literal["adam", "sgd"] = "sgd"
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(3e-4, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    arc_learning_rate: float = Field(6e-4, gt=0)
    arc_weight_decay: float = Field(1e-3, ge=0)
    drop_path_prob: float = Field(0.3, ge=0, lt=1)


class ComplexityPenalty:
    """``λ1 · E[params]/P0 + λ2 · E[FLOPs]/F0`` of ``probs`` (the engine's penalty signature), with its terms."""

    def __init__(self, costs: Any, lambda_params: float, lambda_flops: float):
        if lambda_params < 0 or lambda_flops < 0:
            raise ConfigError(f"strategy cc_darts: lambda_params/lambda_flops: expected >= 0, got "
                              f"{lambda_params}/{lambda_flops}")
        self.costs, self.l1, self.l2 = costs, float(lambda_params), float(lambda_flops)

    def __call__(self, probs: dict[str, torch.Tensor], model: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
        e = self.costs(probs)
        rp, rf = e["params"] / self.costs.p0, e["flops"] / self.costs.f0
        return self.l1 * rp + self.l2 * rf, {"E_params_rel": rp.detach(), "E_flops_rel": rf.detach()}


def bce_dice_loss() -> torch.nn.Module:
    """Eq. 12's BCE + Dice for ``(B, 2, H, W)`` logits and ``(B, 1, H, W)`` masks, as a MONAI ``DiceCELoss``."""
    from monai.losses import DiceCELoss

    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)


def cutout_transform(size: int, seed: int) -> Any:
    """Cutout (DeVries & Taylor 2017, arXiv:1708.04552) of one ``size`` x ``size`` hole (zeros) per image: MONAI
    ``RandCoarseDropoutd`` on ``image``, seeded; returns plain tensors (no MetaTensor in the batches)."""
    from monai.transforms import RandCoarseDropoutd

    t = RandCoarseDropoutd(keys=["image"], holes=1, spatial_size=(size, size), fill_value=0.0, prob=1.0)
    t.set_random_state(seed=seed)

    def apply(sample: dict[str, Any]) -> dict[str, Any]:
        out = t(sample)
        out["image"] = torch.as_tensor(out["image"]).as_subclass(torch.Tensor)
        return out

    return apply


class CCDARTS(DARTSSearch):
    """Auto-LW-MISN's complexity-constrained DARTS: λ1·E[params] + λ2·E[FLOPs] on softmax(α), two inputs per node.

    Built as ``CCDARTS(**params)`` (keyword-only, validated by :class:`CCDARTSParams`). Needs a space with a cost
    hook (``op_costs``), e.g. ``lw_misn``.
    """

    name = "cc_darts"
    Params = CCDARTSParams
    chosen_as = "cc-DARTS derivation"
    title = "complexity-constrained DARTS"

    def hooks(self, space: Any) -> OneShotHooks:
        hooks = super().hooks(space)
        p = self.params
        if hooks.costs is None:
            raise ConfigError(f"strategy cc_darts: search space '{getattr(space, 'name', type(space).__name__)}' "
                              "has no op costs; expected a space whose op_costs() gives params/FLOPs per choice "
                              "(e.g. lw_misn), got None")
        hooks.penalty = ComplexityPenalty(hooks.costs, p.lambda_params, p.lambda_flops)
        hooks.criterion = bce_dice_loss() if p.loss == "bce_dice" else None
        hooks.chosen_as, hooks.title, hooks.log_name = self.chosen_as, self.title, "cc-DARTS"
        return hooks

    def search(self, space: Any, task: Any, data: Any, ctx: Any) -> list[dict[str, Any]]:
        """Search, write ``cell.png`` for spaces that can draw their cells, return the derived finalist."""
        hooks = self.hooks(space)
        p = self.params
        if p.cutout > 0:
            seed = ctx.cfg.run.seed if p.seed is None else p.seed
            hooks.train_transform = cutout_transform(p.cutout, seed)
        _logger.info("cc-DARTS: P0 = %.4g params, F0 = %.4g MACs (expectations of the uniform supernet's searched "
                     "edges), lambda_params %g, lambda_flops %g", hooks.costs.p0, hooks.costs.f0,
                     p.lambda_params, p.lambda_flops)
        out = run_oneshot(space, task, data, ctx, p, hooks, name=self.name)
        fin = out.finalists[0]
        fin["normalisers"] = {"P0": hooks.costs.p0, "F0": hooks.costs.f0}
        if hasattr(space, "kept_edges"):
            from mednas_nni.search_spaces.lw_misn_figure import draw_cells

            cost = fin.get("searched_cost", {})
            draw_cells(space.kept_edges(out.sample), space.p.nodes, ctx.run_dir / CELL_PNG,
                       title=f"derived cell (λ1={p.lambda_params:g}, λ2={p.lambda_flops:g}); its searched edges in "
                             "the "
                             f"whole net: {cost.get('params', 0):,.0f} params, {cost.get('flops', 0) / 1e6:.2f} M MACs")
        return out.finalists

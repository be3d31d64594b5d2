"""What a one-shot strategy hands the engine (:func:`mednas_nni.engines.oneshot_engine.run_oneshot`): the shared
parameters, the method's hooks (penalty, costs, derivation, alternation rule, loss, transforms), and the outcome.
The engine's module doc shows how a strategy uses them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..contracts import PluginParams

if TYPE_CHECKING:  # pragma: no cover
    from .expected_cost import ExpectedCost

__all__ = ["Penalty", "OneShotParams", "OneShotHooks", "OneShotOutcome"]

#: ``penalty(probs, model) -> loss term`` or ``(loss term, {name: value})``; ``probs = {label: softmax(α)}``
Penalty = Callable[[dict[str, torch.Tensor], nn.Module], "torch.Tensor | tuple[torch.Tensor, dict[str, Any]]"]


class OneShotParams(PluginParams):
    """Parameters every one-shot strategy on this engine shares (``strategy.params``; subclass to add your own)."""

    epochs: int = Field(10, ge=1)                       # supernet training epochs, warm-up included
    batch_size: int = Field(64, ge=1)                   # train and search batches
    lr: float = Field(1e-3, gt=0)                       # learning rate of the network weights
    weight_decay: float = Field(3e-4, ge=0)             # of the network weights
    optimizer: Literal["adam", "sgd"] = "adam"          # of the network weights (sgd: with momentum)
    momentum: float = Field(0.9, ge=0, lt=1)            # sgd only
    lr_schedule: Literal["constant", "cosine"] = "constant"   # cosine: annealed to lr_min over the epochs
    lr_min: float = Field(0.0, ge=0)
    arc_learning_rate: float = Field(3e-4, gt=0)        # Adam learning rate of α (betas 0.5, 0.999)
    arc_weight_decay: float = Field(1e-3, ge=0)         # Adam weight decay of α (the DARTS code: 1e-3)
    gradient_clip_val: float | None = Field(5.0, gt=0)  # weight-gradient norm clip; None: off
    warmup_epochs: int = Field(0, ge=0)                 # first epochs train the weights only (α frozen)
    alternation: Literal["step", "epoch"] = "step"      # α/weight alternation per batch or per epoch
    drop_path_prob: float = Field(0.0, ge=0, lt=1)      # final drop-path probability (linear ramp from 0)
    max_batches_per_epoch: int | None = Field(None, ge=1)   # Lightning limit_train_batches; None: the whole split
    val_every_epoch: bool = True                        # the supernet's validation metrics in the CSV, every epoch
    max_val_batches: int | None = Field(None, ge=1)     # of that validation; None: the whole val split
    augment: bool = False                               # the data set's training augmentation for weight batches
    log_prob_every_n_step: int = Field(10, ge=1)        # NNI logs α probabilities every n steps
    num_workers: int = Field(0, ge=0)                   # data-loader workers
    checkpoint: bool = True                             # per-epoch checkpoint in the run dir; resume from it
    seed: int | None = None                             # None: the run's seed

    @model_validator(mode="after")
    def _warmup_below_epochs(self) -> OneShotParams:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs below epochs so that α is trained at all, got warmup_epochs="
                             f"{self.warmup_epochs} with epochs={self.epochs}")
        return self


@dataclass
class OneShotHooks:
    """What a method adds to the engine (every field optional; see the module doc for an example)."""

    penalty: Penalty | None = None
    costs: ExpectedCost | None = None
    derive: Callable[[dict[str, dict[Any, float]]], dict[str, Any]] | None = None
    label_groups: Callable[[str], str] | None = None
    arch_epoch: Callable[[int], bool] | None = None
    criterion: nn.Module | None = None
    train_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    #: ``(train dataset, batch_size, seed) -> batch sampler`` for the weight split (e.g. class-balanced batches)
    train_batch_sampler: Callable[[Any, int, int], Any] | None = None
    chosen_as: str = "DARTS argmax"
    title: str = "DARTS (first-order)"
    log_name: str = "DARTS"


@dataclass
class OneShotOutcome:
    """The result of :func:`run_oneshot`."""

    sample: dict[str, Any]
    probs: dict[str, dict[Any, float]]
    rows: list[dict[str, Any]]
    finalists: list[dict[str, Any]]
    seconds: float
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

"""The Lightning module of a task: what one-shot strategies (NNI's DARTS and friends) train.

:class:`TaskLightningModule` is an ``nni.nas.evaluator.pytorch.LightningModule`` (so NNI's one-shot strategies can
wrap it, see ``nni/nas/oneshot/pytorch/base_lightning.py``) built from a :class:`~mednas_nni.contracts.Task`: the
training step is the task's loss on dict batches (``{"image", "label"}``), the validation step collects the
network outputs and the epoch's metrics are the task's own (:meth:`Task.evaluate` replayed over the collected
outputs, so one definition of every metric serves trials, retraining and one-shot search). The optimiser is Adam.

Unlike NNI's ``SupervisedLearningModule`` (whose ``export_onnx=None`` default writes ``model.onnx`` during the first
validation), this module never exports anything; exporting is the exporter plugin's job.

Under NNI's first-order DARTS (Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019;
``DartsLightningModule.training_step``) :meth:`TaskLightningModule.training_step` runs twice per step: on the
validation batch for the architecture (α) update, with batch index ``2 * i``, then on the training batch for the
weight update, with index ``2 * i + 1``. The first is logged as ``arch_loss`` and the second as ``train_loss``, so
the two never mix in one number.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from nni.nas.evaluator.pytorch import LightningModule
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from ..contracts import DatasetPlugin, Task

__all__ = ["TaskLightningModule", "replay_metrics"]

_logger = logging.getLogger(__name__)


class _Replay(nn.Module):
    """Returns stored network outputs in order, one per call: lets :meth:`Task.evaluate` score outputs that were
    computed earlier (in ``validation_step``) without a second forward pass."""

    def __init__(self, outputs: list[torch.Tensor]):
        super().__init__()
        self.outputs, self.calls = outputs, 0
        # Some evaluate() implementations look up the model's device from its first parameter.
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls >= len(self.outputs):
            raise RuntimeError(f"replayed evaluation asked for output {self.calls + 1} of {len(self.outputs)} stored; "
                               "expected Task.evaluate to call the model once per batch")
        out = self.outputs[self.calls]
        self.calls += 1
        return out.to(x.device)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, batches: list[dict[str, Any]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.batches[i]


def replay_metrics(task: Task, batches: list[dict[str, Any]], outputs: list[torch.Tensor]) -> dict[str, float]:
    """The task's metrics of stored ``outputs`` (one tensor per dict batch of ``batches``, same order).

    Runs :meth:`Task.evaluate` over a loader that yields the stored batches unchanged and a model that returns the
    stored outputs, so the numbers are exactly those ``task.evaluate(model, loader)`` reports.
    """
    if len(batches) != len(outputs):
        raise ValueError(f"replay_metrics: expected one output per batch, got {len(outputs)} outputs for "
                         f"{len(batches)} batches")
    if not batches:
        return {}
    model = _Replay(outputs)
    loader = torch.utils.data.DataLoader(_Batches(batches), batch_size=None, shuffle=False)
    metrics = task.evaluate(model, loader, device="cpu")
    if model.calls != len(outputs):
        raise RuntimeError(f"replayed evaluation used {model.calls} of {len(outputs)} stored outputs; expected "
                           "Task.evaluate to call the model once per batch of the loader")
    return {k: float(v) for k, v in metrics.items()}


class TaskLightningModule(LightningModule):
    """Trains the network set with :meth:`set_model` for ``task``: the task's loss, Adam, the task's metrics.

    Args:
        task: the :class:`~mednas_nni.contracts.Task` (loss, target, evaluate).
        lr: Adam learning rate of the network weights. Default 1e-3.
        weight_decay: Adam weight decay. Default 0.
        dataset: the data set plugin, passed to ``task.loss`` (class weights). Default None.
        collect_val_inputs: keep the validation images for the epoch's metrics (the task's ``evaluate`` sees the
            real batches); with False only labels are kept and images are replaced by empty tensors. Default True.

    Logged: ``train_loss`` (weight steps), ``arch_loss`` (architecture steps under DARTS), ``val_loss`` and
    ``val_<metric>`` for every metric of the task (once per validation epoch).
    """

    def __init__(self, task: Task, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 dataset: DatasetPlugin | None = None, collect_val_inputs: bool = True):
        super().__init__()
        self.task = task
        self.criterion = task.loss(dataset)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.collect_val_inputs = collect_val_inputs
        # Never export ONNX during validation (NNI's SupervisedLearningModule does unless told export_onnx=False).
        self.export_onnx = None
        self._val_batches: list[dict[str, Any]] = []
        self._val_outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ------------------------------------------------------------------ training
    def _phase(self, batch_idx: int) -> str:
        """``"arch"`` for the α step of NNI's DARTS (the validation batch, even index), else ``"train"``."""
        from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule

        try:
            outer = self.trainer.lightning_module
        except RuntimeError:  # not attached to a trainer
            return "train"
        if outer is not self and isinstance(outer, DartsLightningModule) and batch_idx % 2 == 0:
            return "arch"
        return "train"

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch["image"]
        logits = self.model(x)
        return self.criterion(logits, self.task.target(batch["label"])), logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, _ = self._loss(batch)
        self.log(f"{self._phase(batch_idx)}_loss", loss.detach(), on_step=False, on_epoch=True,
                 batch_size=len(batch["image"]))
        return {"loss": loss}

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_batches, self._val_outputs = [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, logits = self._loss(batch)
        n = len(batch["image"])
        self.log("val_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n)
        image = batch["image"].detach().cpu() if self.collect_val_inputs else torch.empty(n, 0)
        self._val_batches.append({"image": image, "label": batch["label"].detach().cpu()})
        self._val_outputs.append(logits.detach().float().cpu())

    def on_validation_epoch_end(self) -> None:
        batches, outputs = self._val_batches, self._val_outputs
        self._val_batches, self._val_outputs = [], []
        if not batches:
            return
        metrics = replay_metrics(self.task, batches, outputs)
        self.log_dict({f"val_{k}": v for k, v in metrics.items()}, on_step=False, on_epoch=True)

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> torch.optim.Optimizer:
        # NNI's one-shot modules remove the architecture parameters from this optimiser (postprocess_weight_optimizers).
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def extra_repr(self) -> str:
        return f"task={self.task!r}, lr={self.lr}, weight_decay={self.weight_decay}"

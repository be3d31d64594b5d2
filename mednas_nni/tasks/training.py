"""Task-generic training procedures: the finalists' retraining (:func:`fit`) and the short per-architecture
training of multi-trial searches (:func:`train_curve`).

Both loops only use the task's :meth:`~mednas_nni.contracts.Task.loss`, :meth:`~mednas_nni.contracts.Task.target`
and :meth:`~mednas_nni.contracts.Task.evaluate`, so classification and segmentation share them. They reproduce,
operation for operation and in the same order of random-number draws, the two loops of the pre-Core-v2 code
(``train_classifier`` of ``evaluators/classification.py`` and ``train_curve`` of ``evaluators/genas_trial.py``),
so seeded searches give the same results as before; only tuple batches became dict batches.

* :func:`fit`: the MedMNIST v2 recipe (Yang et al., *Scientific Data* 10:41, 2023, ``MedMNIST/experiments``
  ``train_and_eval_pytorch.py``): Adam, lr x ``gamma`` at fractions ``milestones`` of the epochs, the checkpoint
  with the best validation metric ``recipe.select_by`` is kept (deep copy; the reference script keeps a reference,
  so in effect the last epoch).
* :func:`train_curve`: the data set is materialised once per process into tensors and batches are drawn with
  ``torch.randperm`` from one seeded generator (no DataLoader start-up per epoch); the weights are re-initialised
  from ``seed`` (common random numbers across architectures).

BatchNorm statistics are recomputed on training batches before every validation ("precise BN", Wu & Johnson,
"Rethinking 'Batch' in BatchNorm", arXiv:2105.07576; ``torch.optim.swa_utils.update_bn``): with small sets and
short budgets (BreastMNIST has 5 batches of 128 per epoch) the running averages still hold much of their initial
value after a few epochs, and in eval mode the error compounds over the layers until the network outputs a
constant. The loops are hand-written rather than Lightning: they must be exactly these ops in this order, and a
trainer adds start-up time to every trial without adding anything here (the one-shot Lightning module is
:mod:`mednas_nni.tasks.lightning`).
"""
from __future__ import annotations

import copy
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

if TYPE_CHECKING:  # pragma: no cover
    from ..config import EvaluatorConfig
    from ..contracts import DatasetPlugin, Task

__all__ = ["fit", "train_curve", "recalibrate_bn", "apply_memory_format", "materialize", "split_tensors",
           "reset_parameters", "unpack_batch", "TensorBatches"]

_logger = logging.getLogger(__name__)

#: materialised splits per data-set object (one entry per process and data set; see :func:`split_tensors`)
_TENSOR_CACHE: weakref.WeakKeyDictionary[Any, dict[str, tuple[torch.Tensor, torch.Tensor]]] = \
    weakref.WeakKeyDictionary()


# ------------------------------------------------------------------------------------------------------------
# Batches and tensors
# ------------------------------------------------------------------------------------------------------------

def unpack_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image, label)`` of a collated dict batch ``{"image", "label"}`` (an ``(x, y)`` pair is accepted too)."""
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    x, y = batch
    return x, y


def _plain(t: Any) -> torch.Tensor:
    # MONAI MetaTensors carry metadata through every op; the loops only need the values.
    t = torch.as_tensor(t)
    return t.as_tensor() if hasattr(t, "as_tensor") else t


class TensorBatches:
    """Dict batches ``{"image": x[i:i+b], "label": y[i:i+b]}`` over in-memory tensors, in order (re-iterable)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256):
        self.x, self.y, self.batch_size = x, y, int(batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(0, len(self.x), self.batch_size):
            yield {"image": self.x[i:i + self.batch_size], "label": self.y[i:i + self.batch_size]}

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size


def materialize(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All items of a deterministic data set as ``(images (N, C, H, W) float, labels (N, ...) long)`` tensors
    (DataLoader, batch 256, in order; labels keep their per-sample shape)."""
    loader = DataLoader(ds, batch_size=256, shuffle=False)
    xs, ys = [], []
    for batch in loader:
        x, y = unpack_batch(batch)
        xs.append(_plain(x).float())
        ys.append(_plain(y).long())
    return torch.cat(xs), torch.cat(ys)


def split_tensors(dataset: DatasetPlugin, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``materialize(dataset.dataset(split))``, computed once per process and data-set object."""
    try:
        entry = _TENSOR_CACHE.setdefault(dataset, {})
    except TypeError:  # not weak-referenceable/hashable: no caching
        entry = {}
    if split not in entry:
        entry[split] = materialize(dataset.dataset(split, augment=False))
    return entry[split]


def reset_parameters(model: nn.Module, seed: int) -> None:
    """Re-initialise every submodule (not the model itself) that has ``reset_parameters``, after
    ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()


def recalibrate_bn(model: nn.Module, inputs: Iterable[torch.Tensor], device: str = "cpu") -> None:
    """Recompute BatchNorm running statistics as the plain average over ``inputs`` (training images).

    ``torch.optim.swa_utils.update_bn`` ("precise BN"); a no-op for a model without BatchNorm.
    """
    from torch.optim.swa_utils import update_bn

    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        update_bn((x.float() for x in inputs), model, device=torch.device(device))


def _recalibrate_bn(model: nn.Module, train_set: Any, batch_size: int, device: str, max_batches: int | None,
                    seed: int) -> None:
    if max_batches == 0:
        return
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=g)
    # NOTE: the whole loader is iterated (only the first batches are used), as before Core v2: random
    # augmentations draw from the global generators per sample, so stopping early would change later draws.
    recalibrate_bn(model, (unpack_batch(batch)[0] for b, batch in enumerate(loader)
                           if max_batches is None or b < max_batches), device)


def apply_memory_format(model: nn.Module, memory_format: str) -> nn.Module:
    """Put the model's 4-D parameters and buffers in ``memory_format`` ("contiguous" leaves it as it is).

    Not ``Module.to(memory_format=...)``, which raises on the 5-D weights of a 3-D network: those are left alone.
    """
    if memory_format == "channels_last":
        with torch.no_grad():
            for t in (*model.parameters(), *model.buffers()):
                if t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def _check_finite(loss: torch.Tensor, epoch: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}; expected a finite loss "
                                 f"(lower the learning rate or check the data)")


# ------------------------------------------------------------------------------------------------------------
# Retraining of finalists
# ------------------------------------------------------------------------------------------------------------

def fit(task: Task, model: nn.Module, dataset: DatasetPlugin, recipe: EvaluatorConfig, *, device: str = "cpu",
        seed: int = 0, on_epoch: Callable[[dict[str, float]], None] | None = None, progress: bool = False,
        desc: str = "train") -> dict[str, Any]:
    """Train ``model`` with ``recipe`` and keep the best epoch by ``recipe.select_by`` (see the module doc).

    Args:
        task: supplies the loss (``task.loss(dataset)``), ``task.target`` and ``task.evaluate``.
        model: the network; trained in place and left holding the best epoch's weights.
        dataset: ``dataset("train", augment=recipe.augment)`` and ``dataset("val")`` are used.
        recipe: an :class:`~mednas_nni.config.EvaluatorConfig` (epochs, batch_size, lr, weight_decay, milestones,
            gamma, augment, select_by (None: the task's default), num_workers, max_batches_per_epoch, bn_batches,
            memory_format).
        device: torch device string.
        seed: seeds the shuffling generator (and ``seed + epoch`` the BatchNorm recalibration batches).
        on_epoch: called after every epoch with ``{"epoch", "train_loss", "val_<metric>"..., "seconds"}``.
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        ``{"history": [per-epoch records], "best_epoch": int, "best_state": state_dict, "val": best metrics}``.

    Raises:
        ConfigError: ``recipe.select_by`` is not a metric of the task.
        FloatingPointError: the training loss became NaN/inf.
    """
    from tqdm.auto import tqdm

    key = task.select_key(recipe.select_by)
    epochs, batch_size = recipe.epochs, recipe.batch_size
    train_set, val_set = dataset.dataset("train", augment=recipe.augment), dataset.dataset("val")
    g = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=g,
                              num_workers=recipe.num_workers)
    val_loader = DataLoader(val_set, batch_size=max(batch_size, 256), shuffle=False, num_workers=recipe.num_workers)
    model = apply_memory_format(model.to(device), recipe.memory_format)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=sorted({max(1, int(round(m * epochs))) for m in recipe.milestones}), gamma=recipe.gamma)
    crit = task.loss(dataset).to(device)
    max_batches = recipe.max_batches_per_epoch
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"score": -np.inf}
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        for b, batch in enumerate(train_loader):
            if max_batches is not None and b >= max_batches:
                break
            x, y = unpack_batch(batch)
            x, y = x.to(device).float(), task.target(y.to(device))
            opt.zero_grad(set_to_none=True)
            loss = crit(model(x), y)
            _check_finite(loss, epoch + 1)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            n += len(x)
        sched.step()
        _recalibrate_bn(model, train_set, batch_size, device, recipe.bn_batches, seed + epoch)
        val = task.evaluate(model, val_loader, device, max_batches)
        rec = {"epoch": epoch + 1, "train_loss": total / max(n, 1), **{f"val_{k}": v for k, v in val.items()},
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        if val[key] > best["score"]:
            best = {"score": val[key], "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict()), "val": val}
        bar.set_postfix({"loss": f"{rec['train_loss']:.3f}", f"val_{key}": f"{val[key]:.3f}"})
        if on_epoch is not None:
            on_epoch(rec)
    bar.close()
    if "state" not in best:  # every epoch's score was NaN: keep the last epoch rather than nothing
        _logger.warning("%s: val_%s was never a number; keeping the last epoch", desc, key)
        best = {"epoch": epochs, "state": copy.deepcopy(model.state_dict()), "val": val}
    model.load_state_dict(best["state"])
    return {"history": history, "best_epoch": best["epoch"], "best_state": best["state"], "val": best["val"]}


# ------------------------------------------------------------------------------------------------------------
# Short training of one architecture in a multi-trial search
# ------------------------------------------------------------------------------------------------------------

def train_curve(task: Task, model: nn.Module, dataset: DatasetPlugin, *, epochs: int, batch_size: int = 64,
                lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0, device: str = "cpu",
                augment: bool = False, max_batches_per_epoch: int | None = None,
                on_epoch: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Re-initialise ``model`` from ``seed``, train it ``epochs`` epochs with Adam and return the per-epoch history.

    Args:
        task: supplies ``task.loss(dataset)`` (class-weighted when ``dataset.loss_weights()`` is not None),
            ``task.target`` and ``task.evaluate``.
        model: the frozen architecture (its weights are reset from ``seed``: common random numbers).
        dataset: the ``train`` and ``val`` splits are materialised once per process (see :func:`split_tensors`);
            with ``augment`` the training split is read through a shuffling DataLoader instead.
        epochs, batch_size, lr, weight_decay: the schedule (no lr decay).
        seed: weights, batch order and BatchNorm recalibration batches.
        device: torch device string.
        augment: random augmentation of the training images (DataLoader path).
        max_batches_per_epoch: cut every epoch short (smoke tests and small budgets); validation stays complete.
        on_epoch: called with each epoch's record.

    Returns:
        One record per epoch: ``{"epoch", "train_loss", "val_<metric>"..., "seconds"}``.

    Raises:
        FloatingPointError: the training loss became NaN/inf.
    """
    x_val, y_val = split_tensors(dataset, "val")
    if augment:
        train_loader = DataLoader(dataset.dataset("train", augment=True), batch_size=batch_size, shuffle=True,
                                  generator=torch.Generator().manual_seed(seed))
    else:
        x_tr, y_tr = split_tensors(dataset, "train")
        train_loader = None
    crit = task.loss(dataset).to(device)
    reset_parameters(model, seed)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        if train_loader is None:
            perm = torch.randperm(len(x_tr), generator=g)
            batches: Iterable[Any] = ((x_tr[perm[i:i + batch_size]], y_tr[perm[i:i + batch_size]])
                                      for i in range(0, len(perm), batch_size))
        else:
            batches = iter(train_loader)
        for b, batch in enumerate(batches):
            if max_batches_per_epoch is not None and b >= max_batches_per_epoch:
                break
            x, y = unpack_batch(batch)
            x, y = x.to(device).float(), task.target(_plain(y).to(device))
            if len(x) < 2:   # BatchNorm needs two samples per channel in training mode
                continue
            opt.zero_grad(set_to_none=True)
            loss = crit(model(x), y)
            _check_finite(loss, epoch)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            n += len(x)
        # Precise BN before validating (module doc): with a few batches per epoch the running statistics still
        # hold their initial values and the eval-mode curve would be noise.
        if train_loader is None:
            idx = torch.randperm(len(x_tr), generator=g)[:32 * batch_size]
            recalibrate_bn(model, (x_tr[idx[i:i + batch_size]] for i in range(0, len(idx), batch_size)), device)
        else:
            recalibrate_bn(model, (unpack_batch(batch)[0] for b, batch in enumerate(train_loader) if b < 32),
                           device)
        val = task.evaluate(model, TensorBatches(x_val, y_val, 256), device)
        rec = {"epoch": epoch, "train_loss": total / max(n, 1), **{f"val_{k}": v for k, v in val.items()},
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
    return history

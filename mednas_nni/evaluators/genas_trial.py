"""One GeNAS individual as one NNI trial: train the frozen CNN briefly, report the per-epoch curve and GeNAS-WF.

:func:`genas_trial` is the module-level function the ``genas_wf`` strategy wraps in NNI's ``FunctionalEvaluator``.
It runs in an NNI trial process (local training service) or in the driver process (sequential engine), gets the
frozen :class:`~mednas_nni.search_spaces.genas_cnn.GeNASCNN` and:

1. rebuilds the data set from its plugin name and params (cached per process),
2. re-initialises the weights from ``seed`` (the same seed for every individual: common random numbers) and
   trains ``epochs`` epochs with Adam (cross-entropy; class-weighted when the data set says so, e.g. MHSMA with
   ``imbalance: weighted_loss``; MHSMA's default ``oversample`` is already in its training split),
3. after every epoch evaluates the validation split and reports an NNI *intermediate* result
   ``{'default': val balanced accuracy, 'val_acc', 'val_f05', 'val_auc', 'train_loss', 'epoch'}``,
4. reports the *final* result ``{'default': fitness, 'fitness', last-epoch val metrics, 'best_val_balanced_acc',
   'params', 'seconds', 'history'}`` where the fitness is :data:`~mednas_nni.evaluators.fitness.FITNESS`
   ``[fitness](history, **fitness_params)`` (GeNAS-WF by default).

F0.5 uses **abnormal (label 1) as the positive class** (precision weighted over recall, beta = 0.5).
If training fails, the reason is written to ``<error_dir>/<arch hash>.txt`` (so the strategy can record it) and the
exception is re-raised, so NNI marks the trial FAILED.
"""
from __future__ import annotations

import json
import logging
import math
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mednas_nni.evaluators.classification import recalibrate_bn

__all__ = ["genas_trial", "train_curve", "binary_metrics", "load_data", "materialize"]

_logger = logging.getLogger(__name__)
_DATA_CACHE: dict[str, Any] = {}


def binary_metrics(y_true: np.ndarray, p_abnormal: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, F0.5 (positive = abnormal = 1) and ROC-AUC of binary predictions."""
    from sklearn.metrics import balanced_accuracy_score, fbeta_score, roc_auc_score

    y = np.asarray(y_true).reshape(-1).astype(int)
    p = np.asarray(p_abnormal, dtype=np.float64).reshape(-1)
    pred = (p >= threshold).astype(int)
    out = {"acc": float((pred == y).mean()),
           "balanced_acc": float(balanced_accuracy_score(y, pred)) if len(np.unique(y)) > 1 else float((pred == y).mean()),
           "f05": float(fbeta_score(y, pred, beta=0.5, pos_label=1, zero_division=0)),
           "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) > 1 else 0.5}
    return out


def load_data(data: dict[str, Any]) -> Any:
    """The data set plugin ``data = {'name': ..., 'params': {...}}``, built once per process."""
    from mednas_nni.registry import get_plugin

    key = json.dumps(data, sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        cls = get_plugin("datasets", data["name"])
        _DATA_CACHE[key] = {"plugin": cls(**data.get("params", {}))}
    return _DATA_CACHE[key]


def materialize(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All items of a (deterministic) data set as ``(x (N, C, H, W) float, y (N,) long)`` tensors."""
    loader = torch.utils.data.DataLoader(ds, batch_size=256, shuffle=False)
    xs, ys = [], []
    for x, y in loader:
        xs.append(torch.as_tensor(x).float())
        ys.append(torch.as_tensor(y).reshape(-1).long())
    return torch.cat(xs), torch.cat(ys)


def _tensors(entry: dict[str, Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if split not in entry:
        entry[split] = materialize(entry["plugin"].dataset(split, augment=False))
    return entry[split]


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device: str, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(x[i:i + batch_size].to(device)), 1)[:, 1].cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def _reset_parameters(model: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()


def train_curve(model: nn.Module, data: dict[str, Any], *, epochs: int, batch_size: int = 64, lr: float = 1e-3,
                weight_decay: float = 0.0, seed: int = 0, device: str = "cpu", augment: bool = False,
                max_batches_per_epoch: int | None = None, on_epoch: Any = None) -> list[dict[str, float]]:
    """Train ``model`` and return its per-epoch history (``train_loss`` and ``val_*`` metrics per epoch)."""
    entry = load_data(data)
    plugin = entry["plugin"]
    x_val, y_val = _tensors(entry, "val")
    if augment:
        train_loader = torch.utils.data.DataLoader(plugin.dataset("train", augment=True), batch_size=batch_size,
                                                   shuffle=True, generator=torch.Generator().manual_seed(seed))
    else:
        x_tr, y_tr = _tensors(entry, "train")
        train_loader = None
    weights = plugin.loss_weights() if hasattr(plugin, "loss_weights") else None
    crit = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    _reset_parameters(model, seed)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        if train_loader is None:
            perm = torch.randperm(len(x_tr), generator=g)
            batches = ((x_tr[perm[i:i + batch_size]], y_tr[perm[i:i + batch_size]])
                       for i in range(0, len(perm), batch_size))
        else:
            batches = iter(train_loader)
        for b, (x, y) in enumerate(batches):
            if max_batches_per_epoch is not None and b >= max_batches_per_epoch:
                break
            x, y = x.to(device).float(), torch.as_tensor(y).reshape(-1).long().to(device)
            if len(x) < 2:   # BatchNorm needs two samples per channel in training mode
                continue
            opt.zero_grad(set_to_none=True)
            loss = crit(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}")
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            n += len(x)
        # Precise BN before validating (see mednas_nni.evaluators.classification): with a few batches per epoch
        # the running statistics still hold their initial values and the eval-mode curve would be noise.
        if train_loader is None:
            idx = torch.randperm(len(x_tr), generator=g)[:32 * batch_size]
            recalibrate_bn(model, (x_tr[idx[i:i + batch_size]] for i in range(0, len(idx), batch_size)), device)
        else:
            recalibrate_bn(model, (x for b, (x, _) in enumerate(train_loader) if b < 32), device)
        val = binary_metrics(y_val.numpy(), _predict(model, x_val, device))
        rec = {"epoch": epoch, "train_loss": total / max(n, 1), **{f"val_{k}": v for k, v in val.items()},
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
    return history


def _resolve_device(device: str) -> str:
    if device in ("auto", "cuda") or device.startswith("cuda"):
        return device if device != "auto" and torch.cuda.is_available() else \
            ("cuda" if torch.cuda.is_available() else "cpu")
    return device


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    # NNI stores metrics as JSON: NaN/inf are not valid there.
    return {k: v for k, v in d.items() if not (isinstance(v, float) and not math.isfinite(v))}


def genas_trial(model: nn.Module, *, data: dict[str, Any], epochs: int, fitness: str = "genas_wf",
                fitness_params: dict[str, Any] | None = None, batch_size: int = 64, lr: float = 1e-3,
                weight_decay: float = 0.0, seed: int = 0, device: str = "auto", augment: bool = False,
                max_batches_per_epoch: int | None = None, error_dir: str | None = None,
                torch_threads: int | None = None) -> dict[str, Any]:
    """NNI evaluator function of one GeNAS individual (see the module doc). Returns the final dict it reported."""
    import nni

    from mednas_nni.evaluators.fitness import get_fitness

    t0 = time.perf_counter()
    arch = getattr(model, "arch", None)
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    try:
        score = get_fitness(fitness, fitness_params)

        def on_epoch(rec: dict[str, float]) -> None:
            nni.report_intermediate_result(_finite({
                "default": rec["val_balanced_acc"], "val_acc": rec["val_acc"], "val_f05": rec["val_f05"],
                "val_auc": rec["val_auc"], "train_loss": rec["train_loss"], "epoch": rec["epoch"]}))

        history = train_curve(model, data, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                              seed=seed, device=_resolve_device(device), augment=augment,
                              max_batches_per_epoch=max_batches_per_epoch, on_epoch=on_epoch)
        fit = score(history)
        last = history[-1]
        final = {"default": fit, "fitness": fit,
                 **{k: last[k] for k in ("val_balanced_acc", "val_acc", "val_f05", "val_auc")},
                 "best_val_balanced_acc": max(h["val_balanced_acc"] for h in history),
                 "params": int(sum(p.numel() for p in model.parameters())),
                 "seconds": time.perf_counter() - t0, "history": history}
    except Exception as e:
        if error_dir and arch is not None:
            from mednas_nni.io import atomic_write_text
            from mednas_nni.strategies._utils import arch_hash

            atomic_write_text(Path(error_dir) / f"{arch_hash(arch)}.txt",
                              f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        raise
    nni.report_final_result(_finite(final))
    return final

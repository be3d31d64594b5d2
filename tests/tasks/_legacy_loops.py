"""Verbatim copies of the two training loops of commit e4255b2 (before Core v2, unchanged until ab02c44), for the equivalence tests.

``train_classifier`` is ``mednas_nni/evaluators/classification.py`` and ``train_curve`` is
``mednas_nni/evaluators/genas_trial.py`` of that commit; the only edit is that ``train_curve`` takes the data-set
plugin itself instead of a ``{'name', 'params'}`` dict (``load_data`` looked it up in the registry). They read
``(x, y)`` tuple samples, as every data set did then. Do not "improve" this file: it is the reference.
"""
# ruff: noqa
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["train_classifier", "evaluate_classifier", "predict_scores", "classification_metrics",
           "majority_baseline", "recalibrate_bn"]

_logger = logging.getLogger(__name__)


def _is_multilabel(task: str) -> bool:
    return task.startswith("multi-label")


def _loss_fn(task: str) -> nn.Module:
    return nn.BCEWithLogitsLoss() if _is_multilabel(task) else nn.CrossEntropyLoss()


def _targets(y: torch.Tensor, task: str) -> torch.Tensor:
    return y.float() if _is_multilabel(task) else y.view(-1).long()


@torch.no_grad()
def predict_scores(model: nn.Module, loader: DataLoader, task: str, device: str = "cpu",
                   max_batches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true (N, k), y_score (N, K))``: sigmoid for multi-label, softmax otherwise (MedMNIST convention)."""
    model.eval()
    ys, ss = [], []
    for b, (x, y) in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        out = model(x.to(device).float())
        ss.append((torch.sigmoid(out) if _is_multilabel(task) else torch.softmax(out, 1)).cpu().numpy())
        ys.append(y.cpu().numpy())
    return np.concatenate(ys), np.concatenate(ss)


def classification_metrics(y_true: np.ndarray, y_score: np.ndarray, task: str) -> dict[str, float]:
    """MedMNIST ACC and AUC (official ``medmnist.evaluator`` definitions) plus balanced accuracy, and for
    binary tasks F0.5 with label 1 as the positive class (MHSMA: abnormal)."""
    from medmnist.evaluator import getACC, getAUC
    from sklearn.metrics import balanced_accuracy_score, fbeta_score

    out = {"acc": float(getACC(y_true, y_score, task)), "auc": float(getAUC(y_true, y_score, task))}
    if not _is_multilabel(task):
        pred = y_score.argmax(1)
        out["balanced_acc"] = float(balanced_accuracy_score(y_true.reshape(-1), pred))
        if task == "binary-class":
            out["f05"] = float(fbeta_score(y_true.reshape(-1), pred, beta=0.5, pos_label=1, zero_division=0.0))
    return out


def evaluate_classifier(model: nn.Module, loader: DataLoader, task: str, device: str = "cpu",
                        max_batches: int | None = None) -> dict[str, float]:
    return classification_metrics(*predict_scores(model, loader, task, device, max_batches), task)


def majority_baseline(y_train: np.ndarray, y_eval: np.ndarray, task: str) -> dict[str, float]:
    """Always predicting the training set's majority class (AUC of a constant score is 0.5)."""
    if _is_multilabel(task):
        maj = (y_train.mean(0) >= 0.5).astype(float)
        acc = float((y_eval == maj).mean())
        return {"acc": acc, "auc": 0.5}
    classes = int(max(y_train.max(), y_eval.max())) + 1
    maj = int(np.bincount(y_train.reshape(-1), minlength=classes).argmax())
    return {"acc": float((y_eval.reshape(-1) == maj).mean()), "auc": 0.5, "balanced_acc": 1.0 / classes,
            "majority_class": maj}


def recalibrate_bn(model: nn.Module, inputs: Iterable[torch.Tensor], device: str = "cpu") -> None:
    """Recompute BatchNorm running statistics as the plain average over ``inputs`` (training batches).

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
    recalibrate_bn(model, (x for b, (x, _) in enumerate(loader) if max_batches is None or b < max_batches), device)


def train_classifier(model: nn.Module, train_set: Any, val_set: Any, task: str, *, epochs: int, batch_size: int,
                     lr: float, weight_decay: float = 0.0, milestones: tuple[float, ...] = (0.5, 0.75),
                     gamma: float = 0.1, select_by: str = "val_auc", device: str = "cpu", seed: int = 0,
                     num_workers: int = 0, max_batches_per_epoch: int | None = None,
                     on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                     progress: bool = False, desc: str = "train", bn_batches: int | None = 32) -> dict[str, Any]:
    """Train with the MedMNIST v2 recipe; return the history, the best epoch's state and its val metrics.

    ``on_epoch(epoch, metrics)`` is called after every epoch (used to report NNI intermediate results).
    """
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=g, num_workers=num_workers)
    val_loader = DataLoader(val_set, batch_size=max(batch_size, 256), shuffle=False, num_workers=num_workers)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=sorted({max(1, int(round(m * epochs))) for m in milestones}), gamma=gamma)
    crit = _loss_fn(task)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"score": -np.inf}
    key = select_by.removeprefix("val_")
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        for b, (x, y) in enumerate(train_loader):
            if max_batches_per_epoch is not None and b >= max_batches_per_epoch:
                break
            x, y = x.to(device).float(), _targets(y.to(device), task)
            opt.zero_grad(set_to_none=True)
            loss = crit(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}")
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            n += len(x)
        sched.step()
        _recalibrate_bn(model, train_set, batch_size, device, bn_batches, seed + epoch)
        val = evaluate_classifier(model, val_loader, task, device, max_batches_per_epoch)
        rec = {"epoch": epoch + 1, "train_loss": total / max(n, 1), **{f"val_{k}": v for k, v in val.items()},
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        if val[key] > best["score"]:
            best = {"score": val[key], "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict()),
                    "val": val}
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val_auc=f"{val['auc']:.3f}", val_acc=f"{val['acc']:.3f}")
        if on_epoch is not None:
            on_epoch(epoch + 1, rec)
    bar.close()
    model.load_state_dict(best["state"])
    return {"history": history, "best_epoch": best["epoch"], "best_state": best["state"], "val": best["val"]}

# ---------------------------------------------------------------- genas_trial.py (e4255b2)
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


def train_curve(model: nn.Module, plugin: Any, *, epochs: int, batch_size: int = 64, lr: float = 1e-3,
                weight_decay: float = 0.0, seed: int = 0, device: str = "cpu", augment: bool = False,
                max_batches_per_epoch: int | None = None, on_epoch: Any = None) -> list[dict[str, float]]:
    """Train ``model`` and return its per-epoch history (``train_loss`` and ``val_*`` metrics per epoch)."""
    entry = {"plugin": plugin}   # edit: was load_data(data)
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



"""The ``classification`` task: MedMNIST-style image classification (binary, multi-class, ordinal, multi-label).

* **Loss.** Cross-entropy (class-weighted when the data set's :meth:`loss_weights` says so, e.g. MHSMA with
  ``imbalance: weighted_loss``); BCE-with-logits for multi-label tasks (Yang et al., MedMNIST v2,
  *Scientific Data* 10:41, 2023, doi:10.1038/s41597-022-01721-8, ``train_and_eval_pytorch.py``).
* **Metrics.** ``acc`` and ``auc`` are the official ``medmnist.evaluator.getACC`` / ``getAUC`` on softmax scores
  (sigmoid for multi-label), ``balanced_acc`` is scikit-learn's (argmax), and for binary tasks ``f05`` is
  scikit-learn's F0.5 of **label 1** (kept as it was: the golden results pin it; for BreastMNIST label 1 is
  *benign*) and ``fbeta_positive`` the F-beta (``params.fbeta``, default 0.5) of the **positive class**
  (``params.positive_class``, else the data set's: BreastMNIST malignant, MHSMA abnormal). For binary data these
  equal the GeNAS trial's former ``binary_metrics`` except for scores of exactly 0.5 (``getACC`` thresholds
  with ``>``).
* **Clinical metrics of the winner** (:meth:`ClassificationTask.detailed_metrics`, :mod:`.metrics_clinical`):
  confusion matrix, per-class sensitivity/specificity/PPV/NPV/F1, an operating threshold chosen on validation data
  (Youden's J or a minimum sensitivity) applied to the test split, bootstrap 95 % CIs and calibration, plus
  ``calibration.png``.
* **Selection.** ``val_auc`` by default (MedMNIST v2); any ``val_<metric>`` the task reports.
* **Baseline.** The training set's majority class (AUC of a constant score is 0.5).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from pydantic import Field, model_validator

from ..contracts import PluginParams, Task
from .training import recalibrate_bn, unpack_batch

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.data import DataLoader

    from ..contracts import DatasetInfo, DatasetPlugin

__all__ = ["ClassificationTask", "ClassificationParams", "predict_scores", "classification_metrics", "majority_baseline",
           "recalibrate_bn",
           "is_multilabel"]

_logger = logging.getLogger(__name__)


def is_multilabel(task_type: str) -> bool:
    """Whether a MedMNIST task type (``multi-label, binary-class``) scores every label independently."""
    return task_type.startswith("multi-label")


@torch.no_grad()
def predict_scores(model: nn.Module, loader: Any, task: str, device: str = "cpu",
                   max_batches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true (N, k), y_score (N, K))`` over a loader of dict batches: sigmoid scores for multi-label ``task``
    types, softmax otherwise (MedMNIST convention). The model is put in eval mode."""
    model.eval()
    ys, ss = [], []
    for b, batch in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        x, y = unpack_batch(batch)
        out = model(x.to(device).float())
        ss.append((torch.sigmoid(out) if is_multilabel(task) else torch.softmax(out, 1)).cpu().numpy())
        ys.append(torch.as_tensor(y).cpu().numpy())
    return np.concatenate(ys), np.concatenate(ss)


def _auc(y_true: np.ndarray, y_score: np.ndarray, task: str) -> float:
    # A class missing from y_true (tiny or cut-short splits) leaves ROC-AUC undefined: scikit-learn warns and
    # returns NaN (older versions raise). Report 0.5, the AUC of a constant score, as the GeNAS trial always did,
    # so that metrics stay valid JSON and selection stays well defined.
    import warnings

    from medmnist.evaluator import getAUC

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auc = float(getAUC(y_true, y_score, task))
    except ValueError as e:
        _logger.debug("AUC undefined (%s); reporting 0.5", e)
        return 0.5
    return auc if np.isfinite(auc) else 0.5


def classification_metrics(y_true: np.ndarray, y_score: np.ndarray, task: str, positive: int | None = None,
                           beta: float = 0.5) -> dict[str, float]:
    """MedMNIST ACC and AUC (official ``medmnist.evaluator`` definitions) plus balanced accuracy, and for
    binary tasks F0.5 with label 1 as the positive class (``f05``) and, when ``positive`` is given, the F-beta of
    that class (``fbeta_positive``, argmax decisions).

    Args:
        y_true: labels ``(N, k)`` or ``(N,)``.
        y_score: softmax (sigmoid for multi-label) scores ``(N, K)``.
        task: the MedMNIST task type (``binary-class``, ``multi-class``, ``ordinal-regression``,
            ``multi-label, binary-class``).

    Returns:
        ``{"acc", "auc"}`` plus ``"balanced_acc"`` (not multi-label) and ``"f05"`` / ``"fbeta_positive"`` (binary
        only). An AUC that is
        undefined because ``y_true`` lacks a class is reported as 0.5 (the score of a constant predictor).
    """
    from medmnist.evaluator import getACC
    from sklearn.metrics import balanced_accuracy_score, fbeta_score

    out = {"acc": float(getACC(y_true, y_score, task)), "auc": _auc(y_true, y_score, task)}
    if not is_multilabel(task):
        pred = y_score.argmax(1)
        out["balanced_acc"] = float(balanced_accuracy_score(y_true.reshape(-1), pred))
        if task == "binary-class":
            out["f05"] = float(fbeta_score(y_true.reshape(-1), pred, beta=0.5, pos_label=1, zero_division=0.0))
            if positive is not None:
                out["fbeta_positive"] = float(fbeta_score(y_true.reshape(-1), pred, beta=beta, pos_label=positive,
                                                          zero_division=0.0))
    return out


def majority_baseline(y_train: np.ndarray, y_eval: np.ndarray, task: str) -> dict[str, float]:
    """Always predicting the training set's majority class (AUC of a constant score is 0.5)."""
    if is_multilabel(task):
        maj = (y_train.mean(0) >= 0.5).astype(float)
        acc = float((y_eval == maj).mean())
        return {"acc": acc, "auc": 0.5}
    classes = int(max(y_train.max(), y_eval.max())) + 1
    maj = int(np.bincount(y_train.reshape(-1), minlength=classes).argmax())
    return {"acc": float((y_eval.reshape(-1) == maj).mean()), "auc": 0.5, "balanced_acc": 1.0 / classes,
            "majority_class": maj}


def _names(names: list[str], limit: int = 8) -> str:
    shown = [str(n) for n in names[:limit]]
    return ", ".join(shown) + (", ..." if len(names) > limit else "")


class ClassificationParams(PluginParams):
    """Config ``task.params`` of the ``classification`` task (clinical metrics of the winner; see the module doc)."""

    positive_class: int | str | None = Field(
        None, description="Binary tasks: the positive class, an index or a label name (default: the data set's, "
                          "e.g. BreastMNIST 'malignant', MHSMA 'abnormal'; else label 1).")
    fbeta: float = Field(0.5, gt=0, description="beta of fbeta_positive (0.5 weighs precision over recall).")
    threshold_rule: Literal["youden", "min_sensitivity"] | None = Field(
        None, description="How the operating threshold is chosen on validation data: 'youden' (default) or "
                          "'min_sensitivity' (default when min_sensitivity is set).")
    min_sensitivity: float | None = Field(None, gt=0, le=1, description="Sensitivity the threshold must reach on "
                                                                         "validation data (rule min_sensitivity).")
    ci_n_boot: int = Field(1000, ge=0, le=100_000, description="Bootstrap resamples of the 95 % CIs (0: none).")
    calibration_bins: int = Field(10, ge=2, le=100, description="Equal-width bins of the ECE and calibration.png.")

    @model_validator(mode="after")
    def _rule_needs_sensitivity(self) -> ClassificationParams:
        if self.threshold_rule == "min_sensitivity" and self.min_sensitivity is None:
            raise ValueError("threshold_rule 'min_sensitivity' needs min_sensitivity (e.g. 0.9)")
        if self.threshold_rule == "youden" and self.min_sensitivity is not None:
            raise ValueError("min_sensitivity is set but threshold_rule is 'youden'; drop one of them")
        return self

    @property
    def rule(self) -> str:
        return self.threshold_rule or ("min_sensitivity" if self.min_sensitivity is not None else "youden")


class ClassificationTask(Task):
    """Image classification in the MedMNIST vocabulary (``info.task_type``); see the module doc.

    :attr:`metric_names` depends on the task type: ``acc``, ``auc``, ``balanced_acc``, ``f05``, ``fbeta_positive``
    for binary data; no F-scores for multi-class/ordinal data; ``acc``, ``auc`` for multi-label data.
    """

    name = "classification"
    Params = ClassificationParams
    metric_names = ("acc", "auc", "balanced_acc", "f05", "fbeta_positive")
    default_select_by = "val_auc"

    def __init__(self, info: DatasetInfo, **params: Any):
        from .metrics_clinical import resolve_positive_class

        super().__init__(info, **params)
        self.task_type = str(info.task_type)
        self.positive: dict[str, Any] | None = None
        if is_multilabel(self.task_type):
            self.metric_names = ("acc", "auc")
        elif self.task_type != "binary-class":
            self.metric_names = ("acc", "auc", "balanced_acc")
        else:
            self.positive = resolve_positive_class(self.params.positive_class, getattr(info, "positive_class", None),
                                                   info.label_names)

    @property
    def _pos_index(self) -> int | None:
        return None if self.positive is None else int(self.positive["index"])

    # ------------------------------------------------------------------ the pieces
    def loss(self, dataset: DatasetPlugin | None = None) -> nn.Module:
        """``CrossEntropyLoss`` (weighted by ``dataset.loss_weights()`` when not None); ``BCEWithLogitsLoss`` for
        multi-label data."""
        if is_multilabel(self.task_type):
            return nn.BCEWithLogitsLoss()
        weights = dataset.loss_weights() if dataset is not None else None
        return nn.CrossEntropyLoss(weight=None if weights is None else torch.as_tensor(weights, dtype=torch.float32))

    def target(self, label: torch.Tensor) -> torch.Tensor:
        """Class indices ``(B,)`` long (multi-label: the ``(B, k)`` 0/1 labels as float)."""
        return label.float() if is_multilabel(self.task_type) else label.view(-1).long()

    def evaluate(self, model: nn.Module, loader: DataLoader, device: str = "cpu",
                 max_batches: int | None = None) -> dict[str, float]:
        """:func:`classification_metrics` of :func:`predict_scores` (at most ``max_batches`` batches)."""
        return classification_metrics(*predict_scores(model, loader, self.task_type, device, max_batches),
                                      self.task_type, self._pos_index, self.params.fbeta)

    def baseline(self, dataset: DatasetPlugin, split: str = "test") -> dict[str, Any]:
        """:func:`majority_baseline` from the training labels, on ``split`` (plus ``f05`` for binary data)."""
        y_train, y_eval = dataset.arrays("train")[1], dataset.arrays(split)[1]
        out: dict[str, Any] = majority_baseline(y_train, y_eval, self.task_type)
        if self.task_type == "binary-class":
            from sklearn.metrics import fbeta_score

            pred = np.full(y_eval.size, out["majority_class"])
            out["f05"] = float(fbeta_score(y_eval.reshape(-1), pred, beta=0.5, pos_label=1, zero_division=0.0))
            out["fbeta_positive"] = float(fbeta_score(y_eval.reshape(-1), pred, beta=self.params.fbeta,
                                                      pos_label=self._pos_index, zero_division=0.0))
        return out

    # ------------------------------------------------------------------ the winner's clinical metrics
    def _split_scores(self, model: nn.Module, dataset: DatasetPlugin, split: str,
                      device: str) -> tuple[np.ndarray, np.ndarray]:
        from torch.utils.data import DataLoader

        return predict_scores(model, DataLoader(dataset.dataset(split), batch_size=256), self.task_type, device)

    def detailed_metrics(self, model: nn.Module, dataset: DatasetPlugin, device: str = "cpu",
                         seed: int = 0) -> dict[str, Any]:
        """:func:`~.metrics_clinical.clinical_metrics` of ``model`` on the val and test splits: the operating
        threshold (binary: chosen on val by ``params.threshold_rule``), confusion matrices, per-class rates, CIs
        (``params.ci_n_boot`` resamples, seeded by ``seed``) and calibration."""
        from .metrics_clinical import clinical_metrics, fast_classification_metrics

        p = self.params

        def metric_fn(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
            return fast_classification_metrics(y, s, self.task_type, self._pos_index, p.fbeta)

        return clinical_metrics(
            self._split_scores(model, dataset, "val", device), self._split_scores(model, dataset, "test", device),
            label_names=[str(n) for n in self.info.label_names], metric_fn=metric_fn,
            multilabel=is_multilabel(self.task_type), positive=self.positive, rule=p.rule,
            min_sensitivity=p.min_sensitivity, beta=p.fbeta, n_boot=p.ci_n_boot, seed=seed,
            n_bins=p.calibration_bins)

    @torch.no_grad()
    def write_figures(self, model: nn.Module, dataset: DatasetPlugin, run_dir: Any, device: str = "cpu") -> list[Any]:
        """``run_dir/calibration.png``: reliability diagram (val and test) and the test scores per true class with
        the operating threshold (:mod:`.calibration_plot`). Multi-label data: none."""
        from pathlib import Path

        from .calibration_plot import CALIBRATION_FILE, write_calibration_png
        from .metrics_clinical import operating_threshold

        if is_multilabel(self.task_type):
            return []
        splits = {s: self._split_scores(model, dataset, s, device) for s in ("val", "test")}
        pos, threshold = self._pos_index, None
        if pos is not None:
            y_val, s_val = splits["val"]
            threshold = operating_threshold(y_val.reshape(-1) == pos, s_val[:, pos], self.params.rule,
                                            self.params.min_sensitivity)
        folder = Path(getattr(run_dir, "path", run_dir))    # a RunDir (what experiment.py passes) or a path
        return [write_calibration_png(folder / CALIBRATION_FILE, splits, self.info.label_names, pos, threshold,
                                      self.params.calibration_bins, title=f"{self.info.name}: calibration")]

    def output_spec(self) -> dict[str, Any]:
        """Class scores: softmax + argmax, or sigmoid + a 0.5 threshold per label for multi-label data."""
        multilabel = is_multilabel(self.task_type)
        return {"name": "logits", "kind": "class scores", "activation": "sigmoid" if multilabel else "softmax",
                "decision": "threshold each label" if multilabel else "argmax", "threshold": 0.5,
                "num_classes": int(self.info.num_classes), "label_names": [str(n) for n in self.info.label_names]}

    def card_sentence(self) -> str:
        s, c = self.info.image_size, self.info.in_channels
        colour = "gray" if c == 1 else "RGB" if c == 3 else f"{c}-channel"
        names, k = list(self.info.label_names), int(self.info.num_classes)
        if is_multilabel(self.task_type):
            return (f"It scores a {s}x{s} {colour} image for each of {k} labels ({_names(names)}) independently "
                    f"(sigmoid, threshold 0.5).")
        return f"It classifies a {s}x{s} {colour} image into one of {k} classes ({_names(names)})."

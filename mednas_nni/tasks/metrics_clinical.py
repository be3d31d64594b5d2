"""Clinical-grade classification metrics: confusion matrix, per-class sensitivity / specificity / PPV / NPV / F1,
the positive class's F-beta, an operating threshold chosen on validation data, bootstrap 95 % confidence intervals
and calibration (Brier score, expected calibration error).

Definitions (all from scikit-learn / torchmetrics; only the bootstrap loop is hand-written, see below):

* **Positive class.** Binary tasks name one class as positive (``task.params.positive_class``, else the data set's
  ``DatasetInfo.positive_class``, else label 1): BreastMNIST *malignant* (label 0), PneumoniaMNIST *pneumonia*,
  MHSMA *abnormal*. ``p`` below is the softmax probability of that class.
* **Operating threshold.** Chosen on the validation split and applied unchanged to the test split (and, through
  ``metrics.json`` ``operating_point``, to the exported bundle): a case is called positive when ``p >= threshold``.
  Rule ``youden`` (default): the ROC threshold maximising Youden's J = sensitivity + specificity - 1 (Youden,
  *Cancer* 3:32, 1950); rule ``min_sensitivity``: the highest ROC threshold whose validation sensitivity is at
  least ``min_sensitivity`` (so specificity is as high as that sensitivity allows). Thresholds are the points of
  ``sklearn.metrics.roc_curve``.
* **Confusion matrix / per class.** ``sklearn.metrics.confusion_matrix`` (rows = true class, columns = predicted)
  and ``multilabel_confusion_matrix`` (one-vs-rest counts): sensitivity = TP/(TP+FN), specificity = TN/(TN+FP),
  PPV = TP/(TP+FP), NPV = TN/(TN+FN), F1; an undefined ratio (0/0) is reported as ``None``. Binary tasks: at the
  operating threshold; multi-class: argmax; multi-label: each label at 0.5.
* **Calibration.** Binary: Brier score of ``p`` (``brier_score_loss``) and ECE over ``n_bins`` equal-width bins of
  ``p`` (torchmetrics ``binary_calibration_error``, L1); multi-class: the multi-class Brier score (sum over classes,
  range 0..2) and the top-label ECE (``multiclass_calibration_error``). The reliability diagram is drawn by
  :mod:`mednas_nni.tasks.calibration_plot`.
* **Confidence intervals.** Percentile bootstrap, ``n_boot`` resamples (seeded), **stratified by true class**: every
  resample keeps the split's class counts, as pROC does by default for AUC (Robin et al., *BMC Bioinformatics*
  12:77, 2011). Hand-written because ``scipy.stats.bootstrap`` cannot stratify, and an unstratified resample of a
  small test split can lack a class, where AUC is undefined.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["clinical_metrics", "split_details", "fast_classification_metrics", "resolve_positive_class",
           "operating_threshold", "confusion_summary", "calibration_summary",
           "bootstrap_ci", "fbeta_positive", "positive_rates", "CI_LEVEL"]

_logger = logging.getLogger(__name__)

CI_LEVEL = 0.95


def resolve_positive_class(requested: int | str | None, default: int | None, label_names: Sequence[str],
                           where: str = "task.params.positive_class") -> dict[str, Any]:
    """``{"index", "name"}`` of the positive class: ``requested`` (an index or a label name), else ``default``
    (the data set's), else label 1. A name or index that is not a class is a one-line ``ConfigError``."""
    from ..errors import ConfigError, did_you_mean

    # a binary task built without label names (e.g. the train_classifier shim) names its classes by index
    names = [str(n) for n in label_names] or ["0", "1"]
    if requested is None:
        idx = 1 if default is None else int(default)
    elif isinstance(requested, str) and not requested.strip().lstrip("-").isdigit():
        if requested not in names:
            raise ConfigError(f"{where}: expected a class index 0..{len(names) - 1} or one of {names}"
                              f"{did_you_mean(requested, names)}, got {requested!r}")
        idx = names.index(requested)
    else:
        idx = int(requested)
    if not 0 <= idx < len(names):
        raise ConfigError(f"{where}: expected a class index 0..{len(names) - 1} ({', '.join(names)}), got {idx}")
    return {"index": idx, "name": names[idx]}


def operating_threshold(y_pos: np.ndarray, p: np.ndarray, rule: str = "youden",
                        min_sensitivity: float | None = None) -> float:
    """The threshold on the positive-class probability ``p`` chosen by ``rule`` (module doc) for 0/1 truth
    ``y_pos``. With a single class in ``y_pos`` (no ROC curve) it is 0.5."""
    from sklearn.metrics import roc_curve

    y_pos = np.asarray(y_pos).astype(int).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if y_pos.min(initial=0) == y_pos.max(initial=0):
        _logger.warning("operating threshold: the validation split has one class only; using 0.5")
        return 0.5
    fpr, tpr, thr = roc_curve(y_pos, p, drop_intermediate=False)
    finite = np.isfinite(thr)           # the first ROC point has threshold +inf (nothing called positive)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    if rule == "youden":
        i = int(np.argmax(tpr - fpr))   # first maximum = the highest threshold among ties
    elif rule == "min_sensitivity":
        if min_sensitivity is None:
            raise ValueError("operating threshold: rule 'min_sensitivity' needs min_sensitivity")
        ok = np.flatnonzero(tpr >= float(min_sensitivity) - 1e-12)
        i = int(ok[0]) if len(ok) else len(thr) - 1
    else:
        raise ValueError(f"operating threshold: expected rule 'youden' or 'min_sensitivity', got {rule!r}")
    return float(min(thr[i], 1.0))


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def confusion_summary(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str],
                      multilabel: bool = False) -> tuple[list[list[int]] | None, dict[str, dict[str, Any]]]:
    """``(confusion_matrix, per_class)``: the matrix (rows = true, columns = predicted; ``None`` for multi-label)
    and ``{name: {"sensitivity", "specificity", "ppv", "npv", "f1", "support"}}`` one-vs-rest."""
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

    names = [str(n) for n in label_names]
    k = len(names)
    if multilabel:
        cm = None
        mcm = multilabel_confusion_matrix(np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int))
    else:
        yt, yp = np.asarray(y_true).reshape(-1).astype(int), np.asarray(y_pred).reshape(-1).astype(int)
        cm = confusion_matrix(yt, yp, labels=list(range(k))).tolist()
        mcm = multilabel_confusion_matrix(yt, yp, labels=list(range(k)))
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        (tn, fp), (fn, tp) = mcm[c].tolist()
        f1_den = 2 * tp + fp + fn
        per_class[name] = {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
                           "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
                           "f1": _ratio(2 * tp, f1_den), "support": int(tp + fn)}
    return cm, per_class


def fbeta_positive(y_true: np.ndarray, y_pred: np.ndarray, positive: int, beta: float) -> float:
    """scikit-learn's F-beta of class ``positive`` (0 when it is never predicted and never true)."""
    from sklearn.metrics import fbeta_score

    return float(fbeta_score(np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1), beta=beta,
                             pos_label=positive, average="binary", zero_division=0.0))


def positive_rates(y_pos: np.ndarray, called: np.ndarray) -> dict[str, float]:
    """Sensitivity and specificity of 0/1 calls ``called`` against 0/1 truth ``y_pos`` (NaN when undefined)."""
    y_pos, called = np.asarray(y_pos).astype(bool), np.asarray(called).astype(bool)
    pos, neg = y_pos.sum(), (~y_pos).sum()
    return {"sensitivity": float((called & y_pos).sum() / pos) if pos else float("nan"),
            "specificity": float((~called & ~y_pos).sum() / neg) if neg else float("nan")}


def calibration_summary(y_true: np.ndarray, y_score: np.ndarray, positive: int | None,
                        n_bins: int = 10) -> dict[str, Any]:
    """``{"brier", "ece", "n_bins", "of"}`` (module doc); ``positive`` is None for multi-class data."""
    import torch
    from sklearn.metrics import brier_score_loss
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    y = np.asarray(y_true).reshape(-1).astype(int)
    s = np.asarray(y_score, dtype=np.float64)
    if positive is not None:
        p = s[:, positive]
        y_pos = (y == positive).astype(int)
        brier = float(brier_score_loss(y_pos, p, pos_label=1))
        ece = float(binary_calibration_error(torch.as_tensor(np.ascontiguousarray(p)), torch.as_tensor(y_pos),
                                             n_bins=n_bins, norm="l1"))
        of = "positive-class probability"
    else:
        k = s.shape[1]
        brier = float(brier_score_loss(y, s, labels=list(range(k))))
        ece = float(multiclass_calibration_error(torch.as_tensor(s), torch.as_tensor(y), num_classes=k,
                                                 n_bins=n_bins, norm="l1"))
        of = "top-label confidence"
    return {"brier": brier, "ece": ece, "n_bins": int(n_bins), "of": of}


def _auc_ranks(hit: np.ndarray, score: np.ndarray) -> float:
    # Mann-Whitney form of ROC-AUC with average ranks for ties: equal to sklearn's roc_auc_score (tested).
    from scipy.stats import rankdata

    n_pos = int(hit.sum())
    n_neg = len(hit) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    r = rankdata(score)
    return float((r[hit].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fast_classification_metrics(y_true: np.ndarray, y_score: np.ndarray, task: str, positive: int | None = None,
                                beta: float = 0.5) -> dict[str, float]:
    """The metrics of :func:`~mednas_nni.tasks.classification.classification_metrics` (``medmnist.evaluator``
    ACC/AUC, balanced accuracy, ``f05``, ``fbeta_positive``) in plain numpy, for the bootstrap.

    Hand-written because scikit-learn's and medmnist's scorers spend about a millisecond each validating their
    input: 1000 resamples x 2 splits x 5 metrics took about a minute on 2 cores, this takes about a second. The
    values equal the library ones (``tests/tasks/test_metrics_clinical.py``), except that an undefined AUC is
    NaN here (left out of the interval) where the task reports 0.5.
    """
    s = np.asarray(y_score, dtype=np.float64)
    if task.startswith("multi-label"):
        y = np.asarray(y_true).astype(int)
        aucs = [_auc_ranks(y[:, i] == 1, s[:, i]) for i in range(y.shape[1])]
        return {"acc": float(((s > 0.5) == y).mean()), "auc": float(np.mean(aucs))}
    y = np.asarray(y_true).reshape(-1).astype(int)
    k = s.shape[1]
    if task == "binary-class":
        acc = float(((s[:, -1] > 0.5).astype(int) == y).mean())     # getACC's rule for binary data
        auc = _auc_ranks(y == 1, s[:, -1])
    else:
        acc = float((s.argmax(1) == y).mean())
        auc = float(np.mean([_auc_ranks(y == i, s[:, i]) for i in range(k)]))
    pred = s.argmax(1)
    present = [c for c in range(k) if (y == c).any()]
    out = {"acc": acc, "auc": auc,
           "balanced_acc": float(np.mean([(pred[y == c] == c).mean() for c in present]))}
    if task == "binary-class":
        def fb(pos: int, b: float) -> float:
            tp = float(((pred == pos) & (y == pos)).sum())
            fp = float(((pred == pos) & (y != pos)).sum())
            fn = float(((pred != pos) & (y == pos)).sum())
            den = (1 + b * b) * tp + b * b * fn + fp
            return (1 + b * b) * tp / den if den else 0.0
        out["f05"] = fb(1, 0.5)
        if positive is not None:
            out["fbeta_positive"] = fb(positive, beta)
    return out


def bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]], y_true: np.ndarray,
                 y_score: np.ndarray, *, n_boot: int = 1000, seed: int = 0, strata: np.ndarray | None = None,
                 level: float = CI_LEVEL) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals ``{metric: [lo, hi]}`` of every metric ``metric_fn(y, s)`` returns.

    Resamples rows of ``y_true`` / ``y_score`` (paired) with replacement, within each value of ``strata`` when
    given (module doc). Resamples where a metric is NaN are left out of that metric's interval; a metric NaN in
    every resample gets ``None``.
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    n = len(y_true)
    if n_boot <= 0 or n == 0:
        return {}
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == v) for v in np.unique(strata)]
    values: dict[str, list[float]] = {}
    for _ in range(int(n_boot)):
        idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        for k, v in metric_fn(y_true[idx], y_score[idx]).items():
            values.setdefault(k, []).append(float(v) if v is not None else float("nan"))
    alpha = (1.0 - level) / 2.0
    out: dict[str, list[float] | None] = {}
    for k, vs in values.items():
        arr = np.asarray(vs)
        arr = arr[np.isfinite(arr)]
        out[k] = [float(np.quantile(arr, alpha)), float(np.quantile(arr, 1 - alpha))] if len(arr) else None
    return out


def _decisions(y_score: np.ndarray, positive: int | None, threshold: float | None, multilabel: bool) -> np.ndarray:
    if multilabel:
        return (y_score >= 0.5).astype(int)
    if positive is not None and threshold is not None:
        other = 1 - positive
        return np.where(y_score[:, positive] >= threshold, positive, other)
    return y_score.argmax(1)


def split_details(y_true: np.ndarray, y_score: np.ndarray, *, label_names: Sequence[str],
                  metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]], multilabel: bool = False,
                  positive: int | None = None, threshold: float | None = None, beta: float = 0.5,
                  n_boot: int = 1000, seed: int = 0, n_bins: int = 10) -> dict[str, Any]:
    """The clinical keys of one split (module doc): ``confusion_matrix``, ``per_class``, ``ci95``,
    ``calibration`` and, for binary tasks, ``at_operating_point`` and ``confusion_matrix_argmax``.

    ``metric_fn(y, s)`` is the task's own metric function (its point values are the split's existing keys), so the
    intervals are of exactly those metrics; binary tasks add the positive class's sensitivity/specificity at
    ``threshold`` (``op_sensitivity``, ``op_specificity``, ``op_balanced_acc``).
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    names = [str(n) for n in label_names]
    binary = positive is not None and not multilabel
    pred = _decisions(y_score, positive, threshold, multilabel)
    cm, per_class = confusion_summary(y_true, pred, names, multilabel)
    out: dict[str, Any] = {}
    if cm is not None:
        out["confusion_matrix"] = cm
        out["confusion_matrix_labels"] = names
    out["decision"] = ("each label at 0.5" if multilabel else
                       f"{names[positive]} when P({names[positive]}) >= {threshold:.4f}" if binary else "argmax")
    out["per_class"] = per_class
    if binary:
        y = y_true.reshape(-1).astype(int)
        argmax_cm, _ = confusion_summary(y, y_score.argmax(1), names)
        out["confusion_matrix_argmax"] = argmax_cm
        rates = positive_rates(y == positive, pred == positive)
        out["at_operating_point"] = {
            "threshold": float(threshold), "acc": float((pred == y).mean()),
            "balanced_acc": float(np.nanmean([rates["sensitivity"], rates["specificity"]])),
            "fbeta_positive": fbeta_positive(y, pred, positive, beta), "sensitivity": per_class[names[positive]]
            ["sensitivity"], "specificity": per_class[names[positive]]["specificity"],
            "ppv": per_class[names[positive]]["ppv"], "npv": per_class[names[positive]]["npv"]}

    def boot_fn(yb: np.ndarray, sb: np.ndarray) -> dict[str, float]:
        m = dict(metric_fn(yb, sb))
        if binary:
            yv = yb.reshape(-1).astype(int)
            r = positive_rates(yv == positive, sb[:, positive] >= threshold)
            m.update(op_sensitivity=r["sensitivity"], op_specificity=r["specificity"],
                     op_balanced_acc=(r["sensitivity"] + r["specificity"]) / 2)
        return m

    strata = None if multilabel else y_true.reshape(-1).astype(int)
    out["ci95"] = bootstrap_ci(boot_fn, y_true, y_score, n_boot=n_boot, seed=seed, strata=strata)
    out["ci_n_boot"] = int(n_boot)
    out["ci_method"] = (f"percentile bootstrap, {n_boot} resamples"
                        + ("" if multilabel else ", stratified by true class") + f", seed {seed}")
    if not multilabel:
        out["calibration"] = calibration_summary(y_true, y_score, positive if binary else None, n_bins)
    return out


def clinical_metrics(val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                     label_names: Sequence[str], metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]],
                     multilabel: bool = False, positive: dict[str, Any] | None = None, rule: str = "youden",
                     min_sensitivity: float | None = None, beta: float = 0.5, n_boot: int = 1000, seed: int = 0,
                     n_bins: int = 10) -> dict[str, Any]:
    """``{"positive_class", "operating_point", "val": {...}, "test": {...}}`` for ``metrics.json`` from the
    ``(y_true, y_score)`` of the validation and test splits: the threshold is chosen on ``val`` (binary tasks)
    and both splits get :func:`split_details` at that threshold."""
    out: dict[str, Any] = {}
    pos = None if positive is None or multilabel else int(positive["index"])
    threshold = None
    if pos is not None:
        y_val = np.asarray(val[0]).reshape(-1).astype(int)
        threshold = operating_threshold(y_val == pos, np.asarray(val[1])[:, pos], rule, min_sensitivity)
        out["positive_class"] = {"index": pos, "name": str(positive["name"])}
        out["operating_point"] = {"rule": rule, "min_sensitivity": min_sensitivity if rule == "min_sensitivity"
                                  else None, "threshold": threshold, "chosen_on": "val",
                                  "applies_to": f"P({positive['name']}) >= threshold -> {positive['name']}"}
    for i, (split, (y, s)) in enumerate((("val", val), ("test", test))):
        out[split] = split_details(y, s, label_names=label_names, metric_fn=metric_fn, multilabel=multilabel,
                                   positive=pos, threshold=threshold, beta=beta, n_boot=n_boot, seed=seed + i,
                                   n_bins=n_bins)
    return out

"""The model card's clinical sections: the decision rule, the confusion matrix, the positive class's sensitivity and
specificity with 95 % CIs, calibration, and what the model expects to see (acquisition, input checks).

Everything comes from the run's ``metrics.json`` (``positive_class``, ``operating_point``; in ``test``:
``confusion_matrix``, ``per_class``, ``fbeta_positive``, ``ci95``, ``calibration``) and the bundle's
``preprocessing.json``; a key that an older run lacks leaves its line out. A sensitivity or specificity without a
bootstrap CI in ``ci95`` gets the Wilson score interval of its confusion-matrix counts
(``scipy.stats.binomtest(...).proportion_ci(method="wilson")``), and the card says which one it shows.
"""
from __future__ import annotations

import math
from typing import Any

from mednas_nni.deploy.preprocessing import Preprocessing

from ._metrics import fmt

__all__ = ["ci95_of", "decision_lines", "clinical_section", "input_checks_section"]


def ci95_of(test: dict[str, Any], *keys: str) -> tuple[float, float] | None:
    """The first ``[lo, hi]`` of ``test["ci95"]`` under one of ``keys`` (None when there is none)."""
    ci = test.get("ci95") or {}
    for k in keys:
        v = ci.get(k)
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
            return float(v[0]), float(v[1])
    return None


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def _wilson(k: int, n: int) -> tuple[float, float] | None:
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def decision_lines(prep: Preprocessing) -> list[str]:
    """The intended-use bullet on the positive class and the operating threshold (binary classifiers)."""
    out = prep.output
    if out.positive_class is None:
        return []
    pc, op = out.positive_class, out.operating_point
    if op is None:
        return [f"- Positive class: **{pc.name}**. The run chose no operating threshold; `mednas predict` calls "
                f"{pc.name} when p({pc.name}) >= 0.5."]
    minsens = f", minimum sensitivity {op.min_sensitivity:g}" if op.min_sensitivity is not None else ""
    return [f"- Positive class: **{pc.name}**. Operating threshold p({pc.name}) >= **{op.threshold:.4f}**, chosen on "
            f"the {op.chosen_on} split by {op.rule}{minsens}; `mednas predict` applies it (recorded in "
            "`preprocessing.json`)."]


def _matrix(cm: list[list[Any]], names: list[str]) -> list[str]:
    L = ["| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for name, row in zip(names, cm):
        L.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |")
    return L


def _sens_spec(test: dict[str, Any], cm: list[list[Any]] | None, names: list[str], pos: int
               ) -> list[str]:
    name = names[pos]
    pc = (test.get("per_class") or {}).get(name) or {}
    counts = None
    if cm is not None and len(cm) == 2:
        tp, fn = int(cm[pos][pos]), int(cm[pos][1 - pos])
        tn, fp = int(cm[1 - pos][1 - pos]), int(cm[1 - pos][pos])
        counts = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp)}
    L = []
    for what in ("sensitivity", "specificity"):
        value = pc.get(what)
        if value is None and counts and counts[what][1]:
            value = counts[what][0] / counts[what][1]
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        ci = ci95_of(test, f"{what}_{name}", f"{what}_positive", what, f"{name}_{what}")
        how = "bootstrap 95 % CI from metrics.json"
        if ci is None and counts:
            ci, how = _wilson(*counts[what]), "Wilson 95 % CI of the counts"
        frac = f" ({counts[what][0]}/{counts[what][1]})" if counts else ""
        L.append(f"- {what.capitalize()} for **{name}**: **{value:.3f}**{frac}, {how} {_fmt_ci(ci)}.")
    return L


def clinical_section(metrics: dict[str, Any], prep: Preprocessing, calibration_png: str | None = None
                     ) -> list[str]:
    """``## Clinical metrics (test split)``; empty when ``metrics.json`` has none of its keys (older runs).
    ``calibration_png``: the reliability diagram's path inside the bundle, shown under the calibration line."""
    test = metrics.get("test") or {}
    names = list(prep.output.label_names)
    cm = test.get("confusion_matrix")
    per_class = test.get("per_class") or {}
    cal = test.get("calibration") or {}
    if not (cm or per_class or cal or "fbeta_positive" in test):
        return []
    L = ["## Clinical metrics (test split)", ""]
    if isinstance(cm, list) and len(cm) == len(names) and all(len(r) == len(names) for r in cm):
        op = metrics.get("operating_point") or {}
        at = (f" at the operating threshold {op['threshold']:.4f}" if isinstance(op.get("threshold"), (int, float))
              else "")
        L += [f"Confusion matrix{at} (rows: true class, columns: predicted class):", ""] + _matrix(cm, names) + [""]
    else:
        cm = None
    pc = prep.output.positive_class
    if pc is not None and len(names) == 2:
        L += _sens_spec(test, cm, names, pc.index)
        if isinstance(test.get("fbeta_positive"), (int, float)):
            L.append(f"- F-beta for **{pc.name}** (`fbeta_positive`): {test['fbeta_positive']:.3f}.")
        L.append("")
    if per_class:
        cols = ("sensitivity", "specificity", "ppv", "npv", "f1", "support")
        L += ["| class | sensitivity | specificity | PPV | NPV | F1 | support |", "|---|---|---|---|---|---|---|"]
        for name, row in per_class.items():
            cells = [str(row.get(c, "n/a")) if c == "support" else fmt(row.get(c)) for c in cols]
            L.append(f"| {name} | " + " | ".join(cells) + " |")
        L.append("")
    if cal:
        bins = f" over {cal['n_bins']} bins" if cal.get("n_bins") else ""
        L += [f"Calibration: Brier score {fmt(cal.get('brier'))}, expected calibration error (ECE) "
              f"{fmt(cal.get('ece'))}{bins} (test split; lower is better).", ""]
        if calibration_png:
            L += [f"![Reliability diagram (test split)]({calibration_png})", ""]
    return L


def input_checks_section(prep: Preprocessing) -> list[str]:
    """``## What the model expects``: acquisition and the training-image statistics `mednas predict` checks."""
    acq, stats = prep.acquisition, prep.input_statistics
    if acq is None and stats is None:
        return []
    L = ["## What the model expects (out-of-distribution checks)", ""]
    if acq is not None:
        L.append(f"- Trained on: {acq.description}.")
        L.append("- `mednas predict` flags (`ood: true`, with reasons, and a warning) a DICOM whose Modality is "
                 + (f"not {', '.join(acq.dicom_modalities)}" if acq.dicom_modalities else "anything (no DICOM "
                    "Modality recorded: not checked)")
                 + ("" if acq.from_volumes else ", a slice of a 3-D volume")
                 + (", a colour image" if acq.color == "gray" else "")
                 + (", and an image whose statistics lie outside the training images' range:" if stats else "."))
    if stats is not None:
        L += ["", f"| statistic ({stats.computed_on}) | 0.5th pct. | median | 99.5th pct. | accepted range |",
              "|---|---|---|---|---|"]
        for name, r in stats.features.items():
            L.append(f"| {name.replace('_', ' ')} | {r.p0_5:.3g} | {r.median:.3g} | {r.p99_5:.3g} | "
                     f"[{r.low:.3g}, {r.high:.3g}] |")
        L += ["", f"Rule: {stats.rule}. These checks are a coarse screen; an unflagged input is not thereby in "
              "distribution."]
    return L + [""]

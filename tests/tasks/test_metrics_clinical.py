"""Clinical metrics (mednas_nni.tasks.metrics_clinical): the numpy bootstrap metrics equal the library ones, the
operating threshold follows its documented rule, confusion counts, calibration, seeded stratified bootstrap, and
the classification task's detailed metrics on the bundled BreastMNIST."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mednas_nni.errors import ConfigError
from mednas_nni.tasks.classification import ClassificationTask, classification_metrics
from mednas_nni.tasks.metrics_clinical import (bootstrap_ci, calibration_summary, confusion_summary,
                                               fast_classification_metrics, operating_threshold,
                                               resolve_positive_class)


def _scores(rng, n, k):
    s = rng.random((n, k)) + 1e-3
    return s / s.sum(1, keepdims=True)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(6, 60), k=st.sampled_from([2, 3, 5]),
       positive=st.sampled_from([0, 1]))
def test_fast_metrics_equal_the_library_metrics(seed, n, k, positive):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])[:, None]      # every class present
    s = _scores(rng, n, k)
    task = "binary-class" if k == 2 else "multi-class"
    ref = classification_metrics(y, s, task, positive if k == 2 else None, beta=0.5)
    fast = fast_classification_metrics(y, s, task, positive if k == 2 else None, beta=0.5)
    assert set(fast) == set(ref)
    for key in ref:
        assert fast[key] == pytest.approx(ref[key], abs=1e-12), key


def test_fast_metrics_multilabel_equal_medmnist():
    rng = np.random.default_rng(3)
    y = (rng.random((40, 4)) > 0.5).astype(int)
    s = rng.random((40, 4))
    ref = classification_metrics(y, s, "multi-label, binary-class")
    fast = fast_classification_metrics(y, s, "multi-label, binary-class")
    assert fast == pytest.approx(ref, abs=1e-12)


def test_youden_threshold_maximises_j_on_validation_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.35 * y + rng.normal(0.3, 0.2, 200), 0, 1)
    thr = operating_threshold(y, p, "youden")
    j = lambda t: ((p >= t) & (y == 1)).sum() / (y == 1).sum() - ((p >= t) & (y == 0)).sum() / (y == 0).sum()
    assert j(thr) == pytest.approx(max(j(t) for t in np.unique(p)))


def test_min_sensitivity_threshold_is_the_highest_that_reaches_it():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 300), 0, 1)
    thr = operating_threshold(y, p, "min_sensitivity", 0.9)
    sens = lambda t: ((p >= t) & (y == 1)).sum() / (y == 1).sum()
    assert sens(thr) >= 0.9
    higher = np.unique(p)[np.unique(p) > thr]
    assert all(sens(t) < 0.9 for t in higher)
    assert operating_threshold(np.zeros(5), np.linspace(0, 1, 5)) == 0.5    # one class: no ROC curve


def test_confusion_summary_counts_and_undefined_ratios():
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 1, 0, 1, 1, 1])
    cm, pc = confusion_summary(y, pred, ["a", "b", "c"])
    assert cm == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert pc["a"] == {"sensitivity": 2 / 3, "specificity": 1.0, "ppv": 1.0, "npv": 3 / 4, "f1": 0.8, "support": 3}
    assert pc["b"]["ppv"] == 0.5 and pc["b"]["specificity"] == 0.5
    assert pc["c"]["ppv"] is None and pc["c"]["sensitivity"] == 0.0      # never predicted: PPV undefined


def test_calibration_of_perfect_and_of_constant_scores():
    y = np.array([0, 1, 1, 0])
    perfect = np.eye(2)[y].astype(float)
    c = calibration_summary(y, perfect, positive=1)
    assert c["brier"] == 0.0 and c["ece"] == pytest.approx(0.0, abs=1e-7) and c["n_bins"] == 10
    const = np.full((4, 2), 0.5)
    c = calibration_summary(y, const, positive=0)
    assert c["brier"] == pytest.approx(0.25) and c["ece"] == pytest.approx(0.0, abs=1e-7)
    multi = calibration_summary(np.array([0, 1, 2]), np.eye(3), positive=None)
    assert multi["brier"] == 0.0 and multi["of"] == "top-label confidence"


def test_bootstrap_is_seeded_stratified_and_brackets_the_estimate():
    rng = np.random.default_rng(2)
    y = np.array([0] * 30 + [1] * 90)
    s = _scores(rng, 120, 2)
    s[y == 1, 1] += 0.5
    s /= s.sum(1, keepdims=True)
    seen = []

    def fn(yb, sb):
        seen.append(np.bincount(yb, minlength=2).tolist())
        return fast_classification_metrics(yb[:, None], sb, "binary-class", 1)

    a = bootstrap_ci(fn, y, s, n_boot=200, seed=7, strata=y)
    assert all(c == [30, 90] for c in seen)                       # every resample keeps the class counts
    assert a == bootstrap_ci(fn, y, s, n_boot=200, seed=7, strata=y)
    assert a != bootstrap_ci(fn, y, s, n_boot=200, seed=8, strata=y)
    point = fast_classification_metrics(y[:, None], s, "binary-class", 1)
    for k in ("auc", "acc", "balanced_acc"):
        lo, hi = a[k]
        assert lo <= point[k] <= hi and hi - lo < 0.5
    assert bootstrap_ci(fn, y, s, n_boot=0) == {}


def test_positive_class_by_name_index_default_and_errors():
    names = ["malignant", "normal, benign"]
    assert resolve_positive_class(None, 0, names) == {"index": 0, "name": "malignant"}
    assert resolve_positive_class("normal, benign", 0, names)["index"] == 1
    assert resolve_positive_class(None, None, names)["index"] == 1
    with pytest.raises(ConfigError, match=r"task.params.positive_class: .*did you mean 'malignant'.*got 'malignat'"):
        resolve_positive_class("malignat", None, names)
    with pytest.raises(ConfigError, match="got 2"):
        resolve_positive_class(2, None, names)


# ------------------------------------------------------------------------------------------------------------
# The task on the bundled BreastMNIST (no ../shared/data needed)
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def breast():
    from mednas_nni.data.medmnist import MedMNISTDataset

    ds = MedMNISTDataset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))
    return ds, model


def test_breastmnist_positive_class_is_malignant_and_drives_fbeta(breast):
    ds, model = breast
    task = ClassificationTask(ds.info)
    assert task.positive == {"index": 0, "name": "malignant"}
    assert "fbeta_positive" in task.metric_names and task.select_key("val_fbeta_positive") == "fbeta_positive"
    assert task.select_key("val_balanced_acc") == "balanced_acc"
    base = task.baseline(ds)
    assert base["majority_class"] == 1 and base["fbeta_positive"] == 0.0    # never calls malignant
    benign = ClassificationTask(ds.info, positive_class="normal, benign")
    assert benign.baseline(ds)["fbeta_positive"] == pytest.approx(base["f05"])   # f05 stays label 1


def test_detailed_metrics_on_breastmnist(breast, tmp_path):
    from torch.utils.data import DataLoader

    from mednas_nni.tasks.classification import predict_scores

    ds, model = breast
    task = ClassificationTask(ds.info, ci_n_boot=200)
    d = task.detailed_metrics(model, ds, seed=0)
    op = d["operating_point"]
    assert d["positive_class"] == {"index": 0, "name": "malignant"}
    assert op["rule"] == "youden" and op["chosen_on"] == "val" and op["min_sensitivity"] is None
    y, s = predict_scores(model, DataLoader(ds.dataset("val"), batch_size=256), task.task_type)
    assert op["threshold"] == operating_threshold(y.reshape(-1) == 0, s[:, 0], "youden")
    test = d["test"]
    yt, st_ = predict_scores(model, DataLoader(ds.dataset("test"), batch_size=256), task.task_type)
    called = st_[:, 0] >= op["threshold"]
    cm = np.asarray(test["confusion_matrix"])
    assert cm.sum() == len(yt) == 156 and cm[0].sum() == 42                 # 42 malignant test images
    assert cm[0, 0] == int((called & (yt.reshape(-1) == 0)).sum())
    mal = test["per_class"]["malignant"]
    assert mal["sensitivity"] == pytest.approx(cm[0, 0] / 42) and mal["support"] == 42
    assert test["at_operating_point"]["sensitivity"] == mal["sensitivity"]
    assert np.asarray(test["confusion_matrix_argmax"]).sum() == 156
    for k in ("auc", "acc", "balanced_acc", "fbeta_positive", "op_sensitivity", "op_specificity"):
        lo, hi = test["ci95"][k]
        assert 0.0 <= lo <= hi <= 1.0, k
    assert test["ci_n_boot"] == 200 and set(test["calibration"]) >= {"brier", "ece", "n_bins"}
    paths = task.write_figures(model, ds, tmp_path)
    assert [p.name for p in paths] == ["calibration.png"] and paths[0].stat().st_size > 10_000


def test_min_sensitivity_rule_from_params(breast):
    ds, model = breast
    task = ClassificationTask(ds.info, min_sensitivity=0.95, ci_n_boot=0)
    d = task.detailed_metrics(model, ds)
    assert d["operating_point"]["rule"] == "min_sensitivity" and d["operating_point"]["min_sensitivity"] == 0.95
    assert d["val"]["per_class"]["malignant"]["sensitivity"] >= 0.95
    assert d["test"]["ci95"] == {}


def test_bad_task_params_are_one_line_errors(breast):
    from pydantic import ValidationError

    ds, _ = breast
    with pytest.raises(ValidationError, match="needs min_sensitivity"):
        ClassificationTask(ds.info, threshold_rule="min_sensitivity")
    with pytest.raises(ConfigError, match="did you mean 'malignant'"):
        ClassificationTask(ds.info, positive_class="malignent")


@pytest.mark.parametrize("task", ["multi-class", "multi-label, binary-class"])
def test_clinical_metrics_without_a_positive_class(task):
    from mednas_nni.tasks.metrics_clinical import clinical_metrics

    rng = np.random.default_rng(4)
    multilabel = task.startswith("multi-label")
    if multilabel:
        y, s = (rng.random((50, 3)) > 0.5).astype(int), rng.random((50, 3))
    else:
        y, s = np.concatenate([np.arange(3), rng.integers(0, 3, 47)])[:, None], _scores(rng, 50, 3)
    d = clinical_metrics((y, s), (y, s), label_names=["a", "b", "c"], multilabel=multilabel, n_boot=50,
                         metric_fn=lambda yb, sb: fast_classification_metrics(yb, sb, task))
    assert "positive_class" not in d and "operating_point" not in d
    t = d["test"]
    assert set(t["per_class"]) == {"a", "b", "c"} and set(t["ci95"]) >= {"acc", "auc"}
    if multilabel:
        assert "confusion_matrix" not in t and t["decision"] == "each label at 0.5"
        assert t["per_class"]["a"]["support"] == int(y[:, 0].sum())
    else:
        assert t["decision"] == "argmax" and np.asarray(t["confusion_matrix"]).sum() == 50
        assert np.trace(np.asarray(t["confusion_matrix"])) == int((s.argmax(1) == y[:, 0]).sum())
        assert t["calibration"]["of"] == "top-label confidence"

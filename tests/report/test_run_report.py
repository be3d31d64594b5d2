"""The run report of a real (tiny) default search on the bundled BreastMNIST: metrics.json's clinical keys,
report.md / report.html (every section, PNGs inline), environment.json, ``mednas runs`` and ``mednas report``;
and the segmentation sections from real segmentation metrics."""
from __future__ import annotations

import base64
import json
import platform
import re
import subprocess

import pytest

from conftest import REPO
from mednas_nni.cli import main

# the embedded default at a tiny budget: 4 architectures, one finalist retrained 1 epoch of 2 batches
TINY = ["strategy.params.pop_size=4", "strategy.params.generations=1", "space.params.num_blocks=1",
        "space.params.num_nodes=2", "space.params.channels=4", "strategy.params.proxy_batch_size=16",
        "evaluator.epochs=1", "evaluator.max_batches_per_epoch=2", "evaluator.bn_batches=2",
        "task.name=classification", "task.params.ci_n_boot=200"]
SECTIONS = ("summary", "data", "search", "winner", "metrics", "confusion", "calibration", "explanations",
            "environment", "files")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import torch

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("runs")
    assert main(["search", *TINY, f"run.out_dir={out}", "--no-progress"]) == 0
    (rd,) = [p for p in out.iterdir() if p.is_dir()]
    return rd


def test_metrics_json_has_the_clinical_keys(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["positive_class"] == {"index": 0, "name": "malignant"}
    op = m["operating_point"]
    assert op["rule"] == "youden" and op["chosen_on"] == "val" and 0.0 <= op["threshold"] <= 1.0
    for split, n in (("val", 78), ("test", 156)):
        s = m[split]
        assert {"acc", "auc", "balanced_acc", "f05", "fbeta_positive"} <= set(s)          # the plain keys stay
        cm = s["confusion_matrix"]
        assert sum(map(sum, cm)) == n and len(cm) == 2
        mal = s["per_class"]["malignant"]
        assert mal["support"] == cm[0][0] + cm[0][1]
        assert mal["sensitivity"] == pytest.approx(cm[0][0] / mal["support"])
        assert set(s["ci95"]) >= {"auc", "acc", "balanced_acc", "fbeta_positive", "op_sensitivity"}
        assert s["ci_n_boot"] == 200 and set(s["calibration"]) >= {"brier", "ece", "n_bins"}
    assert m["data"]["split_sizes"] == {"train": 546, "val": 78, "test": 156}
    assert m["data"]["class_counts"]["test"] == [42, 114]
    assert (run_dir / "calibration.png").stat().st_size > 10_000


def test_report_md_and_html_show_every_section(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    md = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()
    for heading in ("## Summary", "## Data", "## Search", "## Winner", "## Test metrics",
                    "## Operating point and confusion matrix", "## Calibration", "## Environment"):
        assert heading in md, heading
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in html, anchor
    sens = m["test"]["per_class"]["malignant"]["sensitivity"]
    assert f"sensitivity for malignant is {sens:.3f}" in md
    cm = m["test"]["confusion_matrix"]
    assert f"| malignant | {cm[0][0]} | {cm[0][1]} |" in md
    # figures: relative links in the markdown, inline PNG data in the HTML (no file references)
    assert "](calibration.png)" in md and "](pareto.png)" in md
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) >= 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for s in srcs)


def test_environment_json(run_dir):
    import torch

    env = json.loads((run_dir / "environment.json").read_text())
    assert env["python"]["version"] == platform.python_version()
    assert env["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert env["packages"]["mednas-nni"] and env["seed"] == 0 and env["device"] in ("cpu", "cuda")
    assert env["cpu"]["logical_cores"] >= 1
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert env["git"]["commit"] == head.stdout.strip()


def test_mednas_runs_lists_the_run(run_dir, capsys):
    assert main(["runs", str(run_dir.parent), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert row["run"] == run_dir.name and row["phase"] == "done" and row["data"] == "breastmnist_28"
    assert row["test"]["auc"] == m["test"]["auc"] and row["ci95"]["auc"] == m["test"]["ci95"]["auc"]
    assert row["positive_class"] == "malignant"
    assert row["sensitivity"] == m["test"]["per_class"]["malignant"]["sensitivity"]
    assert main(["runs", str(run_dir.parent)]) == 0
    table = capsys.readouterr().out
    assert run_dir.name in table and "sensitivity (positive)" in table
    assert main(["runs", str(run_dir / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mednas: ") and "nowhere" in err and "\n" not in err


def test_mednas_report_rewrites_and_refuses_a_non_run(run_dir, tmp_path, capsys):
    env_before = (run_dir / "environment.json").read_text()
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()
    assert (run_dir / "environment.json").read_text() == env_before       # the run's environment is kept
    assert main(["report", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert "expected a run directory" in err and "\n" not in err


def test_search_headline_names_the_positive_class_at_the_operating_point(run_dir):
    from mednas_nni.cli import _headline
    from mednas_nni.io import RunDir

    m = json.loads((run_dir / "metrics.json").read_text())
    text = _headline(RunDir(run_dir))
    sens = m["test"]["at_operating_point"]["sensitivity"]
    assert f"test malignant sensitivity {sens:.3f}" in text
    assert "F0.5" not in text           # F0.5 of label 1 is the benign class for BreastMNIST: not shown

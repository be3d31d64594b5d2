"""The scripted benchmarks run end to end on the Core v2 API in their tiny ``--mode smoke`` (not a measurement).

Each script runs as a user runs it (a subprocess), writes its results under ``tmp_path`` (never over
``benchmarks/results``) and must produce every row its table reports.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_data

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.bench]


def _run(script: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--mode", "smoke", *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_zc_nsga2_medmnist_smoke(tmp_path):
    root = require_data("medmnist")
    _run("zc_nsga2_medmnist.py", "--root", str(root), "--work", str(tmp_path))
    res = json.loads((tmp_path / "results" / "zc_nsga2_medmnist.json").read_text())
    (row,) = res["rows"]
    assert row["flag"] == "breastmnist"
    assert row["random"]["evaluated"] == row["zc_nsga2"]["evaluated"] > 0     # the same budget for the peer
    assert row["random"]["failed"] == 0     # NNI Random redraws dead cells as our search does: none is scored
    for name in ("zc_nsga2", "random", "resnet18"):
        assert 0.0 <= row[name]["test"]["acc"] <= 1.0
    assert 0.0 < row["majority"]["acc"] < 1.0 and row["proxy_cost"]["ratio_median"] > 0
    assert "| breastmnist | 0 | random |" in (tmp_path / "results" / "zc_nsga2_medmnist.md").read_text()
    # the resume file: one line per finished method, then the unit; without the unit line, a rerun replays the
    # steps (nothing is searched or retrained again: the run directories are removed) and gives the same row
    state = tmp_path / "zc_nsga2_medmnist-smoke.jsonl"
    lines = [json.loads(x) for x in state.read_text().splitlines()]
    assert [x.get("step") for x in lines] == ["zc_nsga2", "random", "params_only", "random_arch", "resnet18",
                                               "proxy_cost", None]
    state.write_text("".join(json.dumps(x) + "\n" for x in lines[:-1]))
    for d in tmp_path.iterdir():
        if d.is_dir() and d.name != "results":
            shutil.rmtree(d)
    _run("zc_nsga2_medmnist.py", "--root", str(root), "--work", str(tmp_path))
    (again,) = json.loads((tmp_path / "results" / "zc_nsga2_medmnist.json").read_text())["rows"]
    for name in ("zc_nsga2", "random", "params_only", "random_arch", "resnet18"):
        assert again[name]["test"] == row[name]["test"], name


def test_genas_mhsma_smoke(tmp_path):
    require_data("mhsma")
    _run("genas_mhsma.py", "--skip-local", "--work", str(tmp_path))
    res = json.loads((tmp_path / "results" / "genas_mhsma.json").read_text())
    strategies = res["labels"]["head"]["strategies"]
    assert set(strategies) == {"genas_wf", "regularized_evolution", "random"}
    budget = strategies["genas_wf"]["trials"]
    assert budget > 0 and all(s["trials"] <= budget for s in strategies.values())
    assert strategies["genas_wf"]["duplicate_trainings"] == 0
    for s in strategies.values():
        assert set(s["test"]) >= {"acc", "balanced_acc", "f05", "auc"}
    assert res["labels"]["head"]["majority"]["majority_class"] in ("normal", "abnormal")
    assert "| head | genas_wf |" in (tmp_path / "results" / "genas_mhsma.md").read_text()

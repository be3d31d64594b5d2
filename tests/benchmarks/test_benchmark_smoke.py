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
    md = (tmp_path / "results" / "zc_nsga2_medmnist.md").read_text()
    assert "| breastmnist | 0 | random |" in md and "(1 worker process(es) of" in md
    # the within-seed difference against each baseline, its sign counted
    d_auc = row["zc_nsga2"]["test"]["auc"] - row["random"]["test"]["auc"]
    assert f"| breastmnist | random | {d_auc:+.3f} | {d_auc:+.3f} | {int(d_auc > 0)} of 1 |" in md
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
    # --report trains nothing: its own process layout is not put in the table as the units'
    _run("zc_nsga2_medmnist.py", "--root", str(root), "--work", str(tmp_path), "--report")
    md = (tmp_path / "results" / "zc_nsga2_medmnist.md").read_text()
    assert "worker process(es)" not in md and "the units ran in earlier invocations" in md


def test_zc_proxy_rank_smoke_and_a_held_out_sample_with_the_same_plan(tmp_path):
    root = require_data("medmnist")
    common = ["--root", str(root), "--work", str(tmp_path), "--flags", "breastmnist"]
    _run("zc_proxy_rank.py", *common)
    first = json.loads((tmp_path / "results" / "zc_proxy_rank.json").read_text())
    assert first["arch_seed"] == 0 and first["flags"] == ["breastmnist"] and first["finished"] == {"breastmnist": 4}
    assert set(first["results"]) == {"breastmnist"}
    auc = first["results"]["breastmnist"]["auc"]
    assert {"noise_ceiling", "proxies", "selection_percentile"} <= set(auc) and "params" in auc["proxies"]
    # the held-out check: other architectures, trained with the first run's plan, in their own files
    _run("zc_proxy_rank.py", *common, "--arch-seed", "1", "--plan-from",
         str(tmp_path / "results" / "zc_proxy_rank.json"))
    held = json.loads((tmp_path / "results" / "zc_proxy_rank_archseed1.json").read_text())
    assert held["arch_seed"] == 1 and held["plan"] == first["plan"] and held["finished"] == {"breastmnist": 4}
    assert {a["hash"] for a in held["archs"]} != {a["hash"] for a in first["archs"]}
    assert "sample seed 1: a held-out sample" in (tmp_path / "results" / "zc_proxy_rank_archseed1.md").read_text()
    # another PneumoniaMNIST subset with the same plan: its own files, the first table untouched
    before = (tmp_path / "results" / "zc_proxy_rank.json").read_text()
    _run("zc_proxy_rank.py", "--root", str(root), "--work", str(tmp_path), "--flags", "pneumoniamnist",
         "--pneumonia-train", "40", "--plan-from", str(tmp_path / "results" / "zc_proxy_rank.json"))
    pneu = json.loads((tmp_path / "results" / "zc_proxy_rank_pneumonia40.json").read_text())
    assert pneu["plan"]["pneumonia_train"] == 40 and pneu["n_train"]["pneumoniamnist"] == 40
    assert pneu["finished"] == {"pneumoniamnist": 4}
    assert (tmp_path / "results" / "zc_proxy_rank.json").read_text() == before
    # a file that is not a results JSON: one line naming it, non-zero exit, nothing trained
    bad = tmp_path / "not_results.json"
    bad.write_text("{}")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "zc_proxy_rank.py"), "--mode", "smoke", *common,
                           "--arch-seed", "2", "--plan-from", str(bad)], capture_output=True, text=True, timeout=600)
    last = proc.stderr.strip().splitlines()[-1]             # (NNI's import warnings about torch come before it)
    assert proc.returncode != 0 and last.startswith(f"--plan-from {bad}: expected") and "Traceback" not in proc.stderr
    assert not (tmp_path / "zc_proxy_rank_archseed2-smoke.jsonl").exists()
    # a subset too small to stratify: one line naming the option, nothing planned or trained
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "zc_proxy_rank.py"), "--mode", "smoke", *common,
                           "--pneumonia-train", "-5"], capture_output=True, text=True, timeout=600)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "--pneumonia-train: expected a number of training images >= 2" in last
    assert "Traceback" not in proc.stderr and not list(tmp_path.glob("*_pneumonia-5*"))


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

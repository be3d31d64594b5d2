"""`nnictl create` with MedNASTuner: one trial per architecture, then the finalists, in NNI's REST API / web UI;
the experiment ends DONE by itself, and a setup error is one FAILED trial."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.nni]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/{path}", timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def nni_env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONWARNINGS": "ignore",
           "NNI_CONFIG_DIR": os.environ["NNI_CONFIG_DIR"]}
    bindir = Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"    # nnictl and the trial's `python` from this env
    return env


@contextlib.contextmanager
def nni_experiment(tmp_path, nni_env, tuner: str, label: str, search: dict, concurrency: int = 1,
                   overrides: list | None = None, expect_phase: str | None = "done"):
    """Register the tuners, `nnictl create` an experiment driving ``search`` (a mednas config), wait until NNI
    says it is DONE (and, with ``expect_phase``, the run directory's phase); yield ``(port, run_dir, trials)``;
    stop it by id."""
    nnictl = shutil.which("nnictl", path=nni_env["PATH"])
    assert nnictl, "nnictl not installed"
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(search))
    exp_yml = tmp_path / "exp.yml"
    exp_yml.write_text(yaml.safe_dump({
        "experimentName": "mednas-test", "searchSpace": {"mednas": {"_type": "choice", "_value": [label]}},
        "trialCommand": f"{sys.executable} -m mednas_nni.nni_trial", "trialCodeDirectory": ".",
        "trialConcurrency": concurrency, "maxTrialNumber": 20,
        "tuner": {"name": tuner, "classArgs": {"config": "search.yaml", "overrides": overrides or []}},
        "trainingService": {"platform": "local"}}))
    r = subprocess.run([sys.executable, "-m", "mednas_nni", "register"], env=nni_env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and tuner in r.stdout, r.stderr
    # On a loaded 2-core machine nnictl can give up before NNI's manager answers, or the manager before the
    # dispatcher connects (NNI's fixed 10 s): neither is ours, so retry the creation (at most 3 times).
    for _ in range(3):
        port = _free_port()
        r = subprocess.run([nnictl, "create", "--config", str(exp_yml), "--port", str(port)], env=nni_env,
                           capture_output=True, text=True, timeout=180, cwd=tmp_path)
        m = re.search(r"Experiment ID: (?:\x1b\[\d+m)?([A-Za-z0-9]+)", r.stdout)
        if r.returncode == 0 and m:
            time.sleep(15)
            if _get(port, "check-status")["status"] != "ERROR":
                break
            subprocess.run([nnictl, "stop", m.group(1)], env=nni_env, capture_output=True, timeout=60)
    assert r.returncode == 0 and m, r.stdout + r.stderr
    exp_id = m.group(1)
    try:
        data = search["data"]["params"].get("flag", search["data"]["name"])      # the run name's data part
        run_dir = tmp_path / "runs" / f"{label}-{data}-nni-{exp_id}"
        deadline, status = time.time() + 480, None
        while time.time() < deadline:
            status = _get(port, "check-status")["status"]
            assert status != "ERROR"
            if status == "DONE":          # the tuner lowered maxTrialNumber and the last trial has ended
                break
            time.sleep(2)
        assert status == "DONE", f"experiment did not end by itself: {status}"
        if expect_phase:
            assert json.loads((run_dir / "status.json").read_text())["phase"] == expect_phase
        yield port, run_dir, _get(port, "trial-jobs")
    finally:
        subprocess.run([nnictl, "stop", exp_id], env=nni_env, capture_output=True, timeout=60)


def _params(trial: dict) -> dict:
    return json.loads(trial["hyperParameters"][-1])["parameters"]


def _finals(port: int) -> dict:
    return {m["trialJobId"]: json.loads(json.loads(m["data"])) for m in _get(port, "metric-data") if m["type"] == "FINAL"}


def test_nnictl_one_trial_per_architecture_then_finalists_with_test_metrics(tmp_path, nni_env):
    search = {"data": {"name": "medmnist", "params": {"flag": "breastmnist"}},
              "space": {"name": "mstf_cell", "params": {"num_blocks": 2, "num_nodes": 2, "channels": 8}},
              "strategy": {"name": "zc_nsga2", "params": {"pop_size": 3, "generations": 1, "top_k": 1,
                                                          "knee": False}},
              "evaluator": {"epochs": 1}, "run": {"out_dir": "runs", "device": "cpu"}}
    with nni_experiment(tmp_path, nni_env, "MedNASTuner", "zc_nsga2", search) as (port, run_dir, trials):
        params = [_params(t) for t in trials]
        kinds = [p["mednas"] for p in params]
        assert kinds[-1] == "retrain" and set(kinds[:-1]) <= {"evaluate", "invalid"}, kinds
        recs = [json.loads(line) for line in (run_dir / "archs.jsonl").read_text().splitlines()]
        by_hash = {r["hash"]: r for r in recs}
        finals = _finals(port)
        for t, p in zip(trials, params):
            assert {"describe", "hash", "arch"} <= set(p) and p["describe"] == by_hash[p["hash"]]["describe"]
            if p["mednas"] == "evaluate":     # one trial per architecture; FAILED exactly when recorded failed
                assert (t["status"] == "FAILED") == (by_hash[p["hash"]]["status"] == "failed"), (t, by_hash[p["hash"]])
                if t["status"] == "SUCCEEDED":
                    assert 0.0 <= finals[t["trialJobId"]]["default"] <= 1.0      # bounded percentile
                    assert finals[t["trialJobId"]]["hash"] == p["hash"]          # it names its architecture
                    assert "hash" not in by_hash[p["hash"]]["metrics"]          # a label, not a recorded metric
        assert sorted(p["hash"] for p in params[:-1]) == sorted(r["hash"] for r in recs)   # nothing twice
        last = finals[trials[-1]["trialJobId"]]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert last["default"] == metrics["val"]["auc"] and last["test_auc"] == metrics["test"]["auc"]
        for f in ("best.pt", "best_arch.json", "pareto.png", "search_summary.json"):
            assert (run_dir / f).is_file(), f


def test_nnictl_setup_error_is_one_failed_trial_and_the_experiment_ends(tmp_path, nni_env):
    search = {"data": {"name": "medmnist", "params": {"flag": "breastmnist"}},
              "space": {"name": "mstf_cell", "params": {"num_blocks": 2, "num_nodes": 2, "channels": 8}},
              "strategy": {"name": "zc_nsga2", "params": {"pop_size": 3, "generations": 1}},
              "run": {"out_dir": "runs", "device": "cpu"}}
    with nni_experiment(tmp_path, nni_env, "MedNASTuner", "zc_nsga2", search, expect_phase=None,
                        overrides=[f"data.params.root={tmp_path / 'missing'}"]) as (port, run_dir, trials):
        assert [t["status"] for t in trials] == ["FAILED"]
        p = _params(trials[0])
        assert p["mednas"] == "setup_error" and "missing" in p["reason"] and "\n" not in p["reason"]

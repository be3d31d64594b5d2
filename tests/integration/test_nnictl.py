"""`nnictl create` with MedNASTuner: generation trials and finalist trials show in NNI's REST API / web UI."""
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
def nni_experiment(tmp_path, nni_env, tuner: str, label: str, search: dict, concurrency: int = 1):
    """Register the tuners, `nnictl create` an experiment driving ``search`` (a mednas config), wait until its run
    directory is done and every trial has ended; yield ``(port, run_dir, trials)``; stop it by id."""
    nnictl = shutil.which("nnictl", path=nni_env["PATH"])
    assert nnictl, "nnictl not installed"
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(search))
    exp_yml = tmp_path / "exp.yml"
    exp_yml.write_text(yaml.safe_dump({
        "experimentName": "mednas-test", "searchSpace": {"mednas": {"_type": "choice", "_value": [label]}},
        "trialCommand": f"{sys.executable} -m mednas_nni.nni_trial", "trialCodeDirectory": ".",
        "trialConcurrency": concurrency, "maxTrialNumber": 20,
        "tuner": {"name": tuner, "classArgs": {"config": "search.yaml"}},
        "trainingService": {"platform": "local"}}))
    r = subprocess.run([sys.executable, "-m", "mednas_nni", "register"], env=nni_env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and tuner in r.stdout, r.stderr
    port = _free_port()
    r = subprocess.run([nnictl, "create", "--config", str(exp_yml), "--port", str(port)], env=nni_env,
                       capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    exp_id = re.search(r"Experiment ID: (?:\x1b\[\d+m)?([A-Za-z0-9]+)", r.stdout).group(1)
    try:
        data = search["data"]["params"].get("flag", search["data"]["name"])      # the run name's data part
        run_dir = tmp_path / "runs" / f"{label}-{data}-nni-{exp_id}"
        deadline, phase = time.time() + 480, None
        while time.time() < deadline:
            assert _get(port, "check-status")["status"] != "ERROR"
            if (run_dir / "status.json").exists():
                phase = json.loads((run_dir / "status.json").read_text()).get("phase")
                # done once the tuner has the last result *and* that trial's process has ended
                if phase == "done" and all(t["status"] not in ("WAITING", "RUNNING", "UNKNOWN")
                                           for t in _get(port, "trial-jobs")):
                    break
            time.sleep(2)
        assert phase == "done", f"experiment did not finish: {phase}"
        yield port, run_dir, _get(port, "trial-jobs")
    finally:
        subprocess.run([nnictl, "stop", exp_id], env=nni_env, capture_output=True, timeout=60)


def test_nnictl_create_runs_generations_and_finalists_as_trials(tmp_path, nni_env):
    search = {"data": {"name": "medmnist", "params": {"flag": "breastmnist"}},
              "space": {"name": "mstf_cell", "params": {"num_blocks": 2, "num_nodes": 2, "channels": 8}},
              "strategy": {"name": "zc_nsga2", "params": {"pop_size": 4, "generations": 2, "top_k": 0}},
              "evaluator": {"epochs": 2}, "run": {"out_dir": "runs", "device": "cpu"}}
    with nni_experiment(tmp_path, nni_env, "MedNASTuner", "zc_nsga2", search) as (port, run_dir, trials):
        params = [json.loads(t["hyperParameters"][0])["parameters"] for t in trials]
        kinds = [p["mednas"] for p in params]
        assert kinds == ["score", "score", "retrain"], kinds
        assert all(t["status"] == "SUCCEEDED" for t in trials)
        by_trial: dict[str, list] = {}
        for m in _get(port, "metric-data"):
            by_trial.setdefault(m["trialJobId"], []).append(m)
        score_final = [json.loads(json.loads(m["data"])) for t in trials[:2] for m in by_trial[t["trialJobId"]]
                       if m["type"] == "FINAL"]
        assert all({"default", "scored", "failed", "min_flops"} <= set(f) for f in score_final)
        retrain = by_trial[trials[2]["trialJobId"]]
        assert sum(m["type"] == "PERIODICAL" for m in retrain) == 2          # one per epoch
        for f in ("best.pt", "best_arch.json", "metrics.json", "pareto.png", "archs.jsonl"):
            assert (run_dir / f).is_file(), f
        hashes = [json.loads(line)["hash"] for line in (run_dir / "archs.jsonl").read_text().splitlines()]
        assert len(hashes) == len(set(hashes)) == sum(f["scored"] + f["failed"] for f in score_final)


def test_nnictl_genas_tuner_trains_individuals_then_finalists(tmp_path, nni_env):
    from conftest import require_data

    search = {"data": {"name": "mhsma", "params": {"root": str(require_data("mhsma")), "label": "head"}},
              "space": {"name": "genas_cnn", "params": {"max_depth": 3}},
              "strategy": {"name": "genas_wf", "params": {"population_size": 3, "generations": 2,
                                                          "epochs_per_trial": 2, "max_batches_per_epoch": 2,
                                                          "top_k": 1, "torch_threads": 1}},
              "evaluator": {"epochs": 1, "max_batches_per_epoch": 2}, "run": {"out_dir": "runs", "device": "cpu"}}
    with nni_experiment(tmp_path, nni_env, "GeNASTuner", "genas_wf", search, concurrency=2) as (port, run_dir, trials):
        kinds = [json.loads(t["hyperParameters"][0])["parameters"]["mednas"] for t in trials]
        assert kinds[-1] == "retrain" and set(kinds[:-1]) == {"genas"} and 2 <= len(kinds) - 1 <= 6, kinds
        genas_ids = {t["trialJobId"] for t, k in zip(trials, kinds) if k == "genas"}
        periodical = [m for m in _get(port, "metric-data")
                      if m["trialJobId"] in genas_ids and m["type"] == "PERIODICAL"]
        assert len(periodical) == 2 * len(genas_ids)                          # one per epoch per individual
        recs = [json.loads(line) for line in (run_dir / "archs.jsonl").read_text().splitlines()]
        trained = [r["hash"] for r in recs if r["status"] == "trained"]
        assert len(trained) == len(set(trained)) == len(genas_ids)            # nothing trained twice
        for f in ("best.pt", "best_arch.json", "metrics.json", "strategy_state.pt"):
            assert (run_dir / f).is_file(), f

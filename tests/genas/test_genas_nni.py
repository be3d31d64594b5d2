"""End to end: ``mednas search`` of examples/genas_mhsma.yml on the sequential engine and on NNI's local training
service (a NasExperiment: NNI manager, one process per trial), and kill -9 + ``mednas resume``.

The local-service runs are subprocesses with ``HOME`` and ``NNI_CONFIG_DIR`` in a temporary folder (NNI fixes its
manifest path ``~/nni-experiments`` at import) on a free loopback port; every experiment is stopped by its id at the
end. Budgets are tiny (2-4 trials, 1 epoch of 1-2 batches): each local trial still pays ~5-15 s of process start.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from _genas_helpers import one_torch_thread  # noqa: F401 (autouse fixture)
from conftest import REPO, require_data
from mednas_nni.config import load_config
from mednas_nni.experiment import resume_search, run_search
from mednas_nni.io import RunDir, read_jsonl
from mednas_nni.search_spaces.genas_cnn import GeNASCNNSpace
from mednas_nni.strategies._utils import arch_hash
from mednas_nni.engines.nni_process import stop_nni_experiment

EXAMPLE = REPO / "examples" / "genas_mhsma.yml"
TINY = ["strategy.params.epochs_per_trial=1", "strategy.params.max_batches_per_epoch=2", "strategy.params.top_k=1",
        "strategy.params.tournament_size=2", "strategy.params.torch_threads=1", "evaluator.epochs=1",
        "evaluator.max_batches_per_epoch=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trained_hashes(rd: Path) -> list[str]:
    return [r["hash"] for r in read_jsonl(rd / RunDir.ARCHS) if r["status"] == "ok"]


def _assigned_records(db: sqlite3.Connection) -> dict[str, dict]:
    """Every trial's parameter record as NNI's manager assigned it (what the web UI shows beside the trial)."""
    assigned = {}
    for job, data in db.execute("select trialJobId, data from TrialJobEvent order by timestamp"):
        if data:                                # events after the first carry no (or an empty) record
            assigned.setdefault(job, json.loads(data))
    return assigned


def _nni_succeeded_hashes(rd: Path, exp_id: str, space: GeNASCNNSpace) -> list[str]:
    """Canonical hash of every SUCCEEDED trial in NNI's own database."""
    db = sqlite3.connect(rd / "nni" / exp_id / "db" / "nni.sqlite")
    params = _assigned_records(db)
    ok = [job for job, event in db.execute("select trialJobId, event from TrialJobEvent order by timestamp")
          if event == "SUCCEEDED"]
    return [arch_hash(space.canonicalize(params[j]["parameters"]["sample"])) for j in ok]


def _manager_procs(exp_id: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if exp_id in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _trial_procs(exp_id: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("NNI_EXP_ID") == exp_id:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


@pytest.fixture
def nni_env(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "NNI_CONFIG_DIR": str(tmp_path / "home" / "nni-config"),
           "PYTHONWARNINGS": "ignore"}
    (tmp_path / "home").mkdir()
    started: list[str] = []
    yield env, started
    for exp_id in started:      # stop every experiment by its id (manager + trials), never --all
        stop_nni_experiment(exp_id, manifest=tmp_path / "home" / "nni-experiments" / ".experiment")
        assert not _manager_procs(exp_id)


def _mednas(env, *args, timeout=420) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mednas_nni", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.data
@pytest.mark.slow
def test_mednas_search_sequential_engine_end_to_end(tmp_path) -> None:
    require_data("mhsma")
    cfg = load_config(EXAMPLE, ["engine.kind=sequential", "strategy.params.population_size=3",
                                "strategy.params.generations=2", f"run.out_dir={tmp_path}", "run.progress=false",
                                *TINY])
    rd = run_search(cfg)
    assert rd.status()["phase"] == "done"
    trained = _trained_hashes(rd.path)
    assert 3 <= len(trained) <= 6 and len(trained) == len(set(trained))
    rec = next(r for r in read_jsonl(rd / RunDir.ARCHS) if r["status"] == "ok")
    assert len(rec["metrics"]["history"]) == 1
    assert {"fitness", "val_f05", "val_balanced_acc", "val_auc"} <= set(rec["metrics"]) and rec["describe"]
    summary = json.loads((rd / "search_summary.json").read_text())
    assert summary["evaluated"] == len(trained) and summary["finalists"][0]["chosen_as"].startswith("top-1")
    assert "val_balanced_acc" in summary["default_metric"]
    metrics = json.loads((rd / RunDir.METRICS).read_text())
    assert metrics["strategy"] == "genas_wf" and metrics["baseline_test"]["acc"] == pytest.approx(0.73)
    assert metrics["selected_by"] == "val_balanced_acc"
    assert resume_search(rd.path).path == rd.path          # a finished run: nothing to do
    assert _trained_hashes(rd.path) == trained


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.nni
def test_local_training_service_end_to_end(tmp_path, nni_env) -> None:
    require_data("mhsma")
    env, started = nni_env
    port = _free_port()
    t0 = time.perf_counter()
    # two trials started together: NNI 3.0 can hand each the other's parameters (the trial entry corrects it)
    out = _mednas(env, "search", str(EXAMPLE), "engine.kind=local", "strategy.params.population_size=2",
                  "strategy.params.generations=1", f"engine.port={port}", f"run.out_dir={tmp_path}/runs",
                  "engine.trial_concurrency=2", *TINY, "--no-progress")
    wall = time.perf_counter() - t0
    rd = next((tmp_path / "runs").iterdir())
    exp_id = json.loads((rd / "status.json").read_text()).get("nni_experiment")
    if exp_id:
        started.append(exp_id)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((rd / "nni_experiment.json").read_text())["id"] == exp_id
    trained = _trained_hashes(rd)
    assert len(trained) == 2 and sorted(trained) == sorted(_nni_succeeded_hashes(rd, exp_id, GeNASCNNSpace(
        **load_config(EXAMPLE).space.params)))
    # NNI got per-epoch intermediate dicts and the final dict (default = val balanced accuracy), as the web UI shows
    db = sqlite3.connect(rd / "nni" / exp_id / "db" / "nni.sqlite")
    kinds = collections.Counter(t for (t,) in db.execute("select type from MetricData"))
    assert kinds == {"PERIODICAL": 2, "FINAL": 2}
    final = json.loads(json.loads(db.execute("select data from MetricData where type='FINAL'").fetchone()[0]))
    assert {"default", "fitness", "val_f05", "val_balanced_acc", "history"} <= set(final)
    assert final["default"] == final["val_balanced_acc"]
    # as the web UI shows a trial: its architecture (the manager's assignment) and its metrics belong together
    space = GeNASCNNSpace(**load_config(EXAMPLE).space.params)
    assigned = _assigned_records(db)
    ours = {r["hash"]: r for r in read_jsonl(rd / RunDir.ARCHS) if r["status"] == "ok"}
    for job, pid, data in db.execute("select trialJobId, parameterId, data from MetricData where type='FINAL'"):
        assert str(pid) == str(assigned[job]["parameter_id"]), f"trial {job} reported under another parameter"
        h = arch_hash(space.canonicalize(assigned[job]["parameters"]["sample"]))
        reported = json.loads(json.loads(data))
        assert reported["default"] == ours[h]["metrics"]["default"]
        # the web UI's columns "hash" and "describe" name that architecture; our records keep only the numbers
        assert (reported["hash"], reported["describe"]) == (h, ours[h]["describe"])
        assert not {"hash", "describe"} & set(ours[h]["metrics"])
    assert not _manager_procs(exp_id)                        # mednas stopped its manager at the end
    search_s = json.loads((rd / "status.json").read_text())["search_seconds"]
    print(f"local training service: 2 concurrent trials, search {search_s:.0f} s, command {wall:.0f} s")


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.nni
def test_kill_minus_9_then_resume_trains_nothing_twice(tmp_path, nni_env) -> None:
    require_data("mhsma")
    env, started = nni_env
    port = _free_port()
    args = ["search", str(EXAMPLE), "engine.kind=local", "strategy.params.population_size=2",
            "strategy.params.generations=2", f"engine.port={port}", f"run.out_dir={tmp_path}/runs", *TINY,
            "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "mednas_nni", *args], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rd = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            runs = list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
            if runs and (runs[0] / RunDir.ARCHS).exists() and len(_trained_hashes(runs[0])) >= 1:
                exp_id = json.loads((runs[0] / "status.json").read_text())["nni_experiment"]
                if _trial_procs(exp_id):             # kill while the next trial is running
                    rd = runs[0]
                    break
            time.sleep(0.3)
        assert rd is not None, "no trial finished in time"
    finally:
        proc.send_signal(signal.SIGKILL)                     # mid-generation: the driver dies, NNI's manager stays
        proc.wait()
    exp_id = json.loads((rd / "status.json").read_text())["nni_experiment"]
    started.append(exp_id)
    assert json.loads((rd / "status.json").read_text())["phase"] == "search"
    assert _manager_procs(exp_id), "the killed driver should have left its NNI manager running"

    out = _mednas(env, "resume", str(rd))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((rd / "status.json").read_text())["phase"] == "done"
    space = GeNASCNNSpace(**load_config(EXAMPLE).space.params)
    in_db = _nni_succeeded_hashes(rd, exp_id, space)
    trained = _trained_hashes(rd)
    assert len(in_db) == len(set(in_db)), f"an architecture was trained twice by NNI: {in_db}"
    assert len(trained) == len(set(trained)) and set(trained) == set(in_db)
    assert 2 <= len(trained) <= 4
    assert not _manager_procs(exp_id)
    log = (rd / RunDir.LOG).read_text()
    assert "stopping the orphaned manager" in log and "stopping an orphaned trial" in log
    assert "NNI resumed from the interrupted session" in log        # NNI re-ran the killed trial; we waited for it

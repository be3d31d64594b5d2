"""Remote trials without a shared file system, end to end against the real sshd on 127.0.0.1 (own HOME).

- ``training_service.data: upload``: the data set (a copy in this test's folder) travels in NNI's trial code
  folder; every remote trial ran in the uploaded copy (its working directory under the sshd's HOME), built its
  context from the uploaded config in a scratch run directory there whose data root is the uploaded data, and the
  driver's run directory holds the results in the format of a local run.
- A remote trial that fails (a learning rate that makes the training loss NaN: the hardening tests' diverging
  GeNAS training) is FAILED in NNI and recorded failed with its one-line reason in the driver's run directory
  (``trial_errors/<hash>.txt`` and ``archs.jsonl``): the reason came back through NNI as the trial's last
  intermediate metric, without a ``default`` number; the search went on through every architecture.
Skips on a user's machine without sshd; fails in CI (MEDNAS_REQUIRE_DATA=1 / CI), where .ci/run installs it.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import sqlite3

import pytest
import yaml

from _scale_out_helpers import nni_home, non_loopback, remote_search, sshd  # noqa: F401
from conftest import require_data
from mednas_nni.engines.training_service_upload import CONTEXT_FILE
from mednas_nni.engines.trial import TRIAL_ERROR_METRIC, TRIAL_ERRORS
from mednas_nni.io import RunDir, read_jsonl

MHSMA_64_HEAD = [f"{x}_{s}.npy" for x in ("x_64", "y_head") for s in ("train", "valid", "test")]


def _trials(rd, exp_id) -> tuple[sqlite3.Connection, dict[str, str]]:
    """NNI's database and ``{trial id: last event}``."""
    db = sqlite3.connect(rd / "nni" / exp_id / "db" / "nni.sqlite")
    last = {j: e for j, e in db.execute("select trialJobId, event from TrialJobEvent order by timestamp")}
    return db, last


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.nni
def test_remote_trials_read_the_uploaded_data_and_config(sshd, tmp_path, nni_home) -> None:
    src = require_data("mhsma")
    data = tmp_path / "hospital" / "mhsma"        # the driver's data, in a folder of this test (hard-linkable)
    data.mkdir(parents=True)
    for name in MHSMA_64_HEAD:
        shutil.copyfile(src / name, data / name)
    env, home = nni_home
    r = remote_search(sshd, tmp_path / "runs", env, home, f"data.params.root={data}", "training_service.data=upload")
    assert r.returncode == 0, r.stderr[-3000:]
    rd, exp_id = r.run_dir, r.exp_id
    # (this search is also the suite's remote search on two workers: the manager on loopback only, and below every
    # trial on the remote, NNI's upgrade skipped, the results in a local run's format)
    info = json.loads((rd / "nni_experiment.json").read_text())
    assert info["platform"] == "remote" and info["listens_on"] == "127.0.0.1" and len(info["machines"]) == 2
    assert ("127.0.0.1", r.port) in {(ip, p) for ip, p, _ in r.listening} and not non_loopback(r.listening), \
        r.listening

    # what travelled: the code folder holds the config (no training_service: no keys or machine list) and the data,
    # hard-linked on this machine
    code = rd / "nni" / "trial_code"
    sent = yaml.safe_load((code / "config.resolved.yaml").read_text())
    assert sent["data"]["params"]["root"] == "data/root" and "training_service" not in sent
    assert json.loads((code / CONTEXT_FILE).read_text()) == {"run_dir": str(rd), "config": "config.resolved.yaml",
                                                             "data": "upload", "uploaded": ["root"]}
    assert sorted(p.name for p in (code / "data" / "root").iterdir()) == sorted(MHSMA_64_HEAD)
    assert os.stat(code / "data" / "root" / "x_64_train.npy").st_ino == os.stat(data / "x_64_train.npy").st_ino

    # every trial ran on the "remote" in the uploaded copy and read the uploaded data: its scratch run directory
    # (under its working directory in the sshd's HOME) holds the config as the worker resolved it
    db, last = _trials(rd, exp_id)
    envs = sshd.remote_home / "nni-experiments" / exp_id / "environments"
    scratch = {d.name: d for d in envs.glob("remote-worker*/upload/trial_code/scratch/*")}
    assert last and set(scratch) == set(last), (last, scratch)
    for trial, folder in scratch.items():
        upload = folder.parent.parent
        assert (upload / "data" / "root" / "x_64_train.npy").read_bytes() == (data / "x_64_train.npy").read_bytes()
        used = yaml.safe_load((folder / RunDir.CONFIG).read_text())
        assert used["data"]["params"]["root"] == str(upload / "data" / "root"), (trial, used["data"])
        assert str(rd) not in (folder / RunDir.CONFIG).read_text()     # nothing of the driver's paths in use
        log = (envs / upload.parent.parent.name / "trials" / trial / "trial.log").read_text()
        assert "context from the uploaded config" in log, log[-2000:]
    assert not list((rd / "nni" / exp_id).glob("trials/*/trial.log"))          # no trial ran on the driver
    skipped = list((sshd.remote_home / ".mednas-nni").glob("nni-python-*/skipped.log"))
    assert skipped and len(skipped[0].read_text().splitlines()) >= 2     # one skipped upgrade per worker

    # the results in the format of a local run (as in tests/genas/test_genas_nni.py)
    ok = [rec for rec in read_jsonl(rd / RunDir.ARCHS) if rec["status"] == "ok"]
    assert ok and sum(e == "SUCCEEDED" for e in last.values()) == len(ok)
    assert set(ok[0]) == {"batch", "describe", "hash", "metrics", "sample", "seconds", "status"}
    kinds = collections.Counter(t for (t,) in db.execute("select type from MetricData"))
    assert kinds == {"PERIODICAL": len(ok), "FINAL": len(ok)}
    finals = [json.loads(json.loads(d)) for (d,) in db.execute("select data from MetricData where type='FINAL'")]
    # what the remote trial reported, and the architecture it names for the web UI (built from the uploaded config)
    assert sorted(json.dumps(f, sort_keys=True) for f in finals) == sorted(
        json.dumps({**rec["metrics"], "hash": rec["hash"], "describe": rec["describe"]}, sort_keys=True) for rec in ok)
    assert {"default", "fitness", "val_f05", "val_balanced_acc", "history"} <= set(finals[0])
    assert finals[0]["default"] == finals[0]["val_balanced_acc"]
    metrics = json.loads((rd / RunDir.METRICS).read_text())
    assert metrics["strategy"] == "genas_wf" and metrics["selected_by"] == "val_balanced_acc"
    assert {"test", "val", "baseline_test", "best_finalist"} <= set(metrics)
    assert not (rd / TRIAL_ERRORS).exists()


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.nni
def test_a_failing_remote_trial_is_recorded_with_its_reason(sshd, tmp_path, nni_home) -> None:
    require_data("mhsma")
    env, home = nni_home
    # lr 1e30: the first update makes the loss NaN (FloatingPointError in the trial, on the remote); the data stays
    # where it is (data: same_path, the default) and the run directory is not needed there
    r = remote_search(sshd, tmp_path / "runs", env, home, "strategy.params.lr=1e30", workers=1)
    rd, exp_id = r.run_dir, r.exp_id
    records = read_jsonl(rd / RunDir.ARCHS)
    failed = [rec for rec in records if rec["status"] == "failed"]
    reason = "FloatingPointError: training loss became nan"

    # every architecture was trained (the search went on after the first failure) and each failed, with the
    # remote trial's own one-line reason, not the engine's "the trial ended with status FAILED"
    db, last = _trials(rd, exp_id)
    assert len(failed) >= 2 and len(last) == len(failed) and set(last.values()) == {"FAILED"}, (records, last)
    assert all(rec["error"].startswith(reason) for rec in failed), failed
    for rec in failed:
        text = (rd / TRIAL_ERRORS / f"{rec['hash']}.txt").read_text()
        assert text.startswith(reason) and "sent by the remote trial through NNI" in text
    # the channel: one intermediate metric per trial carrying the reason, with no 'default' for the web UI to show
    periodical = [json.loads(json.loads(d)) for (d,) in db.execute("select data from MetricData where "
                                                                   "type='PERIODICAL'")]
    assert len(periodical) == len(failed) and all(set(m) == {TRIAL_ERROR_METRIC} for m in periodical), periodical
    assert not list(db.execute("select 1 from MetricData where type='FINAL'"))
    # ... and the run ends as a local one does when every architecture failed: one line naming the first reason
    assert r.returncode == 1 and "the search produced no finalist" in r.stderr and reason in r.stderr, r.stderr[-2000:]
    # the worker kept the traceback in its scratch run directory, under the trial's working directory
    envs = sshd.remote_home / "nni-experiments" / exp_id / "environments"
    kept = list(envs.glob(f"remote-worker*/upload/trial_code/scratch/*/{TRIAL_ERRORS}/*.txt"))
    assert len(kept) == len(failed) and "Traceback" in kept[0].read_text()

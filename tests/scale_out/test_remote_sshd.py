"""NNI's remote training service end to end against a real sshd on 127.0.0.1 (a throwaway key, own HOME).

- the SSH preflight's one-line errors (an interpreter that is missing / not executable / lacks the packages, a
  refused key) and the reverse tunnel carrying a remote loopback port to this machine;
- a small GeNAS-WF search whose trials run on two remote workers of that sshd: every trial ran in the remote's
  working directory, NNI's 'pip install nni --upgrade' was skipped, nothing of the experiment listened on a
  non-loopback address, and the results have the format of a local run (the search loop's records hold exactly
  what the remote trials reported; intermediate + final metrics in NNI's database; the finalist tested).
Skips on a user's machine without sshd; fails in CI (MEDNAS_REQUIRE_DATA=1 / CI), where .ci/run installs it.
"""
from __future__ import annotations

import collections
import json
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from _scale_out_helpers import nni_home, non_loopback, remote_search, sshd  # noqa: F401
from _sshd import free_port
from conftest import require_data
from mednas_nni.engines.training_service import check_paths_on_remote
from mednas_nni.engines.training_service_remote import SshTarget, install_python_wrapper, preflight, reverse_tunnel
from mednas_nni.errors import ConfigError, SearchError
from mednas_nni.io import RunDir, read_jsonl


def _target(server, tmp_path, python=sys.executable, key=None) -> SshTarget:
    m = SimpleNamespace(host="127.0.0.1", port=server.port, user=server.user, ssh_key_file=key or server.key,
                        ssh_passphrase=None, password=None, python=str(python))
    return SshTarget(m, 0, tmp_path / "known_hosts", "cfg.yml")


@pytest.mark.slow
def test_preflight_accepts_the_venv_interpreter(sshd, tmp_path) -> None:
    import nni

    assert preflight(_target(sshd, tmp_path)) == {"python": f"{sys.version_info[0]}.{sys.version_info[1]}",
                                                  "nni": nni.__version__, "mednas": "0.2.0"}
    folder = install_python_wrapper(_target(sshd, tmp_path))
    assert Path(folder).parent.parent == sshd.remote_home          # written in the remote's HOME
    wrapper = Path(folder) / "python"
    skip = subprocess.run([str(wrapper), "-m", "pip", "install", "nni", "--upgrade"], capture_output=True, text=True)
    assert skip.returncode == 0 and "skipped" in skip.stdout and (Path(folder) / "skipped.log").exists()
    real = subprocess.run([str(wrapper), "-c", "import os, sys; print(sys.executable, os.environ['NODE_OPTIONS'])"],
                          capture_output=True, text=True)
    assert real.stdout.split()[0] == sys.executable                # everything else runs the real interpreter ...
    assert f'"{folder}/listen_loopback.js"' in real.stdout        # ... with NNI's trial keeper kept on loopback
    assert (Path(folder) / "listen_loopback.js").read_text().startswith("// mednas-nni")


@pytest.mark.slow
def test_preflight_one_line_errors(sshd, tmp_path) -> None:
    not_exec = tmp_path / "python"
    not_exec.write_text("#!/bin/sh\n")
    for bad in (tmp_path / "missing" / "python", not_exec, tmp_path):
        with pytest.raises(ConfigError, match=r"^cfg.yml: training_service.machines\[0\].python: expected an "
                                              r"executable interpreter on 127.0.0.1, got") as e:
            preflight(_target(sshd, tmp_path, python=bad))
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"machines\[0\]\.python: /bin/sh on 127.0.0.1 cannot import nni and "
                                          r"mednas_nni"):
        preflight(_target(sshd, tmp_path, python="/bin/sh"))
    with pytest.raises(ConfigError, match=r"^cfg.yml: training_service.machines\[0\]: data.params.root is "
                                          r"'/nonexistent/mhsma' on this machine, which does not exist on 127.0.0.1"):
        check_paths_on_remote(_target(sshd, tmp_path), {"run directory": str(tmp_path),
                                                         "data.params.root": "/nonexistent/mhsma"})
    other_key = tmp_path / "other_rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(other_key)],
                   check=True)
    with pytest.raises(SearchError, match=r"machines\[0\]: could not log in with ssh .*Permission denied"):
        preflight(_target(sshd, tmp_path, key=other_key))


@pytest.mark.slow
def test_reverse_tunnel_reaches_this_machines_loopback(sshd, tmp_path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        local_port = server.getsockname()[1]

        def answer() -> None:      # the tunnel's readiness probe connects too: answer every connection
            while True:
                conn, _ = server.accept()
                conn.sendall(b"hello from the driver\n")
                conn.close()

        threading.Thread(target=answer, daemon=True).start()
        target = _target(sshd, tmp_path)
        remote_port = free_port()
        with reverse_tunnel(target, remote_port, local_port):
            out = target.run(f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{remote_port}; head -1 <&3'", timeout=60)
        assert out.stdout.strip() == "hello from the driver"


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.nni
def test_genas_search_on_two_remote_workers_over_ssh(sshd, tmp_path, nni_home) -> None:
    require_data("mhsma")
    env, home = nni_home
    r = remote_search(sshd, tmp_path / "runs", env, home)
    assert r.returncode == 0, r.stderr[-3000:]
    rd, exp_id, port, seen = r.run_dir, r.exp_id, r.port, r.listening
    info = json.loads((rd / "nni_experiment.json").read_text())
    assert info["platform"] == "remote" and info["listens_on"] == "127.0.0.1" and len(info["machines"]) == 2
    assert ("127.0.0.1", port) in {(ip, p) for ip, p, _ in seen} and not non_loopback(seen), seen

    # every trial NNI ran, ran on the remote: its working directory is in the sshd's HOME, not in the driver's
    db = sqlite3.connect(rd / "nni" / exp_id / "db" / "nni.sqlite")
    trials = {j for (j,) in db.execute("select distinct trialJobId from TrialJobEvent")}
    succeeded = {j for (j,) in db.execute("select trialJobId from TrialJobEvent where event='SUCCEEDED'")}
    remote_envs = sshd.remote_home / "nni-experiments" / exp_id / "environments"
    ran_on = {d.name: d.parent.parent.name for d in remote_envs.glob("remote-worker*/trials/*")}
    assert trials and set(ran_on) == trials, (trials, ran_on)
    assert all((remote_envs / env_name / "trials" / t / "trial.log").exists() for t, env_name in ran_on.items())
    assert not list((rd / "nni" / exp_id).glob("trials/*/trial.log"))
    skipped = list((sshd.remote_home / ".mednas-nni").glob("nni-python-*/skipped.log"))
    assert skipped and len(skipped[0].read_text().splitlines()) >= 2     # one skipped upgrade per worker

    # results in the format of a local run: the search loop's records, the trial's final dict as NNI stored it,
    # per-epoch intermediates, the finalist tested (the same assertions as the local-service test in tests/genas)
    ok = [r for r in read_jsonl(rd / RunDir.ARCHS) if r["status"] == "ok"]
    assert ok and len(succeeded) == len(ok)
    assert set(ok[0]) == {"batch", "describe", "hash", "metrics", "sample", "seconds", "status"}
    kinds = collections.Counter(t for (t,) in db.execute("select type from MetricData"))
    assert kinds == {"PERIODICAL": len(ok), "FINAL": len(ok)}
    finals = [json.loads(json.loads(d)) for (d,) in db.execute("select data from MetricData where type='FINAL'")]
    assert sorted(json.dumps(f, sort_keys=True) for f in finals) == \
        sorted(json.dumps(r["metrics"], sort_keys=True) for r in ok)            # what the remote trial reported
    assert {"default", "fitness", "val_f05", "val_balanced_acc", "history"} <= set(finals[0])
    assert finals[0]["default"] == finals[0]["val_balanced_acc"]
    metrics = json.loads((rd / RunDir.METRICS).read_text())
    assert metrics["strategy"] == "genas_wf" and metrics["selected_by"] == "val_balanced_acc"
    assert {"test", "val", "baseline_test", "best_finalist"} <= set(metrics)

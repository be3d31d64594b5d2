"""Every NNI manager mednas starts listens on loopback only.

Fast: the Node preload (the same ``node`` binary NNI bundles) and the ``nnictl`` wrapper. Slow: a real search on
NNI's local training service, sampled with psutil while its trials run: nothing of the experiment (manager, its
children, trials) listens on a non-loopback address, and the web UI does answer on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nni_node
import psutil
import pytest

from _scale_out_helpers import experiment_processes, listening_addresses, nni_home, non_loopback  # noqa: F401
from _sshd import free_port
from conftest import REPO, require_data
from mednas_nni.engines.nni_loopback import HOST_ENV, is_loopback, loopback_manager
from mednas_nni.engines.nni_process import stop_nni_experiment

NODE = str(Path(nni_node.__path__[0]) / "node")
# listen() the ways NNI's servers do: express app.listen(port) (REST server), listen(port, host) (common/restServer
# with a host), listen({port}) and listen(0, cb); print what each bound to.
SERVERS_JS = """
const http = require('http'); const out = {}; let left = 4;
function done(name, s) { out[name] = s.address().address; s.close(); if (--left === 0) console.log(JSON.stringify(out)); }
const a = http.createServer(); a.listen(0); a.on('listening', () => done('port_only', a));
const b = http.createServer(); b.listen(0, '0.0.0.0', () => done('explicit_any', b));
const c = http.createServer(); c.listen({port: 0}, () => done('options', c));
const d = http.createServer(); d.listen(() => done('no_args', d));
"""


def _bound(env: dict) -> dict:
    out = subprocess.run([NODE, "-e", SERVERS_JS], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_preload_binds_host_less_listens_to_loopback_and_is_reversible() -> None:
    before = dict(os.environ)
    plain = _bound(before)
    assert plain["port_only"] in ("::", "0.0.0.0")             # what NNI's REST server does without us
    with loopback_manager():
        bound = _bound(dict(os.environ))
    assert dict(os.environ) == before                        # NODE_OPTIONS and the host variable are restored
    assert bound == {"port_only": "127.0.0.1", "explicit_any": "0.0.0.0", "options": "127.0.0.1",
                     "no_args": "127.0.0.1"}
    with loopback_manager("localhost"):
        assert _bound(dict(os.environ))["port_only"] == "127.0.0.1"
    with loopback_manager("10.0.0.5") as where:               # the user's explicit other address: NNI's default
        assert where == "0.0.0.0" and dict(os.environ) == before
    with loopback_manager():                                  # the preload honours its host variable
        assert _bound({**os.environ, HOST_ENV: "::1"})["port_only"] == "::1"


def test_nnictl_wrapper_runs_the_command_with_the_preload() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_OPTIONS", HOST_ENV)}
    out = subprocess.run([sys.executable, "-m", "mednas_nni.engines.nni_loopback", NODE, "-e", SERVERS_JS],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["port_only"] == "127.0.0.1"


def test_is_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.5", "::", "gpu1.example.org"))


def _is_trial(p: psutil.Process) -> bool:
    try:
        return bool(p.environ().get("NNI_TRIAL_JOB_ID"))
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _lan_ipv4() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.nni
def test_nothing_listens_on_a_non_loopback_address_during_a_local_search(tmp_path, nni_home) -> None:
    require_data("mhsma")
    env, home = nni_home
    port = free_port()
    args = [sys.executable, "-m", "mednas_nni", "search", str(REPO / "examples" / "genas_mhsma.yml"),
            "engine.kind=local", "strategy.params.population_size=2", "strategy.params.generations=1",
            f"engine.port={port}", f"run.out_dir={tmp_path}/runs", "strategy.params.epochs_per_trial=1",
            "strategy.params.max_batches_per_epoch=2", "strategy.params.torch_threads=1",
            "strategy.params.tournament_size=2", "--no-progress"]
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    exp_id, seen, trial_seen = None, set(), False
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not trial_seen:
            runs = list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
            if runs and (runs[0] / "status.json").exists():
                exp_id = json.loads((runs[0] / "status.json").read_text()).get("nni_experiment") or exp_id
            if exp_id:
                procs = experiment_processes(exp_id, proc.pid)
                seen |= listening_addresses(procs)
                trial_seen = any(_is_trial(p) for p in procs)
            time.sleep(0.2)
        assert exp_id and trial_seen, f"no trial started: {proc.stderr.read()[-2000:] if proc.poll() else ''}"
        assert (("127.0.0.1", port) in {(ip, p) for ip, p, _ in seen}), seen   # the manager did listen, on loopback
        assert not non_loopback(seen), f"listening on a non-loopback address: {non_loopback(seen)}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/check-status", timeout=20) as r:
            assert r.status == 200
        lan = _lan_ipv4()
        if lan is not None:                                   # the REST API does not answer on the LAN address
            with socket.socket() as s:
                s.settimeout(5)
                assert s.connect_ex((lan, port)) != 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if exp_id:
            stop_nni_experiment(exp_id, manifest=home / "nni-experiments" / ".experiment")

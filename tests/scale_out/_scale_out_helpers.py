"""Shared by the scale-out tests (import the fixtures): a throwaway sshd on 127.0.0.1 (skip on a user's machine
when it cannot start, fail in CI), an isolated NNI HOME, listening-socket sampling, a ``mednas search`` with its
trials on that sshd."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from _sshd import LoopbackSshd, free_port, sshd_unavailable, start_sshd
from conftest import REPO

EXAMPLE = REPO / "examples" / "genas_mhsma.yml"
TINY = ["strategy.params.population_size=2", "strategy.params.generations=1", "strategy.params.epochs_per_trial=1",
        "strategy.params.max_batches_per_epoch=2", "strategy.params.top_k=1", "strategy.params.tournament_size=2",
        "strategy.params.torch_threads=1", "evaluator.epochs=1", "evaluator.max_batches_per_epoch=1"]


def _ci() -> bool:
    return os.environ.get("MEDNAS_REQUIRE_DATA") == "1" or bool(os.environ.get("CI"))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> LoopbackSshd:
    why = sshd_unavailable()
    if why is None:
        try:
            server = start_sshd(tmp_path_factory.mktemp("sshd"))
        except (RuntimeError, OSError) as e:
            why = f"sshd could not start: {e}"
    if why is not None:
        if _ci():
            pytest.fail(f"{why} (CI must run the remote test: .ci/run installs openssh-server)")
        pytest.skip(why)
    yield server
    server.stop()


@pytest.fixture
def nni_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "NNI_CONFIG_DIR": str(home / "nni-config"), "PYTHONWARNINGS": "ignore"}
    return env, home


def experiment_processes(exp_id: str, driver_pid: int | None = None) -> list[psutil.Process]:
    """The NNI manager of ``exp_id`` and its children, every process with ``NNI_EXP_ID=exp_id`` (trials, trial
    keepers), and the driver's process tree."""
    out: dict[int, psutil.Process] = {}
    roots = []
    if driver_pid is not None:
        try:
            roots.append(psutil.Process(driver_pid))
        except psutil.NoSuchProcess:
            pass
    for p in psutil.process_iter(["cmdline"]):
        try:
            if exp_id in " ".join(p.info["cmdline"] or []) or p.environ().get("NNI_EXP_ID") == exp_id:
                roots.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    for r in roots:
        try:
            for p in [r, *r.children(recursive=True)]:
                out[p.pid] = p
        except psutil.NoSuchProcess:
            pass
    return list(out.values())


def listening_addresses(procs: list[psutil.Process]) -> set[tuple[str, int, str]]:
    """``(ip, port, process name)`` of every TCP socket in LISTEN state owned by ``procs``."""
    out = set()
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.add((c.laddr.ip, c.laddr.port, p.name()))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def non_loopback(addresses: set[tuple[str, int, str]]) -> set[tuple[str, int, str]]:
    return {a for a in addresses if not ipaddress.ip_address(a[0].split("%")[0]).is_loopback}


def machine_yaml(server: LoopbackSshd) -> str:
    """One ``training_service.machines`` entry for the loopback sshd (flow YAML for a KEY=VALUE override)."""
    return (f"{{host: 127.0.0.1, port: {server.port}, user: {server.user}, ssh_key_file: {server.key}, "
            f"python: {sys.executable}}}")


@dataclass
class RemoteSearch:
    returncode: int
    stdout: str
    stderr: str
    run_dir: Path
    exp_id: str | None
    port: int
    listening: set[tuple[str, int, str]]


def remote_search(server: LoopbackSshd, out_dir: Path, env: dict[str, str], home: Path, *overrides: str,
                  workers: int = 2, timeout: float = 900.0) -> RemoteSearch:
    """``mednas search`` of examples/genas_mhsma.yml (:data:`TINY`) with its trials on ``workers`` machines of the
    loopback sshd, sampling the experiment's listening sockets while it runs; the experiment is stopped by its id."""
    port = free_port()
    machines = ", ".join([machine_yaml(server)] * workers)
    args = [sys.executable, "-m", "mednas_nni", "search", str(EXAMPLE), "engine.kind=local", *TINY,
            f"engine.port={port}", f"engine.trial_concurrency={workers}", f"run.out_dir={out_dir}",
            "training_service.platform=remote", f"training_service.machines=[{machines}]", *overrides, "--no-progress"]
    from mednas_nni.engines.nni_process import stop_nni_experiment

    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, exp_id, t0 = set(), None, time.time()
    try:
        while proc.poll() is None and time.time() - t0 < timeout:
            runs = list(out_dir.glob("*")) if out_dir.exists() else []
            if runs and (runs[0] / "status.json").exists():
                try:
                    exp_id = json.loads((runs[0] / "status.json").read_text()).get("nni_experiment") or exp_id
                except json.JSONDecodeError:        # read while replaced: the next sample gets it
                    pass
            if exp_id:
                seen |= listening_addresses(experiment_processes(exp_id, proc.pid))
            time.sleep(0.3)
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if exp_id:
            stop_nni_experiment(exp_id, manifest=home / "nni-experiments" / ".experiment")
    return RemoteSearch(proc.returncode, stdout, stderr, next(out_dir.iterdir()), exp_id, port, seen)

"""Shared by the scale-out tests (import the fixtures): a throwaway sshd on 127.0.0.1 (skip on a user's machine
when it cannot start, fail in CI), an isolated NNI HOME, listening-socket sampling."""
from __future__ import annotations

import ipaddress
import os

import psutil
import pytest

from _sshd import LoopbackSshd, sshd_unavailable, start_sshd


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

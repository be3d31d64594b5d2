"""NNI's remote training service end to end against a real sshd on 127.0.0.1 (a throwaway key, own HOME).

- the SSH preflight's one-line errors (an interpreter that is missing / not executable / lacks the packages, a
  refused key) and the reverse tunnel carrying a remote loopback port to this machine;
- the GeNAS-WF search on two remote workers of that sshd is in test_remote_no_shared_fs.py (one search checks both
  the remote service and the trial code upload).
Skips on a user's machine without sshd; fails in CI (MEDNAS_REQUIRE_DATA=1 / CI), where .ci/run installs it.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from _scale_out_helpers import sshd  # noqa: F401 (fixture)
from _sshd import free_port
from mednas_nni.engines.training_service import check_paths_on_remote
from mednas_nni.engines.training_service_remote import SshTarget, install_python_wrapper, preflight, reverse_tunnel
from mednas_nni.errors import ConfigError, SearchError


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


# The remote GeNAS-WF search on two workers (manager on loopback only, every trial on the remote, NNI's upgrade
# skipped, results in a local run's format) is tests/scale_out/test_remote_no_shared_fs.py's search with
# data: upload, so the suite runs one remote search instead of two.

"""SSH chores around NNI's remote training service: preflight, the ``pip install nni --upgrade`` guard, tunnels.

NNI's remote worker (``nni_node/training_service/remote_v3/worker.js``) logs in with its own SSH library; mednas
uses the system ``ssh`` client (OpenSSH) with the same key for three things NNI does not do:

- :func:`preflight`: before the experiment starts, check that the machine answers, that ``python`` is an
  executable interpreter there and that it imports ``nni`` and ``mednas_nni`` (one-line errors naming
  ``training_service.machines[i]``), instead of an NNI experiment that waits for a worker forever.
- :func:`install_python_wrapper`: NNI finds its interpreter through ``pythonPath`` (a folder); mednas points it at
  a folder on the remote holding a small ``python`` shell wrapper that ``exec``s the real interpreter with two
  changes: NNI's ``<python> -m pip install nni --upgrade`` at start (it needs registry access there and may change
  the remote environment) is answered with a no-op (``skip_nni_upgrade``), and the trial keeper NNI launches (a
  Node.js server for the trials on that machine, which would listen on every interface) gets the loopback preload
  of :mod:`~mednas_nni.engines.nni_loopback` through ``NODE_OPTIONS``.
- :func:`reverse_tunnel`: the NNI manager listens on 127.0.0.1 only; a remote trial keeper connects back to
  ``ws://localhost:PORT`` (NNI's default without ``nniManagerIp``), which ``ssh -N -R PORT:127.0.0.1:PORT`` carries
  to this machine's loopback.

Host keys: trust on first use, recorded per run directory (``<run>/nni/known_hosts``, ``StrictHostKeyChecking
accept-new``); a changed key on resume is refused by ``ssh``. A key passphrase (or an allowed password) is fed to
``ssh`` through ``SSH_ASKPASS`` from the environment, never a command line.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SearchError

__all__ = ["SshTarget", "preflight", "install_python_wrapper", "reverse_tunnel", "WRAPPER_TEMPLATE"]

_logger = logging.getLogger(__name__)

#: NNI's interpreter on a remote machine: a shell wrapper around the real one (``{python}``), see
#: :func:`install_python_wrapper`; ``{skip}`` is :data:`SKIP_UPGRADE` or empty
WRAPPER_TEMPLATE = """#!/bin/sh
# mednas-nni: the interpreter NNI's remote worker uses on this machine (training_service: remote).
# NNI's trial keeper here is a Node.js server for the local trials that would listen on every interface: the preload
# beside this file gives its host-less listen() 127.0.0.1.
export MEDNAS_NNI_LISTEN_HOST=127.0.0.1
export NODE_OPTIONS="--require \\"$(dirname "$0")/listen_loopback.js\\"${{NODE_OPTIONS:+ $NODE_OPTIONS}}"
{skip}exec {python} "$@"
"""

#: NNI runs '<python> -m pip install nni --upgrade' at start (remote_v3/worker.js): skip exactly that call
SKIP_UPGRADE = """if [ "$#" -eq 5 ] && [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "install" ] && [ "$4" = "nni" ] && [ "$5" = "--upgrade" ]; then
  echo "$(date -u +%FT%TZ) skipped NNI's 'pip install nni --upgrade'" >> "$(dirname "$0")/skipped.log"
  echo "mednas-nni: skipped 'pip install nni --upgrade' (training_service.skip_nni_upgrade)"; exit 0
fi
"""

_ASKPASS = "#!/bin/sh\nprintf '%s\\n' \"$MEDNAS_SSH_SECRET\"\n"


class SshTarget:
    """One ``training_service.machines[i]`` as the system ``ssh`` client sees it."""

    def __init__(self, machine: Any, index: int, known_hosts: Path, source: str = "<config>"):
        self.m, self.index, self.known_hosts, self.source = machine, index, Path(known_hosts), source
        self.where = f"{source}: training_service.machines[{index}]"

    def __str__(self) -> str:
        return f"{self.m.user}@{self.m.host}:{self.m.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        secret = self.m.ssh_passphrase if self.m.ssh_passphrase is not None else self.m.password
        if secret is not None:
            askpass = self.known_hosts.parent / ".askpass.sh"
            if not askpass.exists():
                askpass.write_text(_ASKPASS)
                askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", MEDNAS_SSH_SECRET=secret,
                       DISPLAY=env.get("DISPLAY", ":0"))
        return env

    def argv(self, *extra: str) -> list[str]:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise SearchError(f"{self.where}: the 'ssh' client (OpenSSH) is needed on this machine for the remote "
                              "preflight; install openssh-client")
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        opts = ["-p", str(self.m.port), "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR",
                "-o", "ServerAliveInterval=15"]
        if self.m.ssh_key_file is not None:
            opts += ["-i", str(self.m.ssh_key_file), "-o", "IdentitiesOnly=yes"]
        if self.m.ssh_passphrase is None and self.m.password is None:
            opts += ["-o", "BatchMode=yes"]
        else:
            opts += ["-o", "NumberOfPasswordPrompts=1"]
        return [ssh, *opts, *extra, f"{self.m.user}@{self.m.host}"]

    def run(self, command: str, stdin: str | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([*self.argv(), command], input=stdin, capture_output=True, text=True,
                                  timeout=timeout, env=self._env(), stdin=None if stdin is not None else
                                  subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SearchError(f"{self.where}: ssh {self} did not answer within {timeout:.0f} s") from None

    def checked(self, command: str, what: str, stdin: str | None = None) -> str:
        out = self.run(command, stdin=stdin)
        if out.returncode == 255:
            last = (out.stderr.strip().splitlines() or ["no message"])[-1]
            raise SearchError(f"{self.where}: could not log in with ssh {self} (key "
                              f"{self.m.ssh_key_file}): {last}")
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or out.stdout.strip().splitlines() or ["no message"])[-1]
            raise SearchError(f"{self.where}: {what} failed on {self.m.host} (exit {out.returncode}): {last}")
        return out.stdout


_PROBE = ("import sys, nni, mednas_nni; "
          "print(sys.version_info[0], sys.version_info[1], nni.__version__, getattr(mednas_nni, '__version__', '?'))")


def preflight(target: SshTarget) -> dict[str, str]:
    """Log in, check the interpreter and its packages; return ``{python, nni, mednas}`` versions of the remote."""
    py = shlex.quote(target.m.python)
    cmd = (f"if [ ! -x {py} ] || [ -d {py} ]; then echo MEDNAS_NO_PYTHON; exit 0; fi; "
           f"{py} -c {shlex.quote(_PROBE)} 2>&1 || echo MEDNAS_NO_PACKAGES")
    out = target.checked(cmd, "the interpreter check").strip()
    if "MEDNAS_NO_PYTHON" in out:
        raise ConfigError(f"{target.where}.python: expected an executable interpreter on {target.m.host}, got "
                          f"{target.m.python!r} (missing, a folder or not executable for {target.m.user})")
    if "MEDNAS_NO_PACKAGES" in out:
        lines = [ln for ln in out.splitlines() if ln.strip() and "MEDNAS_NO_PACKAGES" not in ln]
        raise ConfigError(f"{target.where}.python: {target.m.python} on {target.m.host} cannot import nni and "
                          f"mednas_nni ({lines[-1] if lines else 'no message'}); install mednas-nni there")
    major, minor, nni_v, mednas_v = out.splitlines()[-1].split()
    import nni

    if nni_v != nni.__version__:
        _logger.warning("machine %s has nni %s, this driver nni %s: NNI expects the same version on both", target,
                        nni_v, nni.__version__)
    return {"python": f"{major}.{minor}", "nni": nni_v, "mednas": mednas_v}


def install_python_wrapper(target: SshTarget, skip_nni_upgrade: bool = True) -> str:
    """Install the interpreter wrapper and the loopback preload on the remote; return the remote folder to give NNI
    as ``pythonPath`` (NNI then runs ``python`` from there: its ssh commands and the trial keeper it launches)."""
    from .nni_loopback import PRELOAD_JS

    tag = hashlib.sha1(target.m.python.encode()).hexdigest()[:10]
    script = WRAPPER_TEMPLATE.format(python=shlex.quote(target.m.python), skip=SKIP_UPGRADE if skip_nni_upgrade else "")
    folder = f'"$HOME/.mednas-nni/nni-python-{tag}"'
    for name, text, mode in (("listen_loopback.js", PRELOAD_JS, "644"), ("python", script, "755")):
        cmd = (f'd={folder} && mkdir -p "$d" && cat > "$d/{name}.tmp" && chmod {mode} "$d/{name}.tmp" && '
               f'mv -f "$d/{name}.tmp" "$d/{name}" && echo "$d"')
        out = target.checked(cmd, f"installing the interpreter wrapper ({name})", stdin=text)
    remote = out.strip().splitlines()[-1]
    _logger.info("machine %s: NNI runs %s/python (trial keeper on 127.0.0.1%s)", target, remote,
                 "; 'pip install nni --upgrade' skipped" if skip_nni_upgrade else "")
    return remote


@contextlib.contextmanager
def reverse_tunnel(target: SshTarget, remote_port: int, local_port: int, timeout: float = 30.0) -> Iterator[None]:
    """``ssh -N -R remote_port:127.0.0.1:local_port``: the remote's loopback ``remote_port`` reaches this machine's
    loopback ``local_port`` while inside (the NNI manager stays on 127.0.0.1)."""
    argv = target.argv("-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{remote_port}:127.0.0.1:{local_port}")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=target._env(), text=True)
    probe = f"(exec 3<>/dev/tcp/127.0.0.1/{remote_port}) 2>/dev/null && echo open || echo closed"
    t0 = time.time()
    try:
        while True:
            if proc.poll() is not None:
                err = (proc.stderr.read().strip().splitlines() if proc.stderr else []) or ["no message"]
                raise SearchError(f"{target.where}: the reverse tunnel {remote_port} -> 127.0.0.1:{local_port} "
                                  f"over ssh {target} failed: {err[-1]}")
            if target.run(f"bash -c {shlex.quote(probe)}", timeout=30).stdout.strip() == "open":
                break
            if time.time() - t0 > timeout:
                raise SearchError(f"{target.where}: the reverse tunnel to {target} did not open within "
                                  f"{timeout:.0f} s")
            time.sleep(0.5)
        _logger.info("reverse tunnel %s:127.0.0.1:%d -> this machine's 127.0.0.1:%d", target.m.host, remote_port,
                     local_port)
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

"""A throwaway OpenSSH server on 127.0.0.1 (a free port) acting as a "remote machine" for NNI's remote service.

Own host key and client key (RSA PEM, which NNI's SSH library reads) in a temporary folder, key-only login of the
current user, ``ListenAddress 127.0.0.1``, and ``SetEnv HOME=<folder>/remote-home`` so that everything NNI's remote
worker writes (``~/nni-experiments/...``, the interpreter wrapper) stays in the temporary folder.
:func:`sshd_unavailable` says why it cannot run here (no ``sshd`` binary, ...); tests skip on that on a user's
machine and fail in CI (``MEDNAS_REQUIRE_DATA=1`` or ``CI`` set).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


def sshd_binary() -> str | None:
    return shutil.which("sshd") or next((c for c in SSHD_CANDIDATES if os.access(c, os.X_OK)), None)


def sshd_unavailable() -> str | None:
    if sshd_binary() is None:
        return "no sshd binary (Debian: apt-get install openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"no {tool} binary (Debian: apt-get install openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackSshd:
    folder: Path
    port: int
    user: str
    key: Path
    remote_home: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sshd(folder: Path, timeout: float = 20.0) -> LoopbackSshd:
    """Start sshd on 127.0.0.1:<free port>; raise RuntimeError with sshd's own message if it does not come up."""
    import getpass

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    home = folder / "remote-home"
    home.mkdir(exist_ok=True)
    host_key, key = folder / "host_ed25519", folder / "client_rsa"
    for path, kind in ((host_key, ["-t", "ed25519"]), (key, ["-t", "rsa", "-b", "2048", "-m", "PEM"])):
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", *kind, "-N", "", "-f", str(path)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_rsa.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)    # sshd's privilege-separation folder
    port = free_port()
    cfg = folder / "sshd_config"
    cfg.write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}", f"HostKey {host_key}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
        "UsePAM no", "Subsystem sftp internal-sftp", "StrictModes no", "AllowTcpForwarding yes",
        "X11Forwarding no", "PrintMotd no",
        f"SetEnv HOME={home}", "LogLevel ERROR", ""]))
    log = open(folder / "sshd.log", "w")
    proc = subprocess.Popen([sshd_binary(), "-D", "-e", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {(folder / 'sshd.log').read_text()[-500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return LoopbackSshd(folder, port, getpass.getuser(), key, home, proc)
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout:.0f} s")

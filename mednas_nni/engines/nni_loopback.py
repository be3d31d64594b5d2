"""Keep every NNI manager that mednas starts on the loopback interface.

NNI 3.0's manager REST server (web UI, trial list, parameters, logs, experiment control; no authentication) does
``app.listen(port)`` (``nni_node/rest_server/index.js``), i.e. it listens on **every** interface, and NNI has no
host option (NNI_NOTES §0). Editing NNI's installed JavaScript would not survive ``pip install``; instead, when
mednas launches a manager it puts a small Node.js preload script on ``NODE_OPTIONS=--require <script>``: the
script wraps ``net.Server.prototype.listen`` so that a TCP ``listen`` *without* a host gets one (``127.0.0.1`` by
default). A ``listen`` that names its host, and Unix sockets/pipes, are untouched. NNI spawns ``node`` with the
caller's environment (``nni/experiment/launcher.py``), so setting the variable around the launch is enough, and
:func:`loopback_manager` restores the caller's environment afterwards (reversible: nothing on disk of NNI changes).

Remote viewing: keep the manager on loopback and tunnel, ``ssh -N -L 8080:127.0.0.1:PORT user@driver-host``,
then browse ``http://127.0.0.1:8080`` on your own machine.

``nnictl`` experiments launched by hand get the same treatment through
``python -m mednas_nni.engines.nni_loopback nnictl create --config X.yml --port P``.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOOPBACK", "PRELOAD_JS", "preload_script", "node_options", "loopback_manager", "is_loopback", "main"]

_logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
HOST_ENV = "MEDNAS_NNI_LISTEN_HOST"

#: The preload (kept as text so that it ships inside the wheel without package data; written out on use).
PRELOAD_JS = r"""// mednas-nni: give every TCP listen() without a host the host in MEDNAS_NNI_LISTEN_HOST (default 127.0.0.1).
// NNI 3.0's REST server calls app.listen(port) (all interfaces, no authentication). Loaded with node --require.
'use strict';
const net = require('net');
const host = process.env.MEDNAS_NNI_LISTEN_HOST || '127.0.0.1';
const listen = net.Server.prototype.listen;
function isPort(v) { return typeof v === 'number' || (typeof v === 'string' && /^\d+$/.test(v)); }
net.Server.prototype.listen = function (...args) {
  if (args.length === 0 || args[0] === undefined || args[0] === null) {
    args = [0, host, ...args.slice(1)];
  } else if (typeof args[0] === 'function') {
    args = [0, host, ...args];
  } else if (isPort(args[0])) {
    if (args[1] === undefined || args[1] === null) { args[1] = host; }
    else if (typeof args[1] !== 'string') { args.splice(1, 0, host); }
  } else if (typeof args[0] === 'object' && args[0].path === undefined && args[0].handle === undefined
             && args[0]._handle === undefined && args[0].fd === undefined && !args[0].host) {
    args[0] = Object.assign({}, args[0], { host: host });
  }
  return listen.apply(this, args);
};
"""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and every loopback address (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def preload_script(folder: str | Path | None = None) -> Path:
    """Write :data:`PRELOAD_JS` into ``folder`` (default: a per-user temporary folder) and return its path."""
    from ..io import atomic_write_text

    d = Path(folder) if folder is not None else Path(tempfile.gettempdir()) / f"mednas-nni-{os.getuid()}"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / "listen_loopback.js"
    if not path.exists() or path.read_text(encoding="utf-8") != PRELOAD_JS:
        atomic_write_text(path, PRELOAD_JS)
    return path


def node_options(script: Path, existing: str | None = None) -> str:
    """``NODE_OPTIONS`` with ``--require script`` added to what the caller had."""
    req = f'--require "{script}"' if " " in str(script) else f"--require {script}"
    return f"{existing} {req}".strip() if existing else req


@contextlib.contextmanager
def loopback_manager(host: str = LOOPBACK, folder: str | Path | None = None) -> Iterator[str]:
    """While inside, an NNI manager launched from this process listens on 127.0.0.1 only. Yields the address.

    ``host`` is ``training_service.manager_host``. Any loopback value keeps the manager on 127.0.0.1 (NNI's own
    clients, the launcher and the tuner, connect to ``localhost``). Another value is the user's explicit choice
    (remote workers or cluster pods reach the manager there): NNI then keeps its default, every interface, and a
    warning is logged, because the manager's REST API has no authentication.
    """
    if not is_loopback(host):
        _logger.warning("the NNI manager will listen on every interface (training_service.manager_host: %s): its "
                        "REST API and web UI have no authentication; anyone who reaches this machine's port can read "
                        "and control the experiment (firewall it)", host)
        yield "0.0.0.0"
        return
    saved = {k: os.environ.get(k) for k in ("NODE_OPTIONS", HOST_ENV)}
    os.environ["NODE_OPTIONS"] = node_options(preload_script(folder), saved["NODE_OPTIONS"])
    os.environ[HOST_ENV] = LOOPBACK
    try:
        yield LOOPBACK
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    """``python -m mednas_nni.engines.nni_loopback COMMAND...``: run COMMAND (e.g. ``nnictl create ...``) so that
    the NNI manager it starts listens on 127.0.0.1 only."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if args else 2
    with loopback_manager():
        os.execvp(args[0], args)
    return 0  # pragma: no cover (exec does not return)


if __name__ == "__main__":
    sys.exit(main())

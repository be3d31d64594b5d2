"""From the ``training_service`` config section to what NNI's ``NasExperiment`` needs, prepared for launch.

:func:`prepared_training_service` (a context manager around the experiment's life) returns a
:class:`PreparedService`: NNI's training-service config object (``LocalConfig``, ``RemoteConfig`` or NNI's own
Kubeflow/FrameworkController config), the interpreter of the trial command, the trial code folder NNI uploads and
the address the manager listens on. For ``remote`` it runs the SSH preflight, installs the ``pip install nni
--upgrade`` guard and opens the reverse tunnels (:mod:`~mednas_nni.engines.training_service_remote`), and closes
the tunnels on exit.

What travels to a remote trial: the architecture, evaluator and its arguments travel inside NNI's trial parameters
(the simplified model format); NNI uploads the trial code folder, which mednas keeps to a small folder of its own
(``<run>/nni/trial_code``, :mod:`~mednas_nni.engines.training_service_upload`) instead of the driver's working
directory (NNI would otherwise tar that folder, e.g. a checkout with its virtual environment). It holds the run's
resolved config and, with ``training_service.data: upload``, the data; a trial builds its context from it in a
scratch run directory on the worker. Metrics come back through NNI's channel, and so does a failed trial's
one-line reason (:mod:`~mednas_nni.engines.trial`). The driver's run directory never has to exist on a worker; with
``data: same_path`` (default) the data paths must (checked over SSH by :func:`check_paths_on_remote`).
"""
from __future__ import annotations

import contextlib
import logging
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_training_service import check_remote_environment, validate_nni_cluster_config
from ..errors import ConfigError
from .nni_loopback import is_loopback
from .training_service_remote import SshTarget, install_python_wrapper, preflight, reverse_tunnel
from .training_service_upload import data_paths, plan_data_upload, write_trial_code_dir

__all__ = ["PreparedService", "prepared_training_service", "check_paths_on_remote", "remote_data_paths",
           "check_remote_config"]

_logger = logging.getLogger(__name__)


@dataclass
class PreparedService:
    """What :func:`~mednas_nni.engines.nni_local.run_local` hands to NNI."""

    platform: str
    nni_config: Any                       # an NNI TrainingServiceConfig
    manager_host: str = "127.0.0.1"
    trial_python: str | None = None       # None: the driver's interpreter (local)
    code_dir: Path | None = None          # None: NNI's default (the driver's working directory; local only)
    machines: list[dict[str, Any]] = field(default_factory=list)   # for nni_experiment.json


def _remote_machine_config(m: Any, python_path: str) -> Any:
    from nni.experiment.config import RemoteMachineConfig

    kw: dict[str, Any] = dict(host=m.host, port=m.port, user=m.user, python_path=python_path,
                              use_active_gpu=m.use_active_gpu, max_trial_number_per_gpu=m.max_trial_number_per_gpu)
    if m.ssh_key_file is not None:
        kw["ssh_key_file"] = str(m.ssh_key_file)
    if m.ssh_passphrase is not None:
        kw["ssh_passphrase"] = m.ssh_passphrase
    if m.password is not None:
        kw["password"] = m.password
    if m.gpu_indices is not None:
        kw["gpu_indices"] = list(m.gpu_indices)
    return RemoteMachineConfig(**kw)


def check_paths_on_remote(target: SshTarget, paths: dict[str, str]) -> None:
    """Every ``{config field: absolute path}`` exists on the remote (``training_service.data: same_path``)."""
    if not paths:
        return
    tests = " ; ".join(f"[ -e {shlex.quote(p)} ] || echo MISSING {shlex.quote(k)}" for k, p in paths.items())
    out = target.checked(tests + " ; true", "the data path check")
    missing = [ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("MISSING ")]
    if missing:
        k = missing[0]
        raise ConfigError(f"{target.where}: {k} is {paths[k]!r} on this machine, which does not exist on "
                          f"{target.m.host} (training_service.data: same_path): put the data at the same path there "
                          "(or a shared folder), or set training_service.data: upload")


def remote_data_paths(cfg: Any) -> dict[str, str]:
    """``{'data.params.<field>': path}`` that must exist on every worker (none with ``data: upload``)."""
    if cfg.training_service.data == "upload":
        return {}
    return {f"data.params.{k}": str(v) for k, v in data_paths(cfg).items()}


def check_remote_config(cfg: Any, known_hosts: Path, ssh: bool = True) -> list[str]:
    """What ``mednas validate`` checks of a remote config beyond :func:`~mednas_nni.config.load_config`: every host
    resolves and every key file is readable, a data upload fits NNI's limit, and with ``ssh``: the SSH preflight
    of every machine (login, interpreter, nni and mednas_nni there) and, with ``data: same_path``, the data paths
    there. Changes nothing on the machines; returns one summary line per machine. One-line errors."""
    ts = cfg.training_service
    if ts.platform != "remote":
        return []
    check_remote_environment(cfg)
    if ts.data == "upload":
        plan_data_upload(cfg)
    lines = []
    for i, m in enumerate(ts.machines):
        t = SshTarget(m, i, known_hosts, cfg.source)
        if not ssh:
            lines.append(f"machines[{i}] {t}: host resolves, key readable (SSH not checked: --no-ssh)")
            continue
        v = preflight(t)
        check_paths_on_remote(t, remote_data_paths(cfg))
        lines.append(f"machines[{i}] {t}: python {v['python']}, nni {v['nni']}, mednas-nni {v['mednas']}"
                     + (", data paths present" if ts.data == "same_path" else ""))
    return lines


@contextlib.contextmanager
def prepared_training_service(cfg: Any, run_dir: Path, port: int) -> Iterator[PreparedService]:
    """Prepare ``cfg.training_service`` for an experiment whose manager will listen on ``port``."""
    ts = cfg.training_service
    eng = cfg.engine
    if ts.platform == "local":
        from nni.experiment.config import LocalConfig

        yield PreparedService("local", LocalConfig(use_active_gpu=eng.use_active_gpu), ts.manager_host)
        return
    if ts.platform in ("kubeflow", "frameworkcontroller"):
        nni_cfg = validate_nni_cluster_config(ts.platform, ts.nni, cfg.source)
        if nni_cfg.nni_manager_ip is None:
            nni_cfg.nni_manager_ip = ts.manager_host
        yield PreparedService(ts.platform, nni_cfg, ts.manager_host, trial_python="python3",
                              code_dir=write_trial_code_dir(cfg, run_dir))
        return
    yield from _prepared_remote(cfg, run_dir, port)


def _prepared_remote(cfg: Any, run_dir: Path, port: int) -> Iterator[PreparedService]:
    from nni.experiment.config import RemoteConfig

    ts = cfg.training_service
    check_remote_environment(cfg)
    known_hosts = Path(run_dir) / "nni" / "known_hosts"
    targets = [SshTarget(m, i, known_hosts, cfg.source) for i, m in enumerate(ts.machines)]
    far = [t for t in targets if not is_loopback(t.m.host)]
    if far and is_loopback(ts.manager_host) and not ts.reverse_tunnel:
        raise ConfigError(f"{cfg.source}: training_service.reverse_tunnel: machine {far[0]} cannot reach a manager "
                          "on 127.0.0.1 without it: expected reverse_tunnel: true, or manager_host set to an "
                          "address the machines reach (the REST API has no authentication), got false")
    code_dir = write_trial_code_dir(cfg, Path(run_dir))     # refuses an oversized data upload before any SSH
    remote_paths = remote_data_paths(cfg)
    machines, summary = [], []
    for t in targets:
        versions = preflight(t)
        check_paths_on_remote(t, remote_paths)
        python_path = install_python_wrapper(t, ts.skip_nni_upgrade)
        machines.append(_remote_machine_config(t.m, python_path))
        summary.append({"host": t.m.host, "port": t.m.port, "user": t.m.user, "python": t.m.python, **versions,
                        "python_path": python_path})
        _logger.info("remote machine %s ready: python %s, nni %s, mednas-nni %s", t, versions["python"],
                     versions["nni"], versions["mednas"])
    if any(m.password is not None for m in ts.machines):
        _logger.warning("a remote machine logs in with a password: NNI shows it in its web UI in plain text")
    # Trial keepers connect back to ws://<nniManagerIp>:PORT: the manager's own address when it is not on loopback,
    # else 127.0.0.1 on the worker (this machine, or the worker's end of the reverse tunnel).
    tunnel = is_loopback(ts.manager_host)
    nni_manager_ip = "127.0.0.1" if tunnel else ts.manager_host
    # reuse_mode False: NNI 3.0's maintained remote service (remote_v3: one trial keeper per machine over SSH)
    rc = RemoteConfig(machine_list=machines, reuse_mode=False, nni_manager_ip=nni_manager_ip)
    with contextlib.ExitStack() as stack:
        if tunnel:
            for t in far:
                stack.enter_context(reverse_tunnel(t, port, port))
        yield PreparedService("remote", rc, ts.manager_host, trial_python=ts.machines[0].python,
                              code_dir=code_dir, machines=summary)


"""The ``training_service`` config section: where NNI runs the trials of a multi-trial search (``engine.kind: local``).

``platform: local`` (default) runs trials on this machine; ``remote`` runs them over SSH on ``machines`` (NNI's
remote training service); ``kubeflow`` / ``frameworkcontroller`` hand NNI's own camelCase training-service config
(``nni:``) to NNI, which validates it with its config classes (:func:`validate_nni_cluster_config`).

Two layers of checks, both one-line :class:`~mednas_nni.errors.ConfigError` naming ``training_service.<field>``:

- :func:`check_training_service` (called by :func:`~mednas_nni.config.load_config`): static rules: a remote
  machine needs an absolute ``python`` (NNI's trial shell does not get ``pythonPath``, NNI_NOTES §6), one interpreter
  path for all machines (NNI has one trial command), an SSH key, no ``password`` unless ``allow_password: true``
  (NNI shows it in the web UI in plain text), the manager on loopback unless the platform needs the cluster to reach
  it. Relative key paths resolve against the YAML's folder.
- :func:`check_remote_environment` (called when a search starts and by ``mednas validate``, never in a trial
  process, where the driver's key files and DNS do not exist): the host resolves, the key file exists and is
  readable. Whether the interpreter exists on the remote is checked over SSH by
  :mod:`mednas_nni.engines.training_service_remote` (at search start, and by ``mednas validate`` unless
  ``--no-ssh``).

``data`` says how a remote trial finds the data set: ``same_path`` (default) or ``upload``, see
:class:`TrainingServiceConfig`.
"""
from __future__ import annotations

import socket
import traceback
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError

__all__ = ["RemoteMachine", "TrainingServiceConfig", "check_training_service", "check_remote_environment",
           "validate_nni_cluster_config", "CLUSTER_PLATFORMS"]

#: platforms whose trials run in a cluster that has to reach the NNI manager over the network
CLUSTER_PLATFORMS = ("kubeflow", "frameworkcontroller")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class RemoteMachine(_Section):
    """One SSH worker (NNI's ``RemoteMachineConfig``, snake_case)."""

    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str
    ssh_key_file: Path | None = None
    ssh_passphrase: str | None = None
    password: str | None = None        # rejected unless training_service.allow_password (NNI shows it in its web UI)
    python: str                        # absolute interpreter on that machine (with nni and mednas-nni installed)
    use_active_gpu: bool = False
    max_trial_number_per_gpu: int = Field(1, ge=1)
    gpu_indices: list[int] | None = None


class TrainingServiceConfig(_Section):
    """Where NNI runs the trials (see the module docstring).

    The run directory never has to exist on a remote machine: the run's resolved config travels in NNI's trial
    code folder (``<run>/nni/trial_code``, uploaded by NNI to every worker) and what a trial produces comes back
    through NNI (metrics, and a failed trial's one-line reason). ``data`` says how a remote trial finds the data:

    - ``same_path`` (default): the data paths of ``data.params`` exist at the same absolute paths on every machine
      (a shared or mirrored folder); checked over SSH before the search. It is the default because a hospital user
      does not expect patient images to be copied to other machines unless they ask for it: an uploaded copy stays
      on every worker (NNI leaves ``~/nni-experiments/<id>/`` behind) and in NNI's tarball in the run folder.
    - ``upload``: the data paths of ``data.params`` are copied (hard links where the file system allows) into the
      trial code folder, and the uploaded config points at that copy. Refused with a one-line error above NNI's
      own code-folder limit (2000 files, 300 MB; ``nni_node/common/tarball.js``), where NNI would fail later.
    """

    platform: Literal["local", "remote", "kubeflow", "frameworkcontroller"] = "local"
    # 127.0.0.1 (default): the NNI manager (REST API + web UI, no authentication) listens on loopback only. Another
    # value is the address workers / cluster pods use to reach this machine (NNI's nniManagerIp); the manager then
    # listens on every interface (NNI's default; warned).
    manager_host: str = "127.0.0.1"
    machines: list[RemoteMachine] = Field(default_factory=list)
    allow_password: bool = False
    # NNI's remote worker runs '<python> -m pip install nni --upgrade' on every machine at start (NNI_NOTES §6):
    # True makes it a no-op (mednas installs a tiny interpreter wrapper on the remote that skips exactly that call).
    skip_nni_upgrade: bool = True
    # Remote machines that are not this host reach the loopback-only manager through 'ssh -R PORT:127.0.0.1:PORT'.
    reverse_tunnel: bool = True
    nni: dict[str, Any] = Field(default_factory=dict)   # kubeflow / frameworkcontroller: NNI's own config (camelCase)
    # how a remote trial finds the data set (see the class docstring)
    data: Literal["same_path", "upload"] = "same_path"


def _err(source: str, field: str, what: str) -> ConfigError:
    return ConfigError(f"{source}: training_service.{field}: {what}")


def _is_loopback(host: str) -> bool:
    from .engines.nni_loopback import is_loopback

    return is_loopback(host)


def check_training_service(cfg: Any, base_dir: Path) -> None:
    """Static checks of ``cfg.training_service`` (see the module docstring); resolves relative key paths in place."""
    ts: TrainingServiceConfig = cfg.training_service
    src = cfg.source
    if ts.platform != "local" and cfg.engine.kind != "local":
        raise _err(src, "platform", f"'{ts.platform}' runs trials through NNI's training service: expected "
                                    f"engine.kind: local, got engine.kind: {cfg.engine.kind}")
    if ts.platform != "remote" and ts.machines:
        raise _err(src, "machines", f"only used with platform: remote, got platform: {ts.platform}")
    if ts.platform not in CLUSTER_PLATFORMS and ts.nni:
        raise _err(src, "nni", f"only used with platform kubeflow or frameworkcontroller, got platform: {ts.platform}")
    if ts.data == "upload" and ts.platform != "remote":
        raise _err(src, "data", f"'upload' copies the data into the code folder NNI uploads to remote machines: "
                                f"expected platform: remote, got platform: {ts.platform}")
    if ts.platform == "remote":
        _check_machines(src, ts, base_dir)
    if ts.platform in CLUSTER_PLATFORMS:
        if _is_loopback(ts.manager_host):
            raise _err(src, "manager_host", f"{ts.platform} trials run in cluster pods that connect back to the NNI "
                       "manager: expected an address of this machine the cluster reaches (the manager's REST API "
                       f"has no authentication: firewall it), got {ts.manager_host!r}")
        validate_nni_cluster_config(ts.platform, ts.nni, src)


def _check_machines(src: str, ts: TrainingServiceConfig, base_dir: Path) -> None:
    if not ts.machines:
        raise _err(src, "machines", "platform remote needs at least one machine (host, user, ssh_key_file, "
                                    "python), got none")
    for i, m in enumerate(ts.machines):
        where = f"machines[{i}]"
        if m.password is not None and not ts.allow_password:
            raise _err(src, f"{where}.password", "passwords are not accepted (NNI shows them in its web UI in plain "
                       "text): expected ssh_key_file, got a password (allow_password: true overrides)")
        if m.ssh_key_file is None and m.password is None:
            raise _err(src, f"{where}.ssh_key_file", "required for SSH login, got none")
        if m.ssh_key_file is not None:
            p = m.ssh_key_file.expanduser()
            m.ssh_key_file = p if p.is_absolute() else (base_dir / p).resolve()
        if not (PurePosixPath(m.python).is_absolute() or PureWindowsPath(m.python).is_absolute()):
            raise _err(src, f"{where}.python", "expected the absolute path of the interpreter on that machine (NNI's "
                       f"trial shell does not get pythonPath, so 'python' may not be the one with nni), got "
                       f"{m.python!r}")
        if m.python != ts.machines[0].python:
            raise _err(src, f"{where}.python", "NNI runs one trial command on every machine: expected the same "
                       f"interpreter path as machines[0] ({ts.machines[0].python}), got {m.python!r}")


def check_remote_environment(cfg: Any) -> None:
    """Checks that need this machine: every remote host resolves and every SSH key file is a readable file."""
    ts: TrainingServiceConfig = cfg.training_service
    if ts.platform != "remote":
        return
    for i, m in enumerate(ts.machines):
        where = f"machines[{i}]"
        try:
            socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise _err(cfg.source, f"{where}.host", f"unknown host: expected a host name or address this machine "
                       f"resolves, got {m.host!r} ({getattr(e, 'strerror', None) or e})") from None
        if m.ssh_key_file is not None:
            key = Path(m.ssh_key_file)
            if not key.is_file():
                raise _err(cfg.source, f"{where}.ssh_key_file", f"expected a private key file, got "
                           f"{str(key)!r} ({'a folder' if key.exists() else 'no such file'})")
            try:
                with key.open("rb") as f:
                    f.read(1)
            except OSError as e:
                raise _err(cfg.source, f"{where}.ssh_key_file", f"expected a readable private key file, got "
                           f"{str(key)!r} ({e.strerror})") from None


def validate_nni_cluster_config(platform: str, nni_config: dict[str, Any], source: str = "<config>") -> Any:
    """Validate NNI's own ``kubeflow`` / ``frameworkcontroller`` config with NNI's config classes (the same code
    ``nnictl`` and ``NasExperiment`` run); return the canonical NNI training-service object."""
    import logging

    from nni.nas.experiment import NasExperimentConfig

    raw = {**nni_config, "platform": platform}
    nni_logger = logging.getLogger("nni")
    level = nni_logger.level
    nni_logger.setLevel(logging.ERROR)    # NNI warns that nniManagerIp is unset while it canonicalises
    try:
        cfg = NasExperimentConfig("ts", "simplified", training_service=raw, trial_concurrency=1)
        canon = cfg.canonical_copy()
        canon.validate()
    except (AttributeError, TypeError, ValueError, AssertionError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if not msg:   # NNI asserts without a message: show the failed condition
            frames = traceback.extract_tb(e.__traceback__)
            msg = f"NNI's check failed: {frames[-1].line}" if frames else type(e).__name__
        raise _err(source, "nni", f"not a valid NNI {platform} config: {msg}") from None
    finally:
        nni_logger.setLevel(level)
    return canon.training_service

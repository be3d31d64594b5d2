"""The ``training_service`` section: one-line errors for what a user gets wrong, and the Kubeflow /
FrameworkController examples validated by NNI's own config classes (no cluster here: schema only)."""
from __future__ import annotations

import pytest

from conftest import REPO
from mednas_nni.config import load_config
from mednas_nni.config_training_service import check_remote_environment, validate_nni_cluster_config
from mednas_nni.errors import ConfigError

REMOTE = REPO / "examples" / "genas_mhsma_remote.yml"
KUBEFLOW = REPO / "examples" / "genas_mhsma_kubeflow_remote.yml"
FRAMEWORKCONTROLLER = REPO / "examples" / "genas_mhsma_frameworkcontroller_remote.yml"


def _machine(**kw) -> str:
    m = {"host": "127.0.0.1", "user": "alice", "ssh_key_file": "/nonexistent/key", "python": "/opt/venv/bin/python",
         **kw}
    return "{" + ", ".join(f"{k}: {v}" for k, v in m.items()) + "}"


def _load(*overrides: str, path=REMOTE):
    return load_config(path, list(overrides), validate_plugins=False)


def _one_line_error(*overrides: str, path=REMOTE, env: bool = False) -> str:
    with pytest.raises(ConfigError) as e:
        cfg = _load(*overrides, path=path)
        if env:
            check_remote_environment(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_remote_example_loads_with_absolute_keys_and_loopback_manager() -> None:
    cfg = _load()
    ts = cfg.training_service
    assert ts.platform == "remote" and ts.manager_host == "127.0.0.1" and ts.skip_nni_upgrade
    assert len(ts.machines) == 2 and all(m.ssh_key_file.is_absolute() for m in ts.machines)
    assert load_config(REPO / "examples" / "genas_mhsma.yml", validate_plugins=False).training_service.platform == \
        "local"


def test_unknown_host(tmp_path) -> None:
    key = tmp_path / "id_rsa"
    key.write_text("not checked here")
    msg = _one_line_error(f"training_service.machines=[{_machine(host='no-such-host.invalid', ssh_key_file=key)}]",
                          env=True)
    assert "training_service.machines[0].host: unknown host" in msg and "'no-such-host.invalid'" in msg


def test_missing_key_file(tmp_path) -> None:
    msg = _one_line_error(f"training_service.machines=[{_machine(ssh_key_file=tmp_path / 'nokey')}]", env=True)
    assert "training_service.machines[0].ssh_key_file: expected a private key file" in msg and "no such file" in msg
    msg = _one_line_error(f"training_service.machines=[{_machine(ssh_key_file=tmp_path)}]", env=True)
    assert "a folder" in msg


def test_relative_key_resolves_against_the_yaml_folder(tmp_path) -> None:
    yml = tmp_path / "cfg.yml"
    yml.write_text(REMOTE.read_text())
    cfg = load_config(yml, [f"training_service.machines=[{_machine(ssh_key_file='keys/id_rsa')}]"],
                      validate_plugins=False)
    assert cfg.training_service.machines[0].ssh_key_file == tmp_path / "keys" / "id_rsa"


@pytest.mark.parametrize("python", ["python3", "venv/bin/python"])
def test_interpreter_must_be_absolute(python) -> None:
    msg = _one_line_error(f"training_service.machines=[{_machine(python=python)}]")
    assert "training_service.machines[0].python: expected the absolute path of the interpreter" in msg
    assert repr(python) in msg


def test_one_interpreter_path_for_every_machine() -> None:
    msg = _one_line_error(f"training_service.machines=[{_machine()}, {_machine(python='/usr/bin/python3')}]")
    assert "training_service.machines[1].python: NNI runs one trial command" in msg


def test_password_refused_where_only_keys_are_allowed() -> None:
    msg = _one_line_error(f"training_service.machines=[{_machine(password='hunter2')}]")
    assert "training_service.machines[0].password: passwords are not accepted" in msg and "hunter2" not in msg
    cfg = _load(f"training_service.machines=[{_machine(password='hunter2')}]", "training_service.allow_password=true")
    assert cfg.training_service.machines[0].password == "hunter2"


def test_no_key_and_no_password() -> None:
    m = "{host: 127.0.0.1, user: alice, python: /opt/venv/bin/python}"
    assert "machines[0].ssh_key_file: required" in _one_line_error(f"training_service.machines=[{m}]")


def test_platform_needs_nni_training_service_engine_and_machines() -> None:
    assert "expected engine.kind: local, got engine.kind: sequential" in _one_line_error("engine.kind=sequential")
    assert "training_service.machines: platform remote needs at least one machine" in \
        _one_line_error("training_service.machines=[]")
    assert "training_service.machines: only used with platform: remote" in \
        _one_line_error("training_service.platform=local")
    assert "training_service.machines.0.host: required field is missing" in _one_line_error(
        "training_service.machines=[{user: a, ssh_key_file: /k, python: /p}]")   # pydantic: required field


def test_unknown_key_in_a_machine() -> None:
    msg = _one_line_error(f"training_service.machines=[{_machine(pythonPath='/opt/venv/bin')}]")
    assert "pythonPath" in msg


@pytest.mark.parametrize("path, cls", [(KUBEFLOW, "KubeflowConfig"), (FRAMEWORKCONTROLLER,
                                                                         "FrameworkControllerConfig")])
def test_cluster_examples_validate_with_nni_config_classes(path, cls) -> None:
    cfg = _load(path=path)
    ts = cfg.training_service
    nni_cfg = validate_nni_cluster_config(ts.platform, ts.nni)
    assert type(nni_cfg).__name__ == cls and nni_cfg.platform == ts.platform
    assert nni_cfg.storage.storage_type == "nfs" and nni_cfg.reuse_mode is True


def test_cluster_config_errors_come_from_nni() -> None:
    assert "not a valid NNI kubeflow config" in _one_line_error("training_service.nni.operator=foo", path=KUBEFLOW)
    msg = _one_line_error("training_service.nni.wokrer={replicas: 1}", path=KUBEFLOW)
    assert "training_service.nni: not a valid NNI kubeflow config" in msg and "wokrer" in msg
    msg = _one_line_error("training_service.nni.taskRoles=oops", path=FRAMEWORKCONTROLLER)
    assert "training_service.nni: not a valid NNI frameworkcontroller config" in msg
    assert "manager_host: kubeflow trials run in cluster pods" in _one_line_error(
        "training_service.manager_host=127.0.0.1", path=KUBEFLOW)


def test_far_machine_without_tunnel_cannot_reach_a_loopback_manager(tmp_path) -> None:
    from mednas_nni.engines.training_service import prepared_training_service

    key = tmp_path / "id_rsa"
    key.write_text("checked before any login")
    cfg = _load(f"training_service.machines=[{_machine(host='10.255.255.1', ssh_key_file=key)}]",
                "training_service.reverse_tunnel=false")
    with pytest.raises(ConfigError, match=r"training_service.reverse_tunnel: machine alice@10.255.255.1:22 cannot "
                                          r"reach a manager on 127.0.0.1"):
        with prepared_training_service(cfg, tmp_path, 8746):
            pass

"""``mednas validate`` of a config with ``training_service.platform: remote`` runs the checks a search runs before it
starts: the static ones of load_config (a password where only keys are allowed), this machine's (an unknown host, a
missing key file, a data upload over NNI's limit) and, over SSH against the real sshd on 127.0.0.1, the preflight
(an interpreter that is missing or lacks the packages, a refused key). Each: one line on stderr, a non-zero exit,
no traceback; nothing is written on the machine. ``--no-ssh`` skips the login."""
from __future__ import annotations

import subprocess
import sys

import pytest

from _scale_out_helpers import EXAMPLE, sshd  # noqa: F401
from conftest import require_data
from mednas_nni.cli import main


def _machine(host="127.0.0.1", port=22, user="alice", key="/nonexistent/key", python=sys.executable, extra="") -> str:
    return f"{{host: {host}, port: {port}, user: {user}, ssh_key_file: {key}, python: {python}{extra}}}"


def _validate(capsys, tmp_path, *machines: str, more=(), flags=()) -> tuple[int, str, str]:
    require_data("mhsma")
    code = main(["validate", str(EXAMPLE), "training_service.platform=remote",
                 f"training_service.machines=[{', '.join(machines)}]", f"run.out_dir={tmp_path}/runs", *more, *flags])
    out, err = capsys.readouterr()
    if code != 0:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return code, out, err


@pytest.mark.data
def test_errors_found_on_this_machine(capsys, tmp_path) -> None:
    key = tmp_path / "id_rsa"
    key.write_text("a key")
    code, _, err = _validate(capsys, tmp_path, _machine(host="no-such-host.invalid", key=key))
    assert code == 2 and "training_service.machines[0].host: unknown host" in err and "no-such-host.invalid" in err
    code, _, err = _validate(capsys, tmp_path, _machine(key=tmp_path / "nokey"))
    assert code == 2 and "training_service.machines[0].ssh_key_file: expected a private key file" in err
    assert "no such file" in err
    code, _, err = _validate(capsys, tmp_path, _machine(key=key, extra=", password: hunter2"))
    assert code == 2 and "training_service.machines[0].password: passwords are not accepted" in err
    assert "hunter2" not in err
    code, _, err = _validate(capsys, tmp_path, _machine(python="python3", key=key))
    assert code == 2 and "machines[0].python: expected the absolute path of the interpreter" in err
    code, out, _ = _validate(capsys, tmp_path, _machine(key=key), flags=["--no-ssh"])
    assert code == 0 and "training_service.machines[0] alice@127.0.0.1:22: host resolves, key readable (SSH not " \
                         "checked: --no-ssh)" in out


@pytest.mark.data
def test_an_upload_over_nnis_limit(capsys, tmp_path) -> None:
    src = require_data("mhsma")
    data = tmp_path / "mhsma"
    data.mkdir()
    for f in src.glob("*_64_*.npy"):
        (data / f.name).symlink_to(f)
    for f in src.glob("y_head_*.npy"):
        (data / f.name).symlink_to(f)
    with open(data / "scans.bin", "wb") as f:
        f.truncate(301 * 2**20)                      # sparse
    key = tmp_path / "id_rsa"
    key.write_text("a key")
    code, _, err = _validate(capsys, tmp_path, _machine(key=key), more=[f"data.params.root={data}",
                                                                        "training_service.data=upload"],
                             flags=["--no-ssh"])
    assert code == 2 and "training_service.data: 'upload' copies data.params.root" in err and "NNI's limit" in err


@pytest.mark.data
@pytest.mark.slow
def test_ssh_preflight_errors_and_success(sshd, capsys, tmp_path) -> None:  # noqa: F811
    def machine(**kw):
        return _machine(port=sshd.port, user=sshd.user, key=sshd.key, **kw)

    code, _, err = _validate(capsys, tmp_path, machine(python=tmp_path / "missing" / "python"))
    assert code == 2 and "training_service.machines[0].python: expected an executable interpreter on 127.0.0.1" in err
    code, _, err = _validate(capsys, tmp_path, machine(python="/bin/sh"))      # runs, but imports nothing
    assert code == 2 and "machines[0].python: /bin/sh on 127.0.0.1 cannot import nni and mednas_nni" in err
    other = tmp_path / "other_rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(other)], check=True)
    code, _, err = _validate(capsys, tmp_path, _machine(port=sshd.port, user=sshd.user, key=other))
    assert code == 1 and "training_service.machines[0]: could not log in with ssh" in err
    code, out, _ = _validate(capsys, tmp_path, machine(), machine())
    assert code == 0, out
    import nni

    for i in (0, 1):
        assert f"training_service.machines[{i}] {sshd.user}@127.0.0.1:{sshd.port}: python " \
               f"{sys.version_info[0]}.{sys.version_info[1]}, nni {nni.__version__}, mednas-nni" in out
    assert "data paths present" in out
    # validate changes nothing on the machine (no interpreter wrapper, no NNI folder)
    assert not (sshd.remote_home / ".mednas-nni").exists() and not (sshd.remote_home / "nni-experiments").exists()

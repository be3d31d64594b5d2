"""What travels with a remote trial (the trial code folder NNI uploads), without sshd: the folder's content, NNI's
size limit as a one-line error, and a trial in an uploaded copy whose driver run directory does not exist on its
machine (context from the uploaded config in a scratch run directory; a failure kept there and sent to NNI)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml

from conftest import REPO, require_data
from mednas_nni.config import load_config
from mednas_nni.engines import trial as trial_mod
from mednas_nni.engines.training_service_upload import (CODE_DIR_MAX_BYTES, CODE_DIR_MAX_FILES, CONTEXT_FILE,
                                                        write_trial_code_dir)
from mednas_nni.errors import ConfigError

EXAMPLE = REPO / "examples" / "genas_mhsma.yml"
FILES = [f"{x}_{s}.npy" for x in ("x_64", "y_head") for s in ("train", "valid", "test")]
MACHINE = "{host: 127.0.0.1, user: alice, ssh_key_file: /nonexistent/key, python: /opt/venv/bin/python, " \
          "password: secret}"


def _data(tmp_path):
    src = require_data("mhsma")
    d = tmp_path / "hospital" / "mhsma"
    d.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(src / name, d / name)
    return d


def _cfg(root, *more):
    return load_config(EXAMPLE, [f"data.params.root={root}", "training_service.platform=remote",
                                 f"training_service.machines=[{MACHINE}]", "training_service.allow_password=true",
                                 "training_service.data=upload", *more])


@pytest.mark.data
def test_the_code_folder_carries_config_and_hard_linked_data_but_no_secrets(tmp_path) -> None:
    data = _data(tmp_path)
    run = tmp_path / "run"
    code = write_trial_code_dir(_cfg(data), run)
    assert code == run / "nni" / "trial_code"
    text = (code / "config.resolved.yaml").read_text()
    sent = yaml.safe_load(text)
    assert sent["data"]["params"]["root"] == "data/root" and "training_service" not in sent and "secret" not in text
    assert json.loads((code / CONTEXT_FILE).read_text())["run_dir"] == str(run)
    for name in FILES:
        assert os.stat(code / "data" / "root" / name).st_ino == os.stat(data / name).st_ino   # a hard link
    # same_path (the default) uploads no data and keeps the absolute path
    code = write_trial_code_dir(_cfg(data, "training_service.data=same_path"), run)
    assert not (code / "data").exists()
    assert yaml.safe_load((code / "config.resolved.yaml").read_text())["data"]["params"]["root"] == str(data)


@pytest.mark.data
def test_an_upload_over_nnis_limit_is_a_one_line_error(tmp_path) -> None:
    data = _data(tmp_path)
    with open(data / "big.bin", "wb") as f:         # sparse: counts its size, takes no disk
        f.truncate(CODE_DIR_MAX_BYTES + 1)
    with pytest.raises(ConfigError) as e:
        write_trial_code_dir(_cfg(data), tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{EXAMPLE}: training_service.data: 'upload' copies data.params.root")
    assert "expected at most 2000 files and 300 MB in all (NNI's limit)" in msg and "use data: same_path" in msg
    assert not (tmp_path / "run" / "nni" / "trial_code" / "data").exists()      # refused before copying
    (data / "big.bin").unlink()
    for i in range(CODE_DIR_MAX_FILES):
        (data / f"f{i}").touch()
    with pytest.raises(ConfigError, match=r"training_service.data: .* got 2009 files"):
        write_trial_code_dir(_cfg(data), tmp_path / "run")


def test_upload_needs_the_remote_platform() -> None:
    with pytest.raises(ConfigError, match=r"training_service.data: 'upload' copies the data into the code folder "
                                          r"NNI uploads to remote machines: expected platform: remote, got platform: "
                                          r"local"):
        load_config(EXAMPLE, ["training_service.data=upload"], validate_plugins=False)


@pytest.mark.data
def test_a_trial_in_the_uploaded_copy_never_uses_the_drivers_run_directory(tmp_path, monkeypatch) -> None:
    data = _data(tmp_path)
    run = tmp_path / "run"
    code = write_trial_code_dir(_cfg(data, "run.device=cpu"), run)
    worker = tmp_path / "worker" / "upload" / "trial_code"     # what NNI's trial keeper unpacks on a worker
    shutil.copytree(code, worker)
    shutil.rmtree(run)                                          # the driver's run directory is not on this machine
    monkeypatch.setenv("NNI_CODE_DIR", str(worker))
    monkeypatch.setenv("NNI_TRIAL_JOB_ID", "Ab1cD")
    monkeypatch.setattr(trial_mod, "_CONTEXTS", {})
    assert trial_mod.uploaded_code_dir(run) == worker and trial_mod.uploaded_code_dir(tmp_path / "other") is None
    ctx = trial_mod.context_for(run)
    assert ctx.run_dir.path == worker / "scratch" / "Ab1cD"
    assert ctx.cfg.data.params["root"] == str(worker / "data" / "root")
    sent = []
    monkeypatch.setattr("nni.report_intermediate_result", sent.append)
    with pytest.raises(ValueError):                 # an unknown fitness: the trial function raises at once
        trial_mod.run_trial(None, sample={"depth": 2}, run_dir=str(run), trial_function=
                            "mednas_nni.strategies._train_trial:train_and_score", trial_kwargs={"epochs": 1,
                                                                                                "fitness": "nope"})
    assert len(sent) == 1 and set(sent[0]) == {trial_mod.TRIAL_ERROR_METRIC}
    assert sent[0][trial_mod.TRIAL_ERROR_METRIC].startswith("ValueError: ") and "\n" not in sent[0]["mednas_error"]
    kept = list((ctx.run_dir.path / trial_mod.TRIAL_ERRORS).glob("*.txt"))
    assert len(kept) == 1 and "Traceback" in kept[0].read_text()
    assert not run.exists()                          # never created on the worker

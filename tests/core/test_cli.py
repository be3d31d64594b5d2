"""The mednas command line as a user meets it: output, one-line errors and exit codes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from mednas_nni.cli import main


def test_list_shows_plugins_by_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("search_spaces:", "strategies:", "exporters:", "datasets:"):
        assert kind in out
    assert "zc_nsga2" in out and "[mednas-nni]" in out and "mstf_cell" in out


def test_validate_ok_and_show(capsys, tmp_path):
    assert main(["validate", "--show", str(_cfg(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "ok (medmnist / mstf_cell / zc_nsga2)" in out and "crossover_prob" in out


@pytest.mark.parametrize("args, code, match", [
    (["validate", "{tmp}/nope.yaml"], 2, "nope.yaml: config file not found"),
    (["validate", "{cfg}", "strategy.params.pop_size=1"], 2, "strategy.params.pop_size: expected greater than"),
    (["validate", "{cfg}", "strategy.name=nsga"], 2, "unknown strategy 'nsga'"),
    (["validate", "{cfg}", "bogus.x=1"], 2, "unknown key 'bogus'"),
    (["search", "{cfg}", "other.yaml"], 2, "expected KEY=VALUE after the config file"),
    (["resume", "{tmp}"], 2, "not a run directory; expected config.resolved.yaml"),
])
def test_user_errors_are_one_line_with_exit_code(capsys, tmp_path, args, code, match):
    cfg = _cfg(tmp_path)
    argv = [a.format(tmp=tmp_path, cfg=cfg) for a in args]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and err.startswith("mednas: ")
    assert "Traceback" not in err


def test_debug_shows_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mednas_nni", "--debug", "validate", str(tmp_path / "x.yaml")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr


def _cfg(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({
        "data": {"name": "medmnist", "params": {"flag": "breastmnist"}},
        "space": {"name": "mstf_cell", "params": {"num_blocks": 1, "num_nodes": 2, "channels": 8}},
        "strategy": {"name": "zc_nsga2", "params": {"pop_size": 4, "generations": 1}},
        "run": {"out_dir": str(tmp_path / "runs")}}))
    return p

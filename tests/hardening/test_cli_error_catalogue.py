"""Every user-facing error path of the ``mednas`` command line: a non-zero exit, at most two lines on stderr, no
traceback without ``--debug`` (issue 11). In-process ``main()`` calls (the same code as the console script; a few
true subprocess calls check the real entry point). Runtime failures of a real run (disk full, a diverging
retraining, a failure before the first result) are in ``test_runtime_failures``; the untrusted state files in
``test_untrusted_run_dir``; an edited config and another version in ``test_resume_guards``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mednas_nni.cli import main
from mednas_nni.data.medmnist import bundled_root

from _runs import one_batch, started_run


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Files the error cases point at: configs, npz files of the wrong kind, run directories in several states."""
    t = tmp_path_factory.mktemp("catalogue")
    good = t / "good.yaml"
    good.write_text(yaml.safe_dump({"data": {"name": "medmnist"}, "space": {"name": "mstf_cell"},
                                    "strategy": {"name": "zc_nsga2"}, "run": {"out_dir": str(t / "runs")}}))
    (t / "bad_yaml.yaml").write_text("data: {name: medmnist\nspace: [")
    (t / "list.yaml").write_text("- 1\n- 2\n")
    official = bundled_root() / "breastmnist.npz"
    for name in ("renamed", "truncated", "reexport"):
        (t / name).mkdir()
    shutil.copy(official, t / "renamed" / "pneumoniamnist.npz")        # the right name, another set's content
    (t / "truncated" / "breastmnist.npz").write_bytes(official.read_bytes()[:50_000])
    with np.load(official) as z:                                        # a user's own re-export: same arrays
        np.savez(t / "reexport" / "breastmnist.npz", **{k: z[k] for k in z.files})
    (t / "afile").write_text("x")
    (t / "empty_dir").mkdir()
    rd, cfg = started_run(t / "runs")
    one_batch(rd, cfg)
    return {"t": t, "good": good, "run": rd.path}


def _copy_run(env, tmp_path):
    return shutil.copytree(env["run"], tmp_path / "run")


CASES = [
    # (id, argv (formatted with {t}, {good}), exit code, text the one line must hold)
    ("config file missing", ["validate", "{t}/nope.yaml"], 2, "nope.yaml: config file not found"),
    ("config is a folder", ["search", "{t}/empty_dir"], 2, "expected a file, got a folder"),
    ("invalid YAML", ["validate", "{t}/bad_yaml.yaml"], 2, "invalid YAML at line"),
    ("YAML not a mapping", ["validate", "{t}/list.yaml"], 2, "expected a mapping with sections"),
    ("unknown section", ["validate", "{good}", "bogus.x=1"], 2, "unknown key 'bogus'"),
    ("unknown param", ["validate", "{good}", "strategy.params.pop_sise=4"], 2, "did you mean 'pop_size'"),
    ("bad value", ["validate", "{good}", "strategy.params.pop_size=1"], 2, "strategy.params.pop_size: expected"),
    ("override without =", ["search", "{good}", "a.b"], 2, "expected KEY=VALUE after the config file"),
    ("unknown plugin", ["validate", "{good}", "strategy.name=nsga"], 2, "unknown strategy 'nsga'"),
    ("unknown option", ["search", "{good}", "--bogus"], 2, "unrecognized arguments: --bogus"),
    ("option after override, bad value", ["search", "{good}", "--no-progress", "strategy.params.pop_size=1"], 2,
     "strategy.params.pop_size: expected"),
    ("missing RUN_DIR", ["resume"], 2, "the following arguments are required: RUN_DIR"),
    ("unknown plugin kind", ["list", "--kind", "strategy_x"], 2, "--kind: unknown plugin kind 'strategy_x'"),
    ("data root missing", ["validate", "data.params.root={t}/missing"], 2, "root: expected an existing folder"),
    ("data file missing", ["validate", "data.params.root={t}/empty_dir"], 2, "expected breastmnist.npz in"),
    ("renamed npz", ["validate", "data.params.flag=pneumoniamnist", "data.params.root={t}/renamed"], 2,
     "it is the official breastmnist.npz (28 px)"),
    ("truncated npz", ["search", "--no-progress", "data.params.root={t}/truncated"], 2,
     "truncated/breastmnist.npz: expected a MedMNIST .npz of images and labels, got an unreadable file"),
    ("truncated npz, verify off", ["validate", "data.params.root={t}/truncated", "data.params.verify=false"], 2,
     "got an unreadable file"),
    ("re-export, verify on", ["validate", "data.params.root={t}/reexport"], 2,
     "expected the official breastmnist file at 28 px (MD5 750601b1f35ba3300ea97c75c52ff8f6), got MD5"),
    ("out_dir through a file", ["validate", "run.out_dir={t}/afile/runs"], 2, "is a file)"),
    ("resume: nothing there", ["resume", "{t}/nope"], 2, "not a run directory"),
    ("resume: not a run", ["resume", "{t}/empty_dir"], 2, "expected config.resolved.yaml in it"),
    ("resume: a file", ["resume", "{t}/afile"], 2, "got a file"),
    ("export: not a run", ["export", "{t}/empty_dir"], 2, "not a run directory"),
    ("predict: no bundle", ["predict", "{t}/nope", "{t}/afile"], 2, "nope: not a bundle"),
]


@pytest.mark.parametrize("argv, code, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_is_one_line(env, capsys, argv, code, text):
    argv = [a.format(t=env["t"], good=env["good"]) for a in argv]
    try:
        got = main(argv)
    except SystemExit as e:              # argparse's usage errors exit (one line: see cli._Parser)
        got = e.code
    err = capsys.readouterr().err
    _one_line_error(err, got, code, text)
    assert not (env["t"] / "runs").exists() or len(list((env["t"] / "runs").iterdir())) == 1   # no run folder made


def _one_line_error(err, got, code, text):
    assert got == code, err
    assert "Traceback" not in err and 1 <= len(err.splitlines()) <= 2, err
    assert text in err.splitlines()[-1], err


def _retrain_phase(rd, error=None):
    from mednas_nni.io import read_jsonl

    rec = next(r for r in read_jsonl(rd / "archs.jsonl") if r["status"] == "ok")
    (rd / "finalists.json").write_text(json.dumps([{"hash": rec["hash"], "sample": rec["sample"],
                                                    "chosen_as": "knee"}]))
    (rd / "finalists" / "0").mkdir(parents=True)
    if error:
        (rd / "finalists" / "0" / "failed.json").write_text(json.dumps({"error": error}))
    st = json.loads((rd / "status.json").read_text())
    (rd / "status.json").write_text(json.dumps({**st, "phase": "retrain", "n_finalists": 1}))
    return rec["sample"]


@pytest.mark.parametrize("damage, code, text", [
    ("status", 2, "status.json: expected JSON, got a damaged file"),
    ("state", 2, "strategy_state.json: expected the JSON strategy state, got a damaged file"),
    ("state_name", 2, "expected a version-2 state of strategy 'zc_nsga2', got version 2 of 'genas_wf'"),
    ("config", 2, "config.resolved.yaml: cannot resume"),
    ("all_finalists_failed", 1, "every finalist failed to retrain (finalist 0: diverged: training loss nan"),
])
def test_damaged_run_directory_is_one_line(env, tmp_path, capsys, damage, code, text):
    rd = _copy_run(env, tmp_path)
    if damage == "status":
        (rd / "status.json").write_text("{")
    elif damage == "state":
        (rd / "strategy_state.json").write_text('{"version": 2, "strat')
    elif damage == "state_name":
        st = json.loads((rd / "strategy_state.json").read_text())
        (rd / "strategy_state.json").write_text(json.dumps({**st, "strategy_name": "genas_wf"}))
    elif damage == "config":
        (rd / "config.resolved.yaml").write_text("strategy: {name: nsga}\n")
    else:
        _retrain_phase(rd, error="diverged: training loss nan at epoch 2")
    got = main(["resume", str(rd), "--no-progress"])
    _one_line_error(capsys.readouterr().err, got, code, text)


@pytest.mark.parametrize("what, text", [
    ("unfinished", "expected best_arch.json (written when a run finishes), got none; finish the run with "
                   "'mednas resume"),
    ("other_space", "best_arch.json: expected an architecture of search space 'mstf_cell' (config.resolved.yaml), "
                    "got one it cannot build"),
])
def test_export_of_a_run_it_cannot_load_is_one_line(env, tmp_path, capsys, what, text):
    import torch

    rd = _copy_run(env, tmp_path)
    if what == "other_space":
        (rd / "best_arch.json").write_text(json.dumps({"depth": 2, "layer0/filters": 16}))   # a genas_cnn sample
        torch.save({}, rd / "best.pt")
    got = main(["export", str(rd), "--out", str(tmp_path / "bundle")])
    _one_line_error(capsys.readouterr().err, got, 2, text)
    assert not (tmp_path / "bundle").exists()


def test_usage_that_used_to_fail_now_works(env, capsys):
    assert main(["validate"]) == 0                                         # the embedded default, no argument
    assert "default.yaml (embedded): ok" in capsys.readouterr().out
    assert main(["validate", str(env["good"]), "--show", "strategy.params.pop_size=6"]) == 0   # option between
    assert "pop_size: 6" in capsys.readouterr().out
    assert main(["list", "--kind", "strategy"]) == 0                       # the registry's singular alias
    out = capsys.readouterr().out
    assert out.startswith("strategies:") and "zc_nsga2" in out and "datasets:" not in out
    assert main(["list", "--kind", "space", "--json"]) == 0
    assert {p["kind"] for p in json.loads(capsys.readouterr().out)} == {"search_spaces"}


def _cli(*args, cwd=None):   # the real console entry point (a fresh process)
    return subprocess.run([sys.executable, "-m", "mednas_nni", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)


def test_real_entry_point_debug_after_the_subcommand(tmp_path):
    r = _cli("validate", str(tmp_path / "x.yaml"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = _cli("validate", str(tmp_path / "x.yaml"), "--debug")             # --debug after the subcommand
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr

"""A run directory is data: resuming or exporting one that carries a pickle payload refuses it with one line and
runs nothing (issue 11, security).

Every state file a resume reads gets the payload in turn: each field of ``strategy_state.json`` (the pymoo
algorithm of zc_nsga2 included, and each entry of the fields that are objects), a finalist's ``model.pt``, the
legacy ``strategy_state.pt``, and ``best.pt`` for ``mednas export``. The payload's ``__reduce__`` creates a marker
file; the marker must never appear.
"""
from __future__ import annotations

import json

import pytest

from mednas_nni.cli import main
from mednas_nni.engines.search_loop import SearchLoop

from _runs import GENAS, one_batch, pickle_b64, started_run, torch_payload


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    """One real checkpoint of each multi-trial strategy family (zc_nsga2's pymoo state; genas_wf's GA + RNG)."""
    root = tmp_path_factory.mktemp("states")
    out = {}
    for name, extra in (("zc_nsga2", []), ("genas_wf", GENAS)):
        rd, cfg = started_run(root / name, extra)
        one_batch(rd, cfg)
        out[name] = rd.path
    return out


def _cases():
    # (strategy, path of the poisoned value inside state["strategy"]); bool fields cannot carry a payload
    return [("zc_nsga2", "algorithm"), ("zc_nsga2", "algorithm.*"), ("zc_nsga2", "scored"), ("zc_nsga2", "generation"),
            ("zc_nsga2", "seen"), ("zc_nsga2", "variation"), ("zc_nsga2", "variation.*"),
            ("genas_wf", "population"), ("genas_wf", "rng"), ("genas_wf", "scores"), ("genas_wf", "generation")]


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _resume_refuses(rd, marker, capsys, monkeypatch):
    def accepted(self):   # the state was taken: fail fast instead of running a real search
        raise AssertionError("the poisoned state was accepted")

    monkeypatch.setattr(SearchLoop, "next_batch", accepted)
    code = main(["resume", str(rd), "--no-progress"])
    err = capsys.readouterr().err
    assert not marker.exists(), "code from the run directory was executed"
    assert code != 0, err
    lines = err.splitlines()
    assert "Traceback" not in err and len(lines) <= 2, err        # at most "resuming: ..." and the error
    assert all(not ln.startswith("mednas: run directory") for ln in lines)   # resume does not repeat the path
    return lines[-1]


@pytest.mark.parametrize("strategy, field", _cases())
def test_poisoned_strategy_state_is_refused_and_never_run(states, tmp_path, capsys, monkeypatch, strategy, field):
    rd = _copy(states[strategy], tmp_path / "run")
    marker = tmp_path / "PWNED"
    state_file = rd / "strategy_state.json"
    state = json.loads(state_file.read_text())
    top, _, sub = field.partition(".")
    if top not in state["strategy"]:
        pytest.fail(f"{strategy} keeps no {top!r} in its state: update _cases() so no poisoned field goes untested")
    payload = pickle_b64(marker)
    if sub == "*":
        value = state["strategy"][top]
        if not isinstance(value, dict) or not value:
            pytest.fail(f"{strategy}'s {top!r} is not an object: update _cases()")
        state["strategy"][top] = {k: payload for k in value}
    else:
        state["strategy"][top] = payload
    state_file.write_text(json.dumps(state))
    line = _resume_refuses(rd, marker, capsys, monkeypatch)
    assert "strategy_state.json" in line and strategy in line


def test_legacy_torch_state_file_is_refused_unread(states, tmp_path, capsys, monkeypatch):
    rd = _copy(states["zc_nsga2"], tmp_path / "run")
    marker = tmp_path / "PWNED"
    (rd / "strategy_state.json").unlink()
    (rd / "strategy_state.pt").write_bytes(torch_payload(marker))
    line = _resume_refuses(rd, marker, capsys, monkeypatch)
    assert "strategy_state.pt" in line and "0.1" in line


def _retrain_phase_run(states, tmp_path):
    """The zc run moved on to retraining: finalist 0 retrained (result.json + model.pt), finalist 1 not yet."""
    from mednas_nni.io import read_jsonl

    rd = _copy(states["zc_nsga2"], tmp_path / "run")
    rec = next(r for r in read_jsonl(rd / "archs.jsonl") if r["status"] == "ok")
    fin = {"hash": rec["hash"], "sample": rec["sample"], "chosen_as": "knee"}
    (rd / "finalists.json").write_text(json.dumps([fin]))
    (rd / "finalists" / "0").mkdir(parents=True)
    (rd / "finalists" / "0" / "result.json").write_text(json.dumps(
        {**fin, "best_epoch": 1, "val": {"auc": 0.7, "acc": 0.7}, "history": [], "seconds": 1.0, "params": 10}))
    status = json.loads((rd / "status.json").read_text())
    (rd / "status.json").write_text(json.dumps({**status, "phase": "retrain", "n_finalists": 1}))
    return rd, rec["sample"]


def test_poisoned_finalist_weights_are_refused_and_never_run(states, tmp_path, capsys, monkeypatch):
    rd, _ = _retrain_phase_run(states, tmp_path)
    marker = tmp_path / "PWNED"
    (rd / "finalists" / "0" / "model.pt").write_bytes(torch_payload(marker))
    line = _resume_refuses(rd, marker, capsys, monkeypatch)
    assert "finalists/0/model.pt" in line and "expected a state_dict of tensors" in line


def test_export_refuses_poisoned_best_weights(states, tmp_path, capsys):
    rd, sample = _retrain_phase_run(states, tmp_path)
    marker = tmp_path / "PWNED"
    (rd / "best_arch.json").write_text(json.dumps(sample))
    (rd / "best.pt").write_bytes(torch_payload(marker))
    code = main(["export", str(rd), "--out", str(tmp_path / "bundle")])
    err = capsys.readouterr().err
    assert not marker.exists() and code != 0
    assert err.count("\n") == 1 and "best.pt" in err and "Traceback" not in err, err
    assert not (tmp_path / "bundle").exists()

"""``mednas resume`` notices what changed (issue 11): an edited config, another version, and what it restored.

Each run directory is made by the core's own code (:func:`start_run_dir`) and holds one real checkpoint of the
search loop; nothing is scored or trained.
"""
from __future__ import annotations

import json

import pytest
import yaml

from mednas_nni import __version__
from mednas_nni.cli import main
from mednas_nni.engines.search_loop import SearchLoop
from mednas_nni.io import RunDir, SearchClock

from _runs import one_batch, started_run


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    rd, cfg = started_run(tmp_path_factory.mktemp("drift"))
    one_batch(rd, cfg)
    return rd.path


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_config(rd, path, value):
    cfg = yaml.safe_load((rd / RunDir.CONFIG).read_text())
    node = cfg
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    (rd / RunDir.CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.mark.parametrize("field, old, new", [
    ("space.params.channels", 16, 8),           # resumed silently and mixed two widths before
    ("strategy.params.pop_size", 12, 16),       # was silently ignored before
    ("space.params.num_nodes", 5, 4),           # crashed with IndexError before
])
def test_resume_refuses_an_edited_config_naming_the_field(checkpointed, tmp_path, capsys, field, old, new):
    rd = _copy(checkpointed, tmp_path / "run")
    archs = (rd / "archs.jsonl").read_bytes()
    _edit_config(rd, field.split("."), new)
    assert main(["resume", str(rd), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"config.resolved.yaml: {field}: the saved state was built with {old}, the config now says {new}" in err
    assert (rd / "archs.jsonl").read_bytes() == archs                  # nothing evaluated, nothing written


def test_resume_refuses_another_version(checkpointed, tmp_path, capsys):
    rd = _copy(checkpointed, tmp_path / "run")
    ident = json.loads((rd / RunDir.IDENTITY).read_text())
    assert ident["mednas_nni"] == __version__ and len(ident["config_sha256"]) == 64
    (rd / RunDir.IDENTITY).write_text(json.dumps({**ident, "mednas_nni": "0.1.9"}))
    assert main(["resume", str(rd)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"written by mednas-nni 0.1.9, this is {__version__}" in err, err


def test_state_file_of_another_version_is_refused(checkpointed, tmp_path, capsys):
    rd = _copy(checkpointed, tmp_path / "run")
    state = json.loads((rd / "strategy_state.json").read_text())
    (rd / "strategy_state.json").write_text(json.dumps({**state, "mednas_nni": "9.9"}))
    assert main(["resume", str(rd), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"strategy_state.json: written by mednas-nni 9.9, this is {__version__}" in err and "Traceback" not in err


def test_where_and_how_fast_may_change_and_resume_says_what_it_restored(checkpointed, tmp_path, capsys,
                                                                        monkeypatch):
    rd = _copy(checkpointed, tmp_path / "run")
    _edit_config(rd, ["run", "device"], "auto")          # another machine: where, not what
    _edit_config(rd, ["engine", "port"], 9123)
    (rd / ".archs.jsonl.k3j2.tmp").write_text("torn")    # a killed atomic write
    (rd / "notes.tmp").write_text("the user's own file")

    def stop(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(SearchLoop, "next_batch", stop)  # stop right after the restore
    assert main(["resume", str(rd), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "mednas: resuming: 12 architectures already scored, generation 1 of 3; search time so far" in err, err
    assert f"interrupted; continue with 'mednas resume {rd}'" in err
    assert not (rd / ".archs.jsonl.k3j2.tmp").exists() and (rd / "notes.tmp").exists()


def test_search_time_is_summed_over_sessions(tmp_path):
    rd, cfg = started_run(tmp_path)
    one_batch(rd, cfg)
    first = rd.status()
    assert first["search_sessions"] == 1 and first["search_seconds"] > 0
    loop = one_batch(rd, cfg)                                  # a second session continues the search
    second = rd.status()
    assert second["search_sessions"] == 2 and second["search_seconds"] > first["search_seconds"]
    assert "over 1 session(s)" in loop.restored_summary()
    clock = SearchClock(RunDir(rd.path))                       # a third session starts from the sum
    assert clock.before == pytest.approx(second["search_seconds"]) and clock.session == 3


def test_config_differences_ignore_where_trials_run_but_not_what_is_computed():
    from mednas_nni.run_identity import config_differences

    before = {"training_service": {"platform": "local"}, "space": {"params": {"channels": 16}}}
    moved = {"training_service": {"platform": "remote", "machines": [{"host": "gpu1"}]},
             "space": {"params": {"channels": 16}}}
    assert config_differences(before, moved) == []
    edited = {**moved, "space": {"params": {"channels": 8}}}
    assert config_differences(before, edited) == [("space.params.channels", 16, 8)]

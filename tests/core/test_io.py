"""Atomic outputs and the crash-tolerant JSON-lines log."""
from __future__ import annotations

import json

import pytest

from mednas_nni.errors import RunDirError
from mednas_nni.io import RunDir, append_jsonl, atomic_write_json, atomic_write_text, read_jsonl


def test_atomic_write_keeps_old_content_when_writing_fails(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_json(p, {"a": 1})

    class Boom:
        def __repr__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": Boom()})          # not JSON-serialisable: nothing replaced
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]   # no temp file left behind


def test_atomic_files_get_the_usual_mode(tmp_path):
    import stat

    from mednas_nni import io

    p = atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~io._UMASK
    plain = tmp_path / "b.txt"
    plain.write_text("x")
    assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_json_has_no_nan(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None]}


def test_jsonl_tolerates_a_torn_last_line(tmp_path):
    p = tmp_path / "archs.jsonl"
    append_jsonl(p, {"hash": "a"})
    with open(p, "a") as fh:
        fh.write('{"hash": "b", "sco')                # the process died mid-write
    append_jsonl(p, {"hash": "c"})                    # the next run appends on a fresh line
    assert [r["hash"] for r in read_jsonl(p)] == ["a", "c"]


def test_rundir_open_errors(tmp_path):
    with pytest.raises(RunDirError, match=r"not a run directory; .*got nothing at that path"):
        RunDir.open(tmp_path / "missing")
    with pytest.raises(RunDirError, match=r"expected config\.resolved\.yaml in it"):
        RunDir.open(tmp_path)
    f = tmp_path / "file.txt"
    atomic_write_text(f, "x")
    with pytest.raises(RunDirError, match=r"got a file"):
        RunDir.open(f)


def test_rundir_create_is_unique(tmp_path):
    a, b = RunDir.create(tmp_path, "x y"), RunDir.create(tmp_path, "x y")
    assert a.path != b.path and a.path.name.startswith("x-y-")
    a.set_status(phase="search")
    a.set_status(n=3)
    assert a.status()["phase"] == "search" and a.status()["n"] == 3

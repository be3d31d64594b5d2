"""Run directories and files under stress (issue 11): concurrent creation, the user's umask, a full or read-only
disk (a real tiny tmpfs where the machine allows one), an unusable ``run.out_dir``, and where relative paths go."""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest
import yaml

from mednas_nni.cli import main
from mednas_nni.config import load_config
from mednas_nni.errors import ConfigError, OutputError
from mednas_nni.io import RunDir, atomic_write_bytes, atomic_write_text, check_out_dir, dir_mode


def _create_many(root, barrier, n, queue):
    barrier.wait()                                   # every process starts creating in the same instant
    try:
        queue.put([str(RunDir.create(root, "race").path) for _ in range(n)])
    except Exception as e:  # noqa: BLE001 - reported to the test
        queue.put(f"{type(e).__name__}: {e}")


def test_two_hundred_simultaneous_run_directories_never_collide(tmp_path):
    ctx = mp.get_context("fork")
    procs, per = 8, 25
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_create_many, args=(tmp_path, barrier, per, queue)) for _ in range(procs)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    errors = [r for r in results if isinstance(r, str)]
    assert not errors, errors                        # 22 of 200 raised FileExistsError with exists() + mkdir
    made = [p for r in results for p in r]
    assert len(made) == len(set(made)) == procs * per == len(list(tmp_path.iterdir()))


def test_files_and_folders_follow_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        f = atomic_write_text(tmp_path / "a" / "x.json", "{}")
        rd = RunDir.create(tmp_path / "runs", "u")
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert stat.S_IMODE(rd.path.stat().st_mode) == 0o700 and dir_mode() == 0o700
        os.umask(0o022)
        assert dir_mode() == 0o755 and stat.S_IMODE(atomic_write_text(tmp_path / "y", "").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_out_dir_through_a_file_is_a_one_line_error_and_no_folder(tmp_path, capsys):
    blocker = tmp_path / "hostname"
    blocker.write_text("not a folder")
    bad = f"run.out_dir={blocker / 'x'}"
    assert main(["validate", bad]) == 2                              # validate used to accept it
    assert main(["search", "--no-progress", bad]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("run.out_dir: expected a folder that can be created and written" in e
                                 and f"({blocker} is a file)" in e for e in err), err
    with pytest.raises(ConfigError):
        check_out_dir(blocker / "x" / "y")
    with pytest.raises(OutputError, match="cannot write"):           # the core refuses it too, in one line
        RunDir.create(blocker / "x", "r")


def test_relative_paths_yaml_folder_vs_command_line(tmp_path, monkeypatch):
    cfg_dir, cwd = tmp_path / "configs", tmp_path / "work"
    cfg_dir.mkdir()
    cwd.mkdir()
    (cfg_dir / "c.yaml").write_text(yaml.safe_dump({
        "data": {"name": "medmnist"}, "space": {"name": "mstf_cell"}, "strategy": {"name": "zc_nsga2"},
        "run": {"out_dir": "runs"}}))
    monkeypatch.chdir(cwd)
    assert load_config(cfg_dir / "c.yaml").run.out_dir == cfg_dir / "runs"           # written in the YAML
    assert load_config(cfg_dir / "c.yaml", ["run.out_dir=mine"]).run.out_dir == cwd / "mine"   # typed by the user
    assert load_config(None).run.out_dir == cwd / "runs"                             # the embedded default


_TMPFS_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys
    from pathlib import Path
    mnt, ro = Path(sys.argv[1]), Path(sys.argv[2])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)], check=True)
    from mednas_nni.errors import OutputError
    from mednas_nni.io import RunDir, atomic_write_bytes, atomic_write_text
    atomic_write_text(mnt / "metrics.json", "old")
    try:
        atomic_write_bytes(mnt / "metrics.json", b"x" * 200_000)
        print("NO ERROR")
    except OutputError as e:
        print("ENOSPC:", e)
    print("LEFT:", sorted(p.name for p in mnt.iterdir()), (mnt / "metrics.json").read_text())
    try:
        RunDir.create(ro / "runs", "r")
        print("NO ERROR")
    except OutputError as e:
        print("EROFS:", e)
    from mednas_nni.cli import main
    print("VALIDATE:", main(["validate", f"run.out_dir={ro / 'runs'}"]))
""")


def test_full_and_read_only_disks_on_a_real_tmpfs(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare: a real tmpfs cannot be mounted here (the simulated ENOSPC test still runs)")
    mnt, ro = tmp_path / "full", tmp_path / "ro"
    mnt.mkdir()
    ro.mkdir()
    script = tmp_path / "s.py"
    script.write_text(_TMPFS_SCRIPT)
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, str(script), str(mnt),
                        str(ro)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode != 0 and "mount" in r.stderr and "Traceback" in r.stderr and "ENOSPC" not in r.stdout:
        pytest.skip(f"user namespaces or tmpfs mounts are not allowed here: {r.stderr.splitlines()[-1]}")
    out = r.stdout
    assert f"ENOSPC: {mnt / 'metrics.json'}: cannot write (no space left on the device; free some space)" in out, \
        out + r.stderr
    assert "LEFT: ['metrics.json'] old" in out                  # no temp file left, the old content intact
    assert f"EROFS: {ro / 'runs'}: cannot write (Read-only file system; expected a writable folder)" in out
    assert "VALIDATE: 2" in out and "is not writable by this user" in r.stderr, r.stderr

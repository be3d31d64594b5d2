"""Run-directory layout and atomic file output.

Every file a run writes goes through a temporary file in the same folder followed by
``os.replace``, so a killed run never leaves a half-written file behind: a reader sees
either the old content or the new one. ``archs.jsonl`` is append-only; a torn last line
(the process died mid-write) is ignored when it is read back.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigError, OutputError, RunDirError

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "atomic_savefig",
    "append_jsonl", "read_jsonl", "RunDir", "SearchClock", "to_jsonable", "check_out_dir", "output_error",
    "current_umask", "dir_mode", "TEMP_SUFFIX",
]

_logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
#: suffix of the temporary files of atomic writes (``.<name>.<random>.tmp``); left behind only by a killed process
TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def _atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.

    Raises:
        OutputError: the folder or the file could not be written (disk full, read-only, permissions); the
            temporary file is removed and an older ``path`` is left as it was.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~current_umask())   # mkstemp creates 0600; give the mode a plain open() would
        os.replace(tmp_path, path)
    except OSError as e:
        raise output_error(path, e) from e
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def output_error(path: PathLike, err: OSError) -> OutputError:
    """The one-line :class:`OutputError` for an ``OSError`` met while writing ``path``."""
    if err.errno == errno.ENOSPC:
        hint = "no space left on the device; free some space"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = f"{err.strerror or err}; expected a writable folder"
    elif err.errno == errno.ENOTDIR:
        hint = f"{err.strerror or err}; a part of the path is a file, expected folders"
    else:
        hint = str(err.strerror or err)
    return OutputError(f"{path}: cannot write ({hint})")


def _write_all(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (the one place file bytes are written; tests simulate a full disk here)."""
    path.write_bytes(data)


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK


def dir_mode() -> int:
    """The mode a plain ``mkdir`` gives a folder under the user's umask (for folders made by ``mkdtemp``)."""
    return 0o777 & ~current_umask()


def _read_umask() -> int:
    mask = os.umask(0)      # the only portable way to read it; done once, at import, before any thread starts
    os.umask(mask)
    return mask


_UMASK = _read_umask()     # where /proc/self/status is not there (macOS)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    with _atomic_path(path) as tmp:
        _write_all(tmp, data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars, paths and tuples into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None  # JSON has no NaN/inf
    return obj


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_savefig(fig: Any, path: PathLike, **kwargs: Any) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (one ``write`` call, so a crash tears at most the last line)."""
    line = json.dumps(to_jsonable(record), sort_keys=True) + "\n"
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A previous crash may have left a torn last line without its newline: start on a fresh line.
        prefix = ""
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    prefix = "\n"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(prefix + line)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise output_error(path, e) from e


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping (and logging) lines torn by a crash."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            _logger.warning("%s:%d: skipping a torn line (written while the run was killed)", path, i)
    return out


class RunDir:
    """A run directory ``runs/<name>-<time>/`` and the names of the files in it.

    Files: ``config.resolved.yaml`` (marks the folder as a run), ``run.json`` (the package version and the resolved
    config the run started with), ``status.json`` (phase, search time), ``archs.jsonl`` (every evaluated
    architecture), ``strategy_state.json`` (for resume), ``pareto.csv``/``pareto.png``,
    ``finalists/<i>/`` (retraining of each finalist), ``best_arch.json``, ``best.pt``, ``metrics.json``,
    ``search.log``.
    """

    CONFIG = "config.resolved.yaml"
    STATUS = "status.json"
    ARCHS = "archs.jsonl"
    STATE = "strategy_state.pt"
    PARETO_CSV = "pareto.csv"
    PARETO_PNG = "pareto.png"
    BEST_ARCH = "best_arch.json"
    BEST_WEIGHTS = "best.pt"
    METRICS = "metrics.json"
    LOG = "search.log"
    IDENTITY = "run.json"
    #: written when a run starts; a run directory holding nothing else has no result yet
    BOOKKEEPING = frozenset({CONFIG, STATUS, LOG, IDENTITY, "environment.json"})

    def __init__(self, path: PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, out_root: PathLike, name: str) -> RunDir:
        """A new, empty ``<out_root>/<name>-<time>[-k]`` folder. ``mkdir`` itself decides which name is free (no
        ``exists()`` first), so runs started in the same second, in any number of processes, never collide.

        Raises:
            OutputError: ``out_root`` cannot be created or written.
        """
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
        root = Path(out_root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise output_error(root, e) from e
        for k in range(1, 100_000):
            path = root / (f"{safe}-{stamp}" if k == 1 else f"{safe}-{stamp}-{k}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                raise output_error(path, e) from e
            return cls(path)
        raise OutputError(f"{root}: cannot create a run directory; expected a free name {safe}-{stamp}-<k>, got "
                          "100000 taken")

    @classmethod
    def open(cls, path: PathLike) -> RunDir:
        """Open an existing run directory, or raise :class:`RunDirError` saying what is missing."""
        p = Path(path)
        if not p.is_dir():
            raise RunDirError(f"{p}: not a run directory; expected a folder made by 'mednas search', got "
                              + ("a file" if p.exists() else "nothing at that path"))
        if not (p / cls.CONFIG).is_file():
            raise RunDirError(f"{p}: not a run directory; expected {cls.CONFIG} in it (written by 'mednas search'), "
                              "got no such file")
        return cls(p)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def status(self) -> dict[str, Any]:
        f = self.path / self.STATUS
        if not f.exists():
            return {}
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise RunDirError(f"{f}: expected JSON, got a damaged file ({e})") from None

    def set_status(self, **fields: Any) -> None:
        st = self.status()
        st.update(fields)
        st["updated"] = _dt.datetime.now().isoformat(timespec="seconds")
        atomic_write_json(self.path / self.STATUS, st)

    def remove_stale_temps(self) -> list[Path]:
        """Delete the ``.<name>.<random>.tmp`` files a killed atomic write left (call only when no other process
        writes into this run); returns what was removed."""
        gone = []
        for f in self.path.rglob(f".*{TEMP_SUFFIX}"):
            if f.is_file() and f.name.count(".") >= 3:
                try:
                    f.unlink()
                    gone.append(f)
                except FileNotFoundError:
                    pass
        if gone:
            _logger.info("removed %d temporary file(s) left by a killed write: %s", len(gone),
                         ", ".join(str(g.relative_to(self.path)) for g in gone))
        return gone

    def has_results(self) -> bool:
        """True once anything beyond the files written at the start exists (a record, a state, a finalist)."""
        return any(not f.name.startswith(".") and f.name not in self.BOOKKEEPING for f in self.path.iterdir())

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


class SearchClock:
    """Search time summed over every session of a run (a resumed run adds to it), kept in ``status.json``.

    :meth:`flush` is called at every checkpoint, so a killed session loses at most the time since the last one.
    """

    def __init__(self, rd: RunDir):
        st = rd.status()
        self.rd = rd
        self.before = float(st.get("search_seconds") or 0.0)
        self.session = int(st.get("search_sessions") or 0) + 1
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.t0

    def flush(self) -> None:
        self.rd.set_status(search_seconds=self.seconds, search_sessions=self.session)


def check_out_dir(path: PathLike, source: str = "run.out_dir") -> Path:
    """Check that run directories can be created in ``path`` (created later if missing): the nearest existing
    folder on the way must be a writable folder.

    Raises:
        ConfigError: a part of the path is a file, or the folder is not writable.
    """
    p = Path(path).expanduser()
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{source}: expected a folder that can be created and written, got {p} ({probe} is a "
                          "file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{source}: expected a folder that can be created and written, got {p} ({probe} is not "
                          "writable by this user)")
    return p

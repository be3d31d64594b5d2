"""Run-directory layout and atomic file output.

Every file a run writes goes through a temporary file in the same folder followed by
``os.replace``, so a killed run never leaves a half-written file behind: a reader sees
either the old content or the new one. ``archs.jsonl`` is append-only; a torn last line
(the process died mid-write) is ignored when it is read back.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RunDirError

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "atomic_savefig",
    "append_jsonl", "read_jsonl", "RunDir", "to_jsonable",
]

_logger = logging.getLogger(__name__)
PathLike = str | os.PathLike


@contextlib.contextmanager
def _atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)   # mkstemp creates 0600; give the mode a plain open() would
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _read_umask() -> int:
    mask = os.umask(0)      # the only portable way to read it; done once, at import, before any thread starts
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    with _atomic_path(path) as tmp:
        tmp.write_bytes(data)
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

    Files: ``config.resolved.yaml`` (marks the folder as a run), ``status.json`` (phase), ``archs.jsonl``
    (every evaluated architecture), ``strategy_state.pt`` (for resume), ``pareto.csv``/``pareto.png``,
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

    def __init__(self, path: PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, out_root: PathLike, name: str) -> RunDir:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
        base = Path(out_root) / f"{safe}-{stamp}"
        path, k = base, 1
        while path.exists():
            k += 1
            path = base.with_name(f"{base.name}-{k}")
        path.mkdir(parents=True)
        return cls(path)

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

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

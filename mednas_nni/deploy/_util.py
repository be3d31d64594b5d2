"""Small helpers shared by the bundle runtime modules (standard library only)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["one_line", "suffix"]


def one_line(e: BaseException) -> str:
    """``"TypeName: first line of the message"`` (at most 200 characters of it)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def suffix(path: Path) -> str:
    """The lower-case suffix of ``path``, with ``.nii.gz`` as one suffix."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()

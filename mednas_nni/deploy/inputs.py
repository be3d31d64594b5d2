"""What ``mednas predict`` reads: its INPUT arguments (files, folders, globs) expanded into input items.

* A file is one item (read by :func:`~mednas_nni.deploy.readers.read_images`; a missing file fails there, so
  ``--skip-errors`` records it like any unreadable file).
* A folder is walked recursively in sorted order (hidden names skipped). In each folder the DICOM files are
  grouped by series (:func:`~mednas_nni.deploy.dicom.series_groups`): a series with several slice positions is
  one item (its middle slice), other DICOM files are items of their own; files of the other supported types are
  items; anything else is skipped and listed in :attr:`Expanded.skipped`.
* An argument with ``*``, ``?`` or ``[`` that is not an existing path is a glob (``**`` recurses), expanded in
  sorted order; a glob that matches nothing is an item that fails with that message.

Standard library only here (pydicom reads DICOM headers only when a folder holds DICOM files).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ._util import suffix
from .readers import DICOM_SUFFIXES, SUPPORTED_SUFFIXES, is_dicom_file

__all__ = ["InputItem", "Expanded", "expand_inputs"]


@dataclass
class InputItem:
    """One thing to read: a file, or a DICOM series (``path`` = its folder, ``series`` = its files)."""

    path: Path
    series: list[Path] | None = None
    error: str | None = None  # set when the argument itself is unusable (a glob matching nothing)


@dataclass
class Expanded:
    items: list[InputItem] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # files of unsupported types found in folders


def _folder(root: Path, out: Expanded) -> None:
    from .dicom import series_groups

    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here_p = Path(here)
        paths = [here_p / f for f in sorted(files) if not f.startswith(".")]
        dicoms = [p for p in paths if suffix(p) in DICOM_SUFFIXES
                  or suffix(p) not in SUPPORTED_SUFFIXES and is_dicom_file(p)]
        try:
            volumes, singles = series_groups(dicoms) if dicoms else ([], [])
        except DataError:  # no pydicom: each DICOM file becomes an input that fails (or is skipped) on its own
            volumes, singles = [], sorted(dicoms)
        is_dicom = set(dicoms)
        items = [InputItem(p) for p in paths if p not in is_dicom and suffix(p) in SUPPORTED_SUFFIXES]
        items += [InputItem(p) for p in singles]
        items.sort(key=lambda it: str(it.path))
        out.items += [InputItem(here_p, series=sorted(v)) for v in volumes] + items
        out.skipped += [p for p in paths if p not in is_dicom and suffix(p) not in SUPPORTED_SUFFIXES]


def expand_inputs(args: list[str | os.PathLike]) -> Expanded:
    """Expand INPUT arguments (files, folders, globs) into items, in argument order."""
    out = Expanded()
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            _folder(p, out)
        elif not p.exists() and any(ch in str(arg) for ch in "*?["):
            matches = sorted(glob.glob(str(arg), recursive=True))
            if not matches:
                out.items.append(InputItem(p, error=f"{arg}: no file matches this pattern; expected at least one "
                                                     "input file"))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    _folder(mp, out)
                else:
                    out.items.append(InputItem(mp))
        else:
            out.items.append(InputItem(p))
    return out

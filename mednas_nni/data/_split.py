"""Train/val/test splits of case names (image stems, volume names): seeded fractions or one-name-a-line files.

The unit of a split is a *case* (a 2-D image with its mask, or a whole volume), never a slice, so that slices of one
patient never end up in two splits.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["SPLITS", "fraction_split", "file_split", "read_split_file"]

SPLITS = ("train", "val", "test")


def _sizes(n: int, fractions: Sequence[float]) -> list[int]:
    n_train = int(round(n * fractions[0]))
    n_val = int(round(n * fractions[1]))
    n_val = min(n_val, n - n_train)
    return [n_train, n_val, n - n_train - n_val]


def fraction_split(names: Sequence[str], fractions: Sequence[float], seed: int,
                   max_cases: int | None = None) -> dict[str, list[str]]:
    """A seeded split of ``sorted(names)``: one permutation (``numpy.random.default_rng(seed)``), cut to
    ``max_cases`` first (a seeded random subset), then into ``round(n * f_train)``, ``round(n * f_val)`` and the rest.

    The same names, fractions and seed give the same split on every machine; each split is returned sorted.
    """
    names = sorted(names)
    perm = np.random.default_rng(seed).permutation(len(names))
    if max_cases is not None:
        perm = perm[:max_cases]
    sizes = _sizes(len(perm), fractions)
    bounds = np.cumsum([0] + sizes)
    return {s: sorted(names[i] for i in perm[bounds[k]:bounds[k + 1]]) for k, s in enumerate(SPLITS)}


def read_split_file(path: Path, known: Mapping[str, str]) -> list[str]:
    """Case names listed in ``path``, one a line (blank lines and ``#`` comments skipped; a name may carry a file
    extension). ``known`` maps every accepted spelling (name, file name) to the case name."""
    if not path.is_file():
        raise DataError(f"split file {path}: expected a text file with one name a line, got no such file")
    out = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        name = known.get(entry) or known.get(Path(entry).name)
        if name is None:
            raise DataError(f"split file {path}, line {no}: expected the name of an image/mask pair, got {entry!r} "
                            "(no such pair)")
        out.append(name)
    return out


def file_split(split_files: Mapping[str, Path], known: Mapping[str, str],
               max_cases: int | None = None) -> dict[str, list[str]]:
    """The split given by one file per split. With ``max_cases`` each split keeps its first names in file order,
    in proportion to its size (at least one)."""
    out = {s: read_split_file(Path(split_files[s]), known) for s in SPLITS}
    seen: dict[str, str] = {}
    for s in SPLITS:
        for name in out[s]:
            if name in seen:
                where = "twice" if seen[name] == s else f"in both {seen[name]} and {s}"
                raise DataError(f"split file {split_files[s]}: expected every name in one split only, got {name!r} "
                                f"{where}")
            seen[name] = s
    total = sum(len(v) for v in out.values())
    if max_cases is not None and total > max_cases:
        out = {s: v[:max(1, int(round(max_cases * len(v) / total)))] for s, v in out.items()}
    return {s: sorted(v) for s, v in out.items()}

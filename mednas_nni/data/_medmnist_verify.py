"""Is a MedMNIST ``.npz`` the official file it is named after? MD5 and split sizes from ``medmnist.INFO``.

A file with the right name and the wrong content would otherwise train silently (a PneumoniaMNIST file renamed
``breastmnist.npz`` ran to the end and was reported as BreastMNIST). A user's own re-export sets
``data.params.verify: false``; the file must still open and hold every split (a truncated download fails here,
before a run directory is made).
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["official_md5", "verify_npz", "file_md5"]

SPLITS = ("train", "val", "test")
_VERIFIED: dict[tuple[str, int, int, bool], None] = {}     # (path, size, mtime_ns, verify): checked this process


def official_md5(flag: str, size: int) -> str | None:
    from medmnist import INFO

    return INFO[flag].get("MD5" if size == 28 else f"MD5_{size}")


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _which_official(md5: str) -> str:
    """``"; it is pneumoniamnist.npz (28 px)"`` when ``md5`` is another official file's, else ``""``."""
    from medmnist import INFO

    for flag, meta in INFO.items():
        for size in (28, 64, 128, 224):
            if meta.get("MD5" if size == 28 else f"MD5_{size}") == md5:
                name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
                return f"; it is the official {name} ({size} px)"
    return ""


def _split_sizes(path: Path) -> dict[str, int]:
    """Images per split, read from the labels arrays (small) after checking every array is in the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in names]
            if missing:
                raise DataError(f"dataset 'medmnist': {path}: expected the arrays {', '.join(missing)} in a MedMNIST "
                                f".npz, got {', '.join(sorted(names)) or 'none'}")
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise DataError(f"dataset 'medmnist': {path}: expected a readable .npz, got a damaged member {bad}")
            return {s: int(len(z[f"{s}_labels"])) for s in SPLITS}
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise DataError(f"dataset 'medmnist': {path}: expected a MedMNIST .npz of images and labels, got an "
                        f"unreadable file ({type(e).__name__}: {str(e)[:160]}); download it again") from None


def verify_npz(path: Path, flag: str, size: int, verify: bool = True) -> None:
    """Check ``path`` (see the module doc); once per process and file version.

    Raises:
        DataError: one line naming the file, what was expected and what was found.
    """
    from medmnist import INFO

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, verify)
    if key in _VERIFIED:
        return
    sizes = _split_sizes(path)                      # an unreadable (e.g. truncated) file says so first
    want_md5 = official_md5(flag, size) if verify else None
    if want_md5 is not None:
        got = file_md5(path)
        if got != want_md5:
            raise DataError(f"dataset 'medmnist': {path}: expected the official {flag} file at {size} px (MD5 "
                            f"{want_md5}), got MD5 {got} ({st.st_size:,} bytes){_which_official(got)}; use the file "
                            "from MedMNIST, or set data.params.verify: false for your own re-export")
    want = dict(INFO[flag]["n_samples"])
    if verify and sizes != want:
        raise DataError(f"dataset 'medmnist': {path}: expected {flag}'s split sizes train/val/test "
                        f"{want['train']}/{want['val']}/{want['test']}, got {sizes['train']}/{sizes['val']}/"
                        f"{sizes['test']}; set data.params.verify: false for your own re-export")
    _VERIFIED[key] = None

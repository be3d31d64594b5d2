"""``archs.jsonl``: every architecture a search met, one JSON line each, and the cache built from it.

A record is ``{"hash", "sample", "describe", "status", "metrics", "error", "batch", "seconds"}`` with ``status``
``ok`` (``metrics`` = the trial's final dict), ``failed`` (``error`` = why), or ``invalid`` (pruned by the space's
``is_valid``, never evaluated). The hash is always of the canonical sample. The file is authoritative: a resumed
search rebuilds its cache from it, so nothing recorded is evaluated again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from ..io import RunDir, append_jsonl, read_jsonl

__all__ = ["arch_hash", "RecordStore"]

_logger = logging.getLogger(__name__)


def arch_hash(sample: dict[str, Any]) -> str:
    """Hash of an architecture dict: equal dicts (any key order) give equal hashes. Hash canonical samples only."""
    canon = json.dumps(sample, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(canon.encode("utf-8")).hexdigest()[:16]


class RecordStore:
    """The cache of evaluated architectures, persisted to ``archs.jsonl`` as each record arrives.

    ``ok`` and ``invalid`` records are final. A ``failed`` record is final too (a failed trial is recorded and the
    search goes on), except that a later ``ok`` record of the same hash (e.g. found in NNI's trial database after a
    crash) wins.
    """

    def __init__(self, run_dir: RunDir | None):
        self.run_dir = run_dir
        self.cache: dict[str, dict[str, Any]] = {}
        if run_dir is not None:
            for rec in read_jsonl(run_dir / RunDir.ARCHS):
                self._keep(rec)
            if self.cache:
                _logger.info("resuming: %d architectures already in %s", len(self.cache), RunDir.ARCHS)

    def _keep(self, rec: dict[str, Any]) -> bool:
        old = self.cache.get(rec["hash"])
        if old is not None and not (old["status"] == "failed" and rec["status"] == "ok"):
            return False
        self.cache[rec["hash"]] = rec
        return True

    def add(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Keep and persist ``rec`` (unless a final record of its hash exists); returns the record in force."""
        if self._keep(rec) and self.run_dir is not None:
            append_jsonl(self.run_dir / RunDir.ARCHS, rec)
        return self.cache[rec["hash"]]

    def get(self, h: str) -> dict[str, Any] | None:
        return self.cache.get(h)

    def __contains__(self, h: str) -> bool:
        return h in self.cache

    def records(self) -> list[dict[str, Any]]:
        return list(self.cache.values())

    def count(self, *statuses: str) -> int:
        return sum(r["status"] in statuses for r in self.cache.values())

"""What a run directory was started with (``run.json``), and the check that a resume still matches it.

``run.json`` records the mednas-nni version and the resolved config (and its SHA-256) when a run starts. A resume
refuses a run written by another version, and a ``config.resolved.yaml`` edited since in a field the saved state
depends on (a search space's width, a population size, ...), naming the field: the saved architectures, scores and
strategy state were all built with the old value, and mixing two would give results of neither.

Fields that only say *where* or *how fast* the same work runs may change between sessions (:data:`MAY_CHANGE`):
a moved data root (``data.params.root``; the data set is verified on load), the device, the output folder, the
progress bar, NNI's port and concurrency, and the ``training_service`` section (which machines run the trials).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from typing import Any

from .errors import RunDirError
from .io import RunDir, atomic_write_json

__all__ = ["MAY_CHANGE", "config_data", "config_sha256", "write_identity", "check_identity", "config_differences"]

_logger = logging.getLogger(__name__)

#: dotted config fields a resumed session may set differently (where and how fast, not what, is computed)
MAY_CHANGE = frozenset({
    "run.out_dir", "run.device", "run.progress", "run.name",
    "engine.port", "engine.trial_concurrency", "engine.trial_gpu_number", "engine.use_active_gpu",
    "evaluator.num_workers", "data.params.root", "data.params.download", "data.params.verify",
})
#: whole sections that may change: which machines run the trials (a resumed search may move to other workers)
MAY_CHANGE_PREFIXES = ("training_service.",)


def config_data(cfg: Any) -> dict[str, Any]:
    """The resolved config as JSON data (what ``config.resolved.yaml`` holds)."""
    return json.loads(json.dumps(cfg.model_dump(mode="json", exclude={"source"}), sort_keys=True))


def config_sha256(cfg: Any) -> str:
    return hashlib.sha256(json.dumps(config_data(cfg), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_identity(rd: RunDir, cfg: Any) -> None:
    """Write ``run.json`` for a run starting now."""
    from . import __version__

    atomic_write_json(rd / RunDir.IDENTITY, {
        "mednas_nni": __version__, "config_sha256": config_sha256(cfg), "config": config_data(cfg),
        "created": _dt.datetime.now().isoformat(timespec="seconds")})


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_differences(before: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted field, value before, value now)`` for every field that differs, except :data:`MAY_CHANGE`."""
    a, b = _flatten(before), _flatten(now)
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb and key not in MAY_CHANGE and not key.startswith(MAY_CHANGE_PREFIXES):
            diffs.append((key, None if va is missing else va, None if vb is missing else vb))
    return diffs


def check_identity(rd: RunDir, cfg: Any) -> None:
    """Refuse to continue ``rd`` with ``cfg`` if another version wrote it or a field that matters changed.

    A run directory without ``run.json`` (a fresh one of the nnictl tuner) gets one now.

    Raises:
        RunDirError: one line naming the version or the first differing field.
    """
    from . import __version__

    path = rd / RunDir.IDENTITY
    if not path.is_file():
        if (rd / "strategy_state.json").exists() or (rd / "finalists.json").exists():
            _logger.warning("%s: no %s (an older run directory); the config cannot be checked against "
                            "the saved state", rd.path, RunDir.IDENTITY)
        write_identity(rd, cfg)
        return
    try:
        ident = json.loads(path.read_text())
        version, before = ident["mednas_nni"], ident["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise RunDirError(f"{path}: expected the JSON record of how this run started, got a damaged file "
                          f"({type(e).__name__}: {e})") from None
    if version != __version__:
        raise RunDirError(f"{rd.path}: written by mednas-nni {version}, this is {__version__}; resume it with "
                          f"mednas-nni {version} (pip install mednas-nni=={version}) or start a new search")
    diffs = config_differences(before, config_data(cfg))
    if diffs:
        key, old, new = diffs[0]
        more = f" (and {len(diffs) - 1} more field(s))" if len(diffs) > 1 else ""
        raise RunDirError(f"{rd / RunDir.CONFIG}: {key}: the saved state was built with {old!r}, the config now "
                          f"says {new!r}{more}; put {old!r} back to resume, or start a new search with "
                          "'mednas search'")

"""The architecture a NAS trial evaluated, named in its final metric so that NNI's web UI can show it.

On ``mednas search`` (NNI's NAS engines) a trial's parameters are NNI's serialized model space, which the web UI's
trial table cannot show as columns; its final metric dict can ("Add/Remove columns" lists every key of it). So a
trial reports ``hash`` (the key of the run directory's ``archs.jsonl`` and of ``mednas`` summaries) and ``describe``
(the space's short string) beside its numbers: the same two names the nnictl tuner puts in a trial's parameters.
They are labels, not metrics: :func:`without_labels` drops them before a metric is recorded, so a run directory is
the same with and without them, and :func:`labelled_hash` lets a reader of NNI's database check that a metric
belongs to the architecture NNI lists beside it.
"""
from __future__ import annotations

import logging
from typing import Any

__all__ = ["LABEL_KEYS", "label_final", "without_labels", "labelled_hash"]

_logger = logging.getLogger(__name__)
LABEL_KEYS = ("hash", "describe")
_SPACES: dict[str, Any] = {}


def _space(ctx: Any) -> Any:
    key = str(ctx.run_dir.path)
    if key not in _SPACES:
        _SPACES[key] = ctx.build_space()
    return _SPACES[key]


def label_final(final: dict[str, Any], sample: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """``final`` with the ``hash`` and ``describe`` of ``sample`` (canonicalised first: NNI's JSON round trip turns
    ``0.0`` into ``0``); a space that cannot be built or describe it costs the labels, never the trial's result."""
    from .records import arch_hash

    try:
        space = _space(ctx)
        canonical = space.canonicalize(sample)
        return {**final, "hash": arch_hash(canonical), "describe": space.describe(canonical)}
    except Exception as e:      # noqa: BLE001 (a label must not fail a trained trial)
        _logger.warning("no architecture label for the web UI (%s: %s)", type(e).__name__, e)
        return dict(final)


def without_labels(metric: dict[str, Any]) -> dict[str, Any]:
    """``metric`` without the web UI labels of :func:`label_final`."""
    return {k: v for k, v in metric.items() if k not in LABEL_KEYS}


def labelled_hash(metric: Any) -> str | None:
    """The architecture hash a final metric names, or None (an older trial, a bare number)."""
    h = metric.get("hash") if isinstance(metric, dict) else None
    return h if isinstance(h, str) else None

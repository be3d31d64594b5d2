"""Helpers shared by the strategies: canonical architecture hashing and integer encoding."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from nni.mutable import Categorical

__all__ = ["arch_hash", "categorical_space", "encode", "decode"]


def arch_hash(sample: dict[str, Any]) -> str:
    """Canonical hash of an architecture dict: equal dicts (any key order) give equal hashes."""
    canon = json.dumps(sample, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(canon.encode("utf-8")).hexdigest()[:16]


def categorical_space(model_space: Any) -> dict[str, list[Any]]:
    """``{label: values}`` from ``model_space.simplify()``; every mutable must be a ``Categorical``."""
    out: dict[str, list[Any]] = {}
    for label, mutable in model_space.simplify().items():
        if not isinstance(mutable, Categorical):
            raise TypeError(f"search space label '{label}' is a {type(mutable).__name__}; this strategy encodes "
                            "architectures as one integer per label and needs Categorical choices only")
        out[label] = list(mutable.values)
    return out


def encode(space: dict[str, list[Any]], sample: dict[str, Any]) -> list[int]:
    return [space[k].index(sample[k]) for k in space]


def decode(space: dict[str, list[Any]], x: Any) -> dict[str, Any]:
    return {k: vals[int(i)] for (k, vals), i in zip(space.items(), x)}

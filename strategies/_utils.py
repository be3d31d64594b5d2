"""Helpers shared by the strategies: integer encoding of categorical samples (hashing lives in the core)."""
from __future__ import annotations

from typing import Any

from mednas_nni.contracts.search_space import label_values as categorical_space
from mednas_nni.engines.records import arch_hash

__all__ = ["arch_hash", "categorical_space", "encode", "decode"]


def encode(space: dict[str, list[Any]], sample: dict[str, Any]) -> list[int]:
    return [space[k].index(sample[k]) for k in space]


def decode(space: dict[str, list[Any]], x: Any) -> dict[str, Any]:
    return {k: vals[int(i)] for (k, vals), i in zip(space.items(), x)}

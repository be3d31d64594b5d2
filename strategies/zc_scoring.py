"""Zero-cost scoring of one architecture for the MedNAS / MSTF-NAS search: the trial function and its objectives.

Each architecture is scored without training by zero-cost proxies (:mod:`mednas_nni.evaluators.zero_cost`) on one
batch of real training images, with weights re-initialised from a fixed seed so that a score is a function of the
architecture alone (the search's cache relies on it).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mednas_nni.errors import MedNASError

__all__ = ["Objective", "KNOWN_PROXIES", "reset_parameters", "score_model", "score_trial", "ProxyScoreError"]

KNOWN_PROXIES = ("jacob_cov", "synflow", "log_synflow", "grad_norm", "snip", "params", "flops")


class Objective:
    """``"name"`` or ``"name:max"`` / ``"name:min"`` (a proxy name and a direction; default max)."""

    def __init__(self, spec: str):
        name, _, goal = spec.partition(":")
        self.name, self.goal = name.strip(), (goal.strip() or "max")
        if self.name not in KNOWN_PROXIES:
            raise ValueError(f"a proxy name, one of {', '.join(KNOWN_PROXIES)}")
        if self.goal not in ("max", "min"):
            raise ValueError("a direction 'max' or 'min' after the colon")

    def to_min(self, value: float) -> float:
        """pymoo minimises: negate objectives to maximise."""
        return -value if self.goal == "max" else value

    def __repr__(self) -> str:
        return f"{self.name}:{self.goal}"


def reset_parameters(model: Any, seed: int) -> None:
    """Re-initialise every layer from ``seed`` (the proxies score an architecture at initialisation, and
    ``freeze`` draws fresh weights from the global RNG: this makes a score a function of the architecture)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()


def score_model(model: Any, inputs: Any, targets: Any, proxies: list[str], device: str = "cpu",
                init_seed: int | None = 0) -> dict[str, Any]:
    """Zero-cost scores of one frozen model as a dict; a failure gives ``{"error": reason}`` instead of raising.

    With ``init_seed`` (default 0) the weights are re-initialised from that seed first, so equal
    architectures always get equal scores (the cache relies on it).
    """
    from mednas_nni.evaluators.zero_cost import compute_proxies

    t0 = time.perf_counter()
    try:
        if init_seed is not None:
            reset_parameters(model, init_seed)
        model = model.to(device)
        scores = compute_proxies(model, inputs.to(device), targets.to(device), proxies)
        out: dict[str, Any] = {k: float(v) for k, v in scores.items()}
    except Exception as e:  # noqa: BLE001 - any failure of one architecture is recorded, the search goes on
        out = {"error": f"{type(e).__name__}: {e}"}
    out["seconds"] = time.perf_counter() - t0
    return out


class ProxyScoreError(MedNASError):
    """An architecture whose zero-cost scores could not be computed or are not finite (recorded as failed)."""


def score_trial(model: Any, sample: dict[str, Any], ctx: Any, report: Callable[[dict[str, Any]], None], *,
                proxies: list[str], objectives: list[str], proxy_batch_size: int = 64,
                init_seed: int | None = 0) -> dict[str, Any]:
    """Trial function: zero-cost scores of one frozen model (see :func:`score_model`) as the final metrics.

    ``default`` (what NNI's web UI plots) is bounded in [0, 1]: the share of the architectures scored before in
    this run whose first objective is worse than this one's (0.5 for the first), so trials compare on one scale.
    A failure or a non-finite objective raises :class:`ProxyScoreError` (the trial is recorded as failed).
    """
    inputs, targets = ctx.proxy_batch(proxy_batch_size)
    scores = score_model(model, inputs, targets, proxies, ctx.device, init_seed)
    if "error" in scores:
        raise ProxyScoreError(scores["error"])
    for spec in objectives:
        name = Objective(spec).name
        if not _finite(scores.get(name)):
            raise ProxyScoreError(f"proxy {name} is not finite ({scores.get(name)})")
    return {"default": _percentile(ctx, Objective(objectives[0]), scores), **scores}


def _percentile(ctx: Any, first: Objective, scores: dict[str, Any]) -> float:
    from mednas_nni.io import RunDir, read_jsonl

    mine = first.to_min(scores[first.name])
    before = [first.to_min(r["metrics"][first.name]) for r in read_jsonl(ctx.run_dir / RunDir.ARCHS)
              if r.get("status") == "ok" and _finite((r.get("metrics") or {}).get(first.name))]
    return float(np.mean([mine < b for b in before])) if before else 0.5


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

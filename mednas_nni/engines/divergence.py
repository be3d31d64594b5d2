"""When a training run has diverged: a non-finite or exploding training loss.

A network whose loss blew up (``lr=1e6`` reached a train loss of 1e11 in GeNAS trials) still produces
predictions, and its validation scores (a constant class, AUC ~0.5) look like those of a poor but real network.
It is recorded as failed with the reason instead, so it never competes as a trained network.

Why a fixed bound: the tasks' losses start near the loss of a uniform guess (cross-entropy ln C, about 0.7 for
two classes and 2.2 for nine; Dice + CE below about 3) and fall while training; a mean training loss above
:data:`MAX_TRAIN_LOSS` means the weights have left any useful range, whatever the task.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["MAX_TRAIN_LOSS", "divergence_reason"]

#: a mean epoch training loss above this is divergence (see the module doc)
MAX_TRAIN_LOSS = 1e4


def divergence_reason(history: Iterable[dict[str, Any]] | None, hint: str = "lower the learning rate") -> str | None:
    """Why the per-epoch ``history`` (records with ``train_loss``) diverged, or None if it did not."""
    for rec in history or []:
        loss = rec.get("train_loss") if isinstance(rec, dict) else None
        if not isinstance(loss, (int, float)) or isinstance(loss, bool):
            continue
        if not math.isfinite(loss) or loss > MAX_TRAIN_LOSS:
            return (f"diverged: training loss {loss:.3g} at epoch {rec.get('epoch', '?')} (expected a finite loss "
                    f"below {MAX_TRAIN_LOSS:g}); {hint}")
    return None

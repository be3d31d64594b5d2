"""A trial's parameters as NNI's manager assigned them, where NNI 3.0 handed the trial another trial's.

NNI 3.0's training services can give two trials started together each other's parameters: a trial asks its command
channel for *a* parameter and gets the next one queued, while the manager (its database, the web UI's trial rows,
the tuner's ``trial_end``) keeps its own assignment. Measured on the local service, a ``mednas search`` with two
concurrent trials: the first two trials ran each other's architecture, so NNI's database and web UI showed each
trial's metrics beside the other's architecture (our run directory was right: results are matched by parameter id).

:func:`get_assigned_parameter` replaces ``nni.get_next_parameter()`` in every trial entry we own (the ``nnictl``
trial, the one-shot nnictl trial, and :mod:`~mednas_nni.engines.nas_trial_entry` for ``mednas search`` on a training
service): it reads this trial's record from the manager's REST API and, where it differs from what the channel sent,
runs the assigned one and reports under its parameter id. NNI has no public API for this; ``nni.trial._params`` is
the record its ``report_*`` functions read (hand-written for that reason).

Where the manager cannot be reached from the trial (a remote worker: the channel is the worker's own trial keeper),
the channel's parameter is used as before and the reason is logged.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

__all__ = ["get_assigned_parameter", "assigned_record"]

_logger = logging.getLogger(__name__)


def assigned_record(load: Callable[[str], Any] = json.loads) -> dict[str, Any] | None:
    """This trial's parameter record as NNI's manager stored it (REST ``trial-jobs/<id>``, decoded with ``load``);
    None where unknown (outside NNI, or the manager is not on this machine's loopback)."""
    from urllib.parse import urlparse
    from urllib.request import urlopen

    channel, tid = os.environ.get("NNI_TRIAL_COMMAND_CHANNEL"), os.environ.get("NNI_TRIAL_JOB_ID")
    try:
        port = urlparse(channel).port if channel else None
        if not port or not tid:
            return None
        with urlopen(f"http://127.0.0.1:{port}/api/v1/nni/trial-jobs/{tid}", timeout=10) as r:
            hp = json.loads(r.read()).get("hyperParameters") or []
        rec = load(hp[-1]) if hp else None
        return rec if isinstance(rec, dict) and "parameters" in rec else None
    except Exception as e:  # noqa: BLE001 (a correction that cannot be made must not fail the trial)
        _logger.info("could not read this trial's parameters from NNI's manager (%s: %s)", type(e).__name__, e)
        return None


def get_assigned_parameter(load: Callable[[str], Any] = json.loads) -> Any:
    """``nni.get_next_parameter()``, corrected to the manager's assignment where NNI sent another trial's."""
    import nni

    params = nni.get_next_parameter()
    sent = nni.trial._params
    mine = assigned_record(load)
    if mine is not None and isinstance(sent, dict) and mine.get("parameter_id") != sent.get("parameter_id"):
        _logger.warning("NNI sent parameter %s, but the manager assigned this trial %s: running the assigned one",
                        sent.get("parameter_id"), mine.get("parameter_id"))
        nni.trial._params = mine
        params = mine["parameters"]
    return params

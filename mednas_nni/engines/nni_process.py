"""Control of NNI's processes: the resume-hang fix and stopping what a killed driver left running.

Both are work-arounds for NNI 3.0 behaviour verified in NNI_NOTES §5: on a NAS resume the manager sends
``ImportData``, which the tuner command channel does not know (the listener thread dies and the strategy waits for
ever), and a driver killed with SIGKILL leaves its NNI manager and trials running.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

__all__ = ["patch_nni_resume_hang", "stop_nni_experiment", "nni_manifest", "TERMINAL_STATES"]

_logger = logging.getLogger(__name__)

#: NNI trial states after which a trial never changes again
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")

_PATCHED = False


def patch_nni_resume_hang() -> None:
    """Let NNI 3.0's tuner command channel skip unknown commands (applied once per process).

    On a NAS resume the NNI manager sends ``ImportData``; ``TunerCommandChannel.receive`` raises
    ``ValueError('Unknown command type')``, the listener thread dies and the strategy waits forever for a worker
    (NNI_NOTES §5). Skipping the unknown command is all the NAS engine needs (it replays nothing from it).
    """
    global _PATCHED
    if _PATCHED:
        return
    from nni.runtime.tuner_command_channel import channel as _ch

    original = _ch.TunerCommandChannel.receive

    def _receive_skip_unknown(self: Any) -> Any:
        while True:
            try:
                return original(self)
            except ValueError as e:
                if "Unknown command type" not in str(e):
                    raise
                _logger.debug("skipping an unknown NNI command on the tuner channel: %s", e)

    _ch.TunerCommandChannel.receive = _receive_skip_unknown
    _PATCHED = True


def nni_manifest(exp_id: str, manifest: Path | None = None) -> dict[str, Any] | None:
    if manifest is not None:
        try:
            info = json.loads(Path(manifest).read_text()).get(exp_id)
        except (OSError, json.JSONDecodeError):
            return None
    else:
        from nni.tools.nnictl.config_utils import Experiments

        info = Experiments().get_all_experiments().get(exp_id)
    return info if isinstance(info, dict) else None


def _experiment_processes(exp_id: str, manager_pid: int | None) -> list[Any]:
    """The NNI manager of ``exp_id`` (its command line names the id) and its trials (``NNI_EXP_ID`` = the id)."""
    import psutil

    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in me:
            continue
        try:
            if proc.pid == manager_pid and exp_id in " ".join(proc.info["cmdline"] or []):
                out.insert(0, proc)
            elif proc.environ().get("NNI_EXP_ID") == exp_id:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def stop_nni_experiment(exp_id: str, timeout: float = 30.0, manifest: Path | None = None) -> bool:
    """Stop what is left of NNI experiment ``exp_id`` (e.g. after its driver was killed): manager, then trials.

    Only processes of exactly this experiment are signalled: the manager recorded for this id in NNI's manifest
    (``~/nni-experiments/.experiment``, or ``manifest``) whose command line names the id, and trial processes whose
    ``NNI_EXP_ID`` is the id (a killed driver's manager keeps running its trials; cancelling them keeps a late
    result of an orphaned trial from landing in the database after the resumed search re-submitted it). This is
    ``nnictl stop ID`` plus the trials; never ``--all``. Returns True if anything was stopped.
    """
    import psutil

    info = nni_manifest(exp_id, manifest)
    if info is None:
        return False
    procs = _experiment_processes(exp_id, info.get("pid"))
    for proc in procs:
        _logger.warning("stopping %s of NNI experiment %s (pid %d)",
                        "the orphaned manager" if proc.pid == info.get("pid") else "an orphaned trial", exp_id,
                        proc.pid)
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    if manifest is None and info.get("status") != "STOPPED":
        from nni.tools.nnictl.config_utils import Experiments

        Experiments().update_experiment(exp_id, "status", "STOPPED")
        Experiments().update_experiment(exp_id, "endTime", int(time.time() * 1000))
    return bool(procs)

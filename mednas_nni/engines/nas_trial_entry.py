"""The trial command of ``mednas search`` on an NNI training service.

NNI fixes a NAS experiment's trial command to ``{envs} {python} -m nni.nas.execution.training_service trial``; we set
``python`` to ``<interpreter> -m mednas_nni.engines.nas_trial_entry``, so the command becomes
``<interpreter> -m mednas_nni.engines.nas_trial_entry -m nni.nas.execution.training_service trial``. This entry does
what NNI's ``trial_entry`` does (get the parameter, execute the model space) with the parameter the manager assigned
this trial (:mod:`~mednas_nni.engines.assigned_parameters`), so the web UI shows each trial's metrics beside the
architecture that produced them.
"""
from __future__ import annotations

import logging
import sys

__all__ = ["NNI_ENTRY", "nas_trial_python", "main"]

NNI_ENTRY = ["-m", "nni.nas.execution.training_service", "trial"]
"""The arguments NNI appends to the ``python`` of its trial command."""

_logger = logging.getLogger(__name__)


def nas_trial_python(interpreter: str | None = None) -> str:
    """The ``python`` part of NNI's NAS trial command that makes it run this entry (``interpreter``: the trial
    machine's Python, default this one's; used as given, as NNI does)."""
    return f"{interpreter or sys.executable} -m mednas_nni.engines.nas_trial_entry"


def main(argv: list[str] | None = None) -> int:
    import nni
    from nni.nas.space import ExecutableModelSpace

    from .assigned_parameters import get_assigned_parameter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    if args != NNI_ENTRY:
        _logger.error("usage: python -m mednas_nni.engines.nas_trial_entry %s (NNI's trial command); got %s",
                      " ".join(NNI_ENTRY), " ".join(args) or "no arguments")
        return 2
    params = get_assigned_parameter(load=nni.load)
    if not isinstance(params, ExecutableModelSpace):
        _logger.error("expected an ExecutableModelSpace from NNI, got %s", type(params).__name__)
        return 1
    params.execute()
    return 0


if __name__ == "__main__":
    sys.exit(main())

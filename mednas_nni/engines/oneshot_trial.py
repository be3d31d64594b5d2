"""A whole one-shot search as ONE nnictl trial: ``python -m mednas_nni.engines.oneshot_trial CONFIG [KEY=VALUE ...]``.

A one-shot ``NasExperiment`` has no NNI manager and no web UI, and inside a trial it swallows intermediate results
(``../shared/NNI_NOTES.md`` §4, verified). The way that works: an HPO experiment (e.g. ``GridSearch`` over λ) whose
trial command is this module. It asks NNI for the trial's parameters (``nni.get_next_parameter()``), applies each
``name: value`` as the override ``strategy.params.<name>=<value>`` (a dotted name is used as given, e.g.
``space.params.channels``), runs the experiment (search, retraining, test) in ``<run.out_dir>/<run name>-<trial id>``,
and the one-shot engine reports to NNI from its Lightning callback: per epoch an intermediate dict (``default`` = the
supernet's validation metric, ``evaluator.select_by``; E_params, E_flops, losses, every α probability as
``p/<label>/<value>``) and, when the search ends, the final dict (the last epoch's). See
``examples/cc_darts_dsb2018_nnictl.yml``.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["overrides_from_parameters", "main"]

_logger = logging.getLogger(__name__)


def overrides_from_parameters(params: dict[str, Any]) -> list[str]:
    """``{"lambda_params": 0.015}`` -> ``["strategy.params.lambda_params=0.015"]`` (dotted names kept)."""
    import json

    out = []
    for k, v in sorted(params.items()):
        key = k if "." in k else f"strategy.params.{k}"
        out.append(f"{key}={json.dumps(v)}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the config given on the command line with the trial's parameters; 0 on success."""
    import nni

    from ..config import load_config
    from ..errors import MedNASError
    from ..experiment import run_search
    from .assigned_parameters import get_assigned_parameter

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m mednas_nni.engines.oneshot_trial CONFIG [KEY=VALUE ...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = get_assigned_parameter() or {}
    trial = nni.get_trial_id() or "local"
    try:
        cfg = load_config(argv[0], overrides=[*argv[1:], *overrides_from_parameters(params)])
        cfg.run.name = f"{cfg.run_name()}-{trial}"
        cfg.run.progress = False
        rd = run_search(cfg)
    except MedNASError as e:
        print(f"mednas: {e}", file=sys.stderr)
        return 2
    print(f"run directory: {rd.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

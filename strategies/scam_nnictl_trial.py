"""One NAS-SCAM search as one nnictl trial: ``python -m mednas_nni.strategies.scam_nnictl_trial CONFIG``.

NNI's one-shot ``NasExperiment`` has no manager and no web UI (``../shared/NNI_NOTES.md`` §4), and ``MedNASTuner``
drives multi-trial strategies only, so a one-shot search is shown in the web UI by running the whole
``mednas search`` inside one NNI trial: this module asks NNI for the trial's parameters (``{"dotted.config.key":
value}``, e.g. ``{"space.params.combination": "serial"}`` from a ``GridSearch`` search space), applies them as config
overrides, and runs the search. The one-shot engine then reports every epoch (``default`` = the supernet's
validation Dice; losses and softmax(α) of every edge as named keys) with ``nni.report_intermediate_result`` and the
last search epoch as the final result. The finalist is retrained and tested in the same trial; the run directory is
``<run.out_dir>/<run.name>-trial<NNI trial id>-<time>``.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "overrides_from_parameters"]

_logger = logging.getLogger(__name__)


def overrides_from_parameters(params: dict[str, Any]) -> list[str]:
    """``KEY=VALUE`` config overrides from NNI parameters (values as JSON unless they are plain strings)."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(params.items())]


def main(argv: list[str] | None = None) -> int:
    """Run the search of ``argv[0]`` (a mednas config) with the trial's parameters; 0 on success, 2 on a bad
    config, 1 on a failed run (one line on stderr each)."""
    import nni

    from mednas_nni.config import load_config
    from mednas_nni.errors import ConfigError, MedNASError
    from mednas_nni.experiment import run_search

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m mednas_nni.strategies.scam_nnictl_trial CONFIG", file=sys.stderr)
        return 2
    params = nni.get_next_parameter() or {}
    trial = nni.get_trial_id() or "standalone"
    try:
        cfg = load_config(Path(argv[0]), overrides_from_parameters(params))
        cfg.run.name = f"{cfg.run.name or cfg.strategy.name}-trial{trial}"
        rd = run_search(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MedNASError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"run directory: {rd.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

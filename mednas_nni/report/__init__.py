"""Run reports: ``report.md`` / ``report.html`` and ``environment.json`` in every finished run directory, the
clinical metrics merged into ``metrics.json``, and the ``mednas runs`` leaderboard.

============================  ===================================================================================
:mod:`.environment`           ``environment.json``: Python, package versions, git revision, CPU/GPU, seed
:mod:`.detailed`              the task's detailed metrics (CIs, confusion matrix, calibration) into metrics.json
:mod:`.document`              a tiny document model rendered to Markdown and to self-contained HTML
:mod:`.run_report`            the report's sections, read from a run directory
:mod:`.leaderboard`           ``mednas runs [DIR]``: one row per run directory
:mod:`.cli`                   the ``runs`` and ``report`` subcommands
============================  ===================================================================================

Names are imported on first use, so ``import mednas_nni.report`` stays cheap (no torch).
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["write_run_report", "write_environment", "environment_record", "add_detailed_metrics", "leaderboard",
           "add_parsers"]

_WHERE = {"write_run_report": "run_report", "write_environment": "environment",
          "environment_record": "environment", "add_detailed_metrics": "detailed", "leaderboard": "leaderboard",
          "add_parsers": "cli"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

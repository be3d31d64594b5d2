"""``mednas runs [DIR]`` (the leaderboard) and ``mednas report RUN_DIR`` (write the run report again, e.g. after
``mednas export`` added Grad-CAM images). Registered on the ``mednas`` parser by :func:`add_parsers`."""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parsers", "cmd_runs", "cmd_report"]


def cmd_runs(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .leaderboard import format_table, leaderboard, to_json

    root = Path(args.dir)
    if not root.is_dir():
        got = "a file" if root.exists() else "nothing"
        raise ConfigError(f"{root}: expected a folder of run directories, got {got}")
    rows = leaderboard(root, sort=args.sort)
    print(to_json(rows) if args.json else format_table(rows))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..errors import RunDirError
    from .run_report import REPORT_HTML, REPORT_MD, write_run_report

    rd = Path(args.run_dir)
    if not (rd / "config.resolved.yaml").is_file():
        raise RunDirError(f"{rd}: expected a run directory (with config.resolved.yaml), got none")
    written = write_run_report(rd, environment=not (rd / "environment.json").exists())
    if not any(p.name == REPORT_HTML for p in written):
        raise RunDirError(f"{rd}: the report could not be written (see the warning above)")
    print(f"wrote {rd / REPORT_MD} and {rd / REPORT_HTML}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``runs`` and ``report`` subcommands to the ``mednas`` parser."""
    r = sub.add_parser("runs", help="compare run directories (a leaderboard)",
                       description="One line per run directory under DIR (default: runs): data, method, phase, "
                                   "the winner's test metrics with 95 %% bootstrap CIs, parameters and time.")
    r.add_argument("dir", nargs="?", default="runs", metavar="DIR")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.add_argument("--sort", metavar="METRIC", help="sort by a test metric (auc, dice, sensitivity, ...), best first")
    r.set_defaults(func=cmd_runs)

    p = sub.add_parser("report", help="write report.md / report.html of a run directory again",
                       description="Write RUN_DIR/report.md and report.html (PNG figures inline) from the run's "
                                   "files, e.g. after 'mednas export' added Grad-CAM images.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)

"""The ``mednas`` command line: search, resume, validate, list, register.

Errors print one line (``mednas: <file>: <field>: expected X, got Y``) and exit 2 for config/usage
problems, 1 for runtime problems; ``--debug`` (before or after the subcommand) shows the traceback instead.
Options may come before or after ``KEY=VALUE`` overrides.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from . import __version__
from .errors import ConfigError, MedNASError

#: the run directory of the command in progress (told by the run as soon as it exists), for the error hints
_RUN_DIR: list[Any] = []


def _announce(line: str) -> None:
    """Show one line about the run in progress (stderr, beside the progress bars)."""
    if line.startswith("run directory: "):
        _RUN_DIR[:] = [line.removeprefix("run directory: ").split(" (")[0]]
    print(f"mednas: {line}", file=sys.stderr, flush=True)

_logger = logging.getLogger("mednas_nni")


def _split_config_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    config, overrides = None, []
    for i, it in enumerate(items):
        if i == 0 and "=" not in it:
            config = it
        elif "=" in it:
            overrides.append(it)
        else:
            raise ConfigError(f"argument '{it}': expected KEY=VALUE after the config file, got a second file name")
    return config, overrides


_LABELS = {"auc": "AUC", "acc": "ACC", "balanced_acc": "bal. ACC", "f05": "F0.5", "dice": "Dice", "iou": "IoU",
           "hd95": "HD95", "pixel_acc": "pixel ACC"}


def _fmt_metrics(d: dict[str, Any], keys: list[str]) -> str:
    return " ".join(f"{_LABELS.get(k, k)} {d[k]:.3f}" for k in keys if isinstance(d.get(k), (int, float)))


def _headline(rd: Any) -> str:
    from .io import RunDir

    m = json.loads((rd / RunDir.METRICS).read_text()) if (rd / RunDir.METRICS).exists() else {}
    lines = [f"run directory: {rd.path}"]
    if m:
        t, v = m["test"], m["val"]
        b = m.get("baseline_test") or m.get("majority_baseline_test") or {}
        key = m.get("selected_by", "val_auc").removeprefix("val_")
        # f05 is F0.5 of label 1 (kept for the golden records); when the positive class is named, its own F-beta and
        # sensitivity at the validation-chosen threshold are what a clinician reads, so the line shows those instead
        op = t.get("at_operating_point") if isinstance(t.get("at_operating_point"), dict) else None
        keys = [key] + [k for k in _LABELS if k != key and k in t and not (op and k == "f05")]
        s = m.get("search", {})
        pruned = f", {s['pruned']} pruned before training" if s.get("pruned") else ""
        sessions = f" over {s['sessions']} sessions" if (s.get("sessions") or 1) > 1 else ""
        failed_fin = f" ({len(m['failed_finalists'])} failed)" if m.get("failed_finalists") else ""
        csv_path = rd / "oneshot_metrics.csv"       # a one-shot search trains one supernet: say so, not "0 evaluated"
        last_row = csv_path.read_text().splitlines()[-1] if csv_path.exists() else ""
        what = (f"one-shot supernet trained to epoch {last_row.split(',')[0]}"
                if csv_path.exists() and not s.get("evaluated") else
                f"{s.get('evaluated')} architectures evaluated ({s.get('failed')} failed{pruned})")
        lines.append(f"search: {what} in "
                     f"{(s.get('seconds') or 0):.0f} s{sessions}; "
                     f"{len(m['finalists']) + len(m.get('failed_finalists') or [])} finalist(s) retrained"
                     f"{failed_fin} for {m['retrain']['epochs']} epoch(s)")
        if (rd / "variation.json").exists():        # the strategy's own one-line search statistics (zc_nsga2)
            lines.append(json.loads((rd / "variation.json").read_text()).get("summary", ""))
        lines.append(f"best ({m['dataset']}, finalist {m['best_finalist']}, {m['params']:,} params): "
                     f"val {_fmt_metrics(v, [key])} | test {_fmt_metrics(t, keys)} "
                     f"(trivial baseline {_fmt_metrics(b, [k for k in keys if k in b])})")
        if op and m.get("positive_class"):
            name = m["positive_class"]["name"]
            f3 = lambda x: f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"  # noqa: E731 (undefined: no cases)
            lines.append(f"operating point (chosen on val): {name} when P({name}) >= {f3(op['threshold'])}: "
                         f"test {name} sensitivity {f3(op['sensitivity'])}, specificity {f3(op['specificity'])}, "
                         f"PPV {f3(op['ppv'])}, F-beta({name}) {f3(op['fbeta_positive'])}")
        for f in ("pareto.png", "overlays.png", "best_arch.json", "best.pt", "metrics.json"):
            if (rd / f).exists():
                lines.append(f"  {rd / f}")
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace) -> int:
    from .config import load_config
    from .experiment import run_search

    config, overrides = _split_config_and_overrides(args.items)
    cfg = load_config(config, overrides)
    if args.no_progress:
        cfg.run.progress = False
    rd = run_search(cfg, announce=_announce)
    print(_headline(rd))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from .experiment import resume_search

    _RUN_DIR[:] = [args.run_dir]
    rd = resume_search(args.run_dir, progress=False if args.no_progress else None, announce=_announce)
    print(_headline(rd))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .config import dump_config, load_config
    from .io import check_out_dir

    config, overrides = _split_config_and_overrides(args.items)
    cfg = load_config(config, overrides)
    try:
        check_out_dir(cfg.run.out_dir)
    except ConfigError as e:
        raise ConfigError(f"{cfg.source}: {e}") from None
    remote = _validate_remote(cfg, ssh=not getattr(args, "no_ssh", False))
    if args.show:
        print(dump_config(cfg), end="")
    print(f"{config or 'default.yaml (embedded)'}: ok ({cfg.data.name} / {cfg.space.name} / {cfg.strategy.name}"
          f"{' / ' + cfg.export.name if cfg.export else ''}); runs go to {cfg.run.out_dir}")
    for line in remote:
        print(f"  training_service.{line}")
    return 0


def _validate_remote(cfg: Any, ssh: bool) -> list[str]:
    """``training_service.platform: remote``: the checks a search runs before it starts (hosts, keys, the SSH
    preflight, data paths or the upload's size), without changing anything on the machines. Host keys go to a
    throwaway known_hosts (a search pins them per run directory)."""
    if cfg.training_service.platform != "remote":
        return []
    import tempfile
    from pathlib import Path

    from .engines.training_service import check_remote_config

    with tempfile.TemporaryDirectory(prefix="mednas-validate-") as tmp:
        return check_remote_config(cfg, Path(tmp) / "known_hosts", ssh=ssh)


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import KINDS, list_plugins

    try:
        infos = list_plugins(args.kind)
    except ValueError as e:          # an unknown kind (the registry also takes 'strategy', 'space', ...)
        raise ConfigError(f"--kind: {e}") from None
    if args.json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
        return 0
    for kind in (KINDS if args.kind is None else (infos[0].kind,) if infos else ()):
        rows = [i for i in infos if i.kind == kind]
        print(f"{kind}:")
        if not rows:
            print("  (none installed)")
        for i in rows:
            state = i.summary if i.status == "ok" else f"FAILED: {i.error}"
            print(f"  {i.name:<14} [{i.origin}]  {state}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from .engines.nnictl_tuner import register_tuners

    for name, cls in register_tuners():
        print(f"registered NNI tuner {name} -> {cls}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``mednas search: error: ...; see 'mednas search --help'``)."""

    def error(self, message: str) -> Any:   # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mednas", description="Neural architecture search for medical images (NNI 3.0).")
    p.add_argument("--version", action="version", version=f"mednas-nni {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="run a search (no CONFIG: the embedded default)",
                       description="Run a search. CONFIG is a YAML file (default: the embedded "
                                   "default.yaml); KEY=VALUE items override it, e.g. strategy.params.pop_size=40.")
    s.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...]")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_search)

    r = sub.add_parser("resume", help="continue an interrupted run")
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_resume)

    v = sub.add_parser("validate", help="check a config without running it (no CONFIG: the embedded default)",
                       description="Check a config: plugins, parameters, data files and that run.out_dir can be "
                                   "written; with training_service.platform remote also every machine (host, key "
                                   "file, and over SSH the interpreter, its packages and the data paths). CONFIG "
                                   "defaults to the embedded default.yaml.")
    v.add_argument("items", nargs="*", metavar="[CONFIG] [KEY=VALUE ...]")
    v.add_argument("--show", action="store_true", help="print the resolved config")
    v.add_argument("--no-ssh", action="store_true", help="training_service remote: check hosts and key files "
                   "only, do not log in to the machines (by default validate runs the SSH preflight a search runs)")
    v.set_defaults(func=cmd_validate)

    ls = sub.add_parser("list", help="list installed plugins")
    ls.add_argument("--kind", metavar="KIND", help="datasets, tasks, search_spaces, strategies or exporters "
                                                     "(singular names too: strategy, space, ...)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    rg = sub.add_parser("register", help="register mednas tuners with nnictl (NNI's algorithm registry)")
    rg.set_defaults(func=cmd_register)

    # Deployment commands (export, predict) live in their own module: predict must not import torch or nni.
    from .cli_deploy import add_parsers

    add_parsers(sub)
    __import__("mednas_nni.report.cli", fromlist=["add_parsers"]).add_parsers(sub)   # runs, report
    return p


#: subcommands whose positional list takes KEY=VALUE overrides wherever they stand among the options
_TAKES_ITEMS = ("search", "validate")


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``: ``--debug`` after the subcommand too, and options before or after the KEY=VALUE items."""
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for sp in subs.choices.values():
        if not any("--debug" in a.option_strings for a in sp._actions):
            sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show tracebacks and debug logging")
    args, extras = parser.parse_known_args(argv)
    if extras:
        items = getattr(args, "items", None)
        if args.command not in _TAKES_ITEMS or items is None or any(e.startswith("-") for e in extras):
            subs.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
        items.extend(extras)
    return args


def _resume_hint() -> str:
    from pathlib import Path

    if _RUN_DIR and Path(_RUN_DIR[0]).is_dir():
        return f"; continue with 'mednas resume {_RUN_DIR[0]}'"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _RUN_DIR.clear()
    args = _parse(parser, argv)
    # The terminal shows warnings (debug with --debug); each run's search.log gets INFO as well.
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    logging.getLogger().setLevel(logging.DEBUG if args.debug else logging.INFO)
    if not args.debug:
        # NNI and torch print harmless warnings on import (NNI_NOTES §0); keep the terminal readable.
        import warnings

        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"nni\..*")
        warnings.filterwarnings("ignore", category=UserWarning)
        logging.getLogger("nni").setLevel(logging.ERROR)
        # A failed architecture is recorded with its one-line reason (archs.jsonl, search.log) and the search goes
        # on; NNI's sequential engine would print the trial's traceback for each one.
        logging.getLogger("nni.nas.execution.sequential").setLevel(logging.CRITICAL)
    try:
        return _run(args)
    finally:
        logging.getLogger().removeHandler(console)   # main() may be called again in one process (tests, notebooks)


def _run(args: argparse.Namespace) -> int:
    """Run the subcommand; every error becomes one line on stderr and an exit code (unless ``--debug``)."""
    try:
        return args.func(args)
    except MedNASError as e:
        if args.debug:
            raise
        hint = _resume_hint() if getattr(e, "resumable", False) else ""
        print(f"mednas: {_one_line(str(e))}{hint}", file=sys.stderr)
        return e.exit_code
    except OSError as e:   # disk full, permissions, a vanished folder: one line, the work done so far is kept
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"mednas: {where}{_one_line(str(e.strerror or e))} (runtime error{_resume_hint()}; --debug shows "
              "the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = _resume_hint()
        print(f"mednas: interrupted{hint or '; nothing to resume (no result had been written yet)'}",
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the README promises one line for every runtime error
        if args.debug:
            raise
        print(f"mednas: {type(e).__name__}: {_one_line(str(e))} (runtime error{_resume_hint()}; --debug shows "
              "the traceback)", file=sys.stderr)
        return 1


def _one_line(text: str, limit: int = 400) -> str:
    """The first line of ``text``, at most ``limit`` characters (a message must never spill over lines)."""
    first = (text.strip().splitlines() or [""])[0]
    return first if len(first) <= limit else first[:limit - 3] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

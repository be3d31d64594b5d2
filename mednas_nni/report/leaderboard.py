"""``mednas runs [DIR]``: one row per run directory under ``DIR`` (default ``runs``): data, task, method, status,
the winner's test metrics with their 95 % CIs, parameters and time; as a table, or ``--json``.

A run directory is any folder holding ``config.resolved.yaml`` (``DIR`` itself, its children, or its
grandchildren, e.g. ``runs/`` of several benchmark folders). Unfinished runs are listed with their phase.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .run_report import _read_json, fmt, fmt_ci, metric_label

__all__ = ["find_runs", "run_row", "leaderboard", "format_table"]

_HEADLINE = {"classification": ("auc", "balanced_acc", "fbeta_positive"), "segmentation": ("dice", "iou", "hd95")}


def find_runs(root: str | Path, depth: int = 2) -> list[Path]:
    """Run directories at most ``depth`` folders below ``root`` (``root`` itself included), sorted by path."""
    root = Path(root)
    found: list[Path] = []
    level = [root]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            if (d / "config.resolved.yaml").is_file():
                found.append(d)
            elif d.is_dir():
                nxt += [c for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        level = nxt
    return sorted(found)


def run_row(path: Path) -> dict[str, Any]:
    """The leaderboard row of one run directory (JSON-ready)."""
    from .run_report import _read_yaml

    m = _read_json(path / "metrics.json") or {}
    st = _read_json(path / "status.json") or {}
    if not m:       # an unfinished run: what it is comes from its config
        cfg = _read_yaml(path / "config.resolved.yaml") or {}
        m = {k: (cfg.get(section) or {}).get("name") for k, section in
             (("dataset", "data"), ("strategy", "strategy"), ("space", "space"))}
    test, ci = m.get("test") or {}, (m.get("test") or {}).get("ci95") or {}
    keys = [k for k in _HEADLINE.get(m.get("task", ""), ()) if k in test]
    pos, op = m.get("positive_class"), m.get("operating_point")
    row: dict[str, Any] = {
        "run": path.name, "path": str(path), "phase": st.get("phase", "unknown"), "started": st.get("started"),
        "data": m.get("dataset"), "task": m.get("task"), "strategy": m.get("strategy"), "space": m.get("space"),
        "selected_by": m.get("selected_by"), "params": m.get("params"),
        "test": {k: test[k] for k in keys}, "ci95": {k: ci.get(k) for k in keys if ci.get(k)},
        "baseline_test": {k: (m.get("baseline_test") or {}).get(k) for k in keys},
        "seconds": {"search": (m.get("search") or {}).get("seconds"),
                    "retrain": (m.get("retrain") or {}).get("seconds")},
    }
    if pos and op:
        pc = (test.get("per_class") or {}).get(pos["name"], {})
        row["positive_class"] = pos["name"]
        row["threshold"] = op.get("threshold")
        row["sensitivity"] = pc.get("sensitivity")
        row["specificity"] = pc.get("specificity")
        row["ci95"].update({k: ci[f"op_{k}"] for k in ("sensitivity", "specificity") if ci.get(f"op_{k}")})
    return row


def leaderboard(root: str | Path = "runs", sort: str | None = None) -> list[dict[str, Any]]:
    """Rows of every run under ``root``; ``sort`` = a test metric name (best first, HD95 lowest first), else by
    start time."""
    rows = [run_row(p) for p in find_runs(root)]
    if sort:
        def key(r: dict[str, Any]) -> tuple[int, float]:
            v = r["test"].get(sort, r.get(sort))
            if not isinstance(v, (int, float)):
                return (1, 0.0)
            return (0, v if sort == "hd95" else -v)
        rows.sort(key=key)
    else:
        rows.sort(key=lambda r: (r.get("started") or "", r["run"]))
    return rows


def _metric_cell(r: dict[str, Any], k: str) -> str:
    v = r["test"].get(k, r.get(k))
    if v is None:
        return ""
    ci = fmt_ci(r["ci95"].get(k), 2)
    return f"{fmt(v)} [{ci}]" if ci else fmt(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table (one line per run) for the terminal."""
    if not rows:
        return "no run directories found"
    metric_keys: list[str] = []
    for r in rows:
        for k in list(r["test"]) + (["sensitivity"] if "sensitivity" in r else []):
            if k not in metric_keys:
                metric_keys.append(k)
    header = ["run", "phase", "data", "method", *(
        "sensitivity (positive)" if k == "sensitivity" else metric_label(k) for k in metric_keys),
        "params", "time"]
    table = [header]
    for r in rows:
        secs = [s for s in (r["seconds"]["search"], r["seconds"]["retrain"]) if isinstance(s, (int, float))]
        table.append([r["run"], r["phase"], r["data"] or "", f"{r['strategy'] or ''}/{r['space'] or ''}",
                      *(_metric_cell(r, k) for k in metric_keys), fmt(r["params"]) if r["params"] else "",
                      f"{sum(secs):.0f} s" if secs else ""])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = "[95 % bootstrap CI]" + ("; sensitivity: of the positive class at the operating threshold"
                                   if "sensitivity" in metric_keys else "")
    return "\n".join(lines) + "\n\n" + note


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, sort_keys=False)

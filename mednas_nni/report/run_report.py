"""``report.md`` and ``report.html`` of a finished run directory, read from its files only (no torch, no model).

Sections: summary, data (split sizes, class counts), search (what was tried, failed, pruned, time; Pareto front or
DARTS alphas), the winner and the other finalists, test metrics with 95 % CIs beside the validation metrics and
the trivial baseline, then per task: the operating point, confusion matrices, per-class rates and calibration
(classification) or per-class Dice/IoU/HD95 and the per-image Dice (segmentation); explanations (Grad-CAM images
or overlays), the environment, and the files. A section whose inputs are missing says so instead of failing, so a
report of an older run still renders.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from .document import Document, Heading, Image, Para, Table, render_html, render_markdown

__all__ = ["REPORT_MD", "REPORT_HTML", "build_report", "write_run_report", "fmt", "fmt_ci", "metric_label"]

_logger = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
_LABELS = {"auc": "AUC", "acc": "ACC", "balanced_acc": "balanced ACC", "f05": "F0.5 (label 1)",
           "fbeta_positive": "F-beta (positive class)", "dice": "Dice", "iou": "IoU", "hd95": "HD95 (px)",
           "pixel_acc": "pixel accuracy"}
_FIGURES = {"pareto.png": "search: the Pareto front of the zero-cost objectives",
            "alpha.png": "search: DARTS architecture weights per epoch"}


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.{digits}f}"
    return str(v)


def fmt_ci(ci: Any, digits: int = 3) -> str:
    if not ci or len(ci) != 2 or ci[0] is None:
        return ""
    return f"{ci[0]:.{digits}f} – {ci[1]:.{digits}f}"


def metric_label(key: str, metrics: dict[str, Any] | None = None) -> str:
    m = metrics or {}
    pos = (m.get("positive_class") or {}).get("name")
    if key == "fbeta_positive" and pos:
        return f"F-beta ({pos})"
    if key == "f05":
        names = (m.get("data") or {}).get("label_names") or []
        return f"F0.5 (label 1: {names[1]})" if len(names) > 1 else "F0.5 (label 1)"
    if key.startswith("dice_"):
        return f"Dice {key[5:]}"
    return _LABELS.get(key, key)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "n/a"
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


class _Run:
    """The files of one run directory, read once."""

    def __init__(self, path: Path):
        from ..io import read_jsonl

        self.path = path
        self.metrics: dict[str, Any] = _read_json(path / "metrics.json") or {}
        self.config: dict[str, Any] = _read_yaml(path / "config.resolved.yaml") or {}
        self.status: dict[str, Any] = _read_json(path / "status.json") or {}
        self.summary: dict[str, Any] = _read_json(path / "search_summary.json") or {}
        self.env: dict[str, Any] = _read_json(path / "environment.json") or {}
        self.finalists: list[dict[str, Any]] = _read_json(path / "finalists.json") or []
        self.archs = read_jsonl(path / "archs.jsonl") if (path / "archs.jsonl").exists() else []

    def image(self, rel: str, caption: str) -> Image | None:
        p = self.path / rel
        return Image(p, rel, caption) if p.is_file() else None


# ------------------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------------------

def _summary(doc: Document, r: _Run) -> None:
    m = r.metrics
    doc.add(Heading("Summary", anchor="summary"))
    if not m:
        doc.add(Para(f"{r.path}: no metrics.json yet (phase: {r.status.get('phase', 'unknown')}); the run has not "
                     "finished. Finish it with 'mednas resume'."))
        return
    test, base, ci = m.get("test", {}), m.get("baseline_test", {}), m.get("test", {}).get("ci95", {})
    key = str(m.get("selected_by", "")).removeprefix("val_")
    head = [k for k in (key, "auc", "balanced_acc", "dice") if k in test]
    head = list(dict.fromkeys(head))[:3]
    parts = [f"{metric_label(k, m)} {fmt(test[k])} ("
             + "; ".join(([f"95 % CI {fmt_ci(ci.get(k))}"] if ci.get(k) else [])
                         + ([f"trivial baseline {fmt(base[k])}"] if k in base else [])) + ")" for k in head]
    text = (f"Data {m.get('dataset')}, task {m.get('task')}, search space {m.get('space')}, strategy "
            f"{m.get('strategy')}. The winner (finalist {m.get('best_finalist')}, {fmt(m.get('params'))} "
            f"parameters, chosen by {m.get('selected_by')}) scores on the test split: " + "; ".join(parts) + ".")
    doc.add(Para(text))
    pos, op = m.get("positive_class"), m.get("operating_point")
    if pos and op:
        pc = test.get("per_class", {}).get(pos["name"], {})
        doc.add(Para(
            f"Positive class: {pos['name']} (label {pos['index']}). At the operating threshold P({pos['name']}) >= "
            f"{op['threshold']:.3f} (rule {op['rule']}, chosen on the validation split) the test sensitivity for "
            f"{pos['name']} is {fmt(pc.get('sensitivity'))} (95 % CI {fmt_ci(ci.get('op_sensitivity')) or 'n/a'})"
            f" and the specificity {fmt(pc.get('specificity'))} (95 % CI "
            f"{fmt_ci(ci.get('op_specificity')) or 'n/a'})."))
    doc.add(Para("Research use only: this is not a medical device, and these numbers come from one public data set "
                 "split; confidence intervals say how much they could move on another sample of the same "
                 "population, not on another hospital's images.", note=True))


def _data(doc: Document, r: _Run) -> None:
    d = r.metrics.get("data") or {}
    doc.add(Heading("Data", anchor="data"))
    cfg = r.config.get("data", {})
    doc.add(Para(f"Data plugin {cfg.get('name', 'n/a')} with parameters "
                 f"{json.dumps(cfg.get('params', {}), sort_keys=True)}."))
    if not d.get("split_sizes"):
        doc.add(Para("Split sizes were not recorded in metrics.json (a run from before the report existed).",
                     note=True))
        return
    names = d.get("label_names", [])
    counts = d.get("class_counts") or {}
    header = ["split", "images"] + ([f"{n}" for n in names] if counts else [])
    rows = []
    for split, n in d["split_sizes"].items():
        row: list[Any] = [split, fmt(n)]
        if counts:
            row += [f"{c} ({100 * c / max(n, 1):.0f} %)" for c in counts.get(split, [])]
        rows.append(row)
    doc.add(Table(header, rows, caption="split sizes" + (" and class counts" if counts else "")))


def _search(doc: Document, r: _Run) -> None:
    m, s = r.metrics, r.metrics.get("search", {})
    doc.add(Heading("Search", anchor="search"))
    cfg = r.config
    statuses = Counter(a.get("status") for a in r.archs)
    def plugin(section: str) -> str:
        part = cfg.get(section) or {}
        return f"{part.get('name')} {json.dumps(part.get('params', {}), sort_keys=True)}"

    rows = [["strategy", plugin("strategy")], ["search space", plugin("space")],
            ["engine", (cfg.get("engine") or {}).get("kind", "n/a")],
            ["architectures scored", fmt(s.get("evaluated", statuses.get("ok", 0) + statuses.get("failed", 0)))],
            ["failed", fmt(s.get("failed", statuses.get("failed", 0)))],
            ["pruned before evaluation (invalid)", fmt(s.get("pruned", statuses.get("invalid", 0)))],
            ["search time", _seconds(s.get("seconds"))],
            ["retraining", f"{fmt((m.get('retrain') or {}).get('epochs'))} epochs per finalist, "
                           f"{_seconds((m.get('retrain') or {}).get('seconds'))} in all"],
            ["evaluator", json.dumps(cfg.get("evaluator", {}), sort_keys=True)]]
    if r.summary.get("default_metric"):
        rows.append(["'default' metric", r.summary["default_metric"]])
    doc.add(Table(["", ""], rows, caption="what was tried"))
    reasons = Counter(str(a.get("error") or a.get("reason") or "").split(":")[0][:120]
                      for a in r.archs if a.get("status") in ("failed", "invalid"))
    if reasons:
        doc.add(Table(["reason (first words)", "architectures"], [[k or "n/a", v] for k, v in reasons.most_common(5)],
                      caption="why architectures failed or were pruned"))
    for name, caption in _FIGURES.items():
        img = r.image(name, caption)
        if img:
            doc.add(img)


def _winner(doc: Document, r: _Run) -> None:
    m = r.metrics
    doc.add(Heading("Winner", anchor="winner"))
    fins = m.get("finalists") or []
    described = {f.get("hash"): f.get("describe") for f in r.finalists}
    best = m.get("best_finalist")
    for f in fins:
        if f.get("index") == best:
            doc.add(Para(f"Finalist {best} ({f.get('chosen_as') or 'finalist'}), {fmt(f.get('params'))} parameters, "
                         f"best epoch {m.get('best_epoch')}: {described.get(f.get('hash')) or f.get('hash')}"))
    key = str(m.get("selected_by", "val_auc"))
    if fins:
        doc.add(Table(["finalist", "chosen as", key, "best epoch", "parameters", "architecture"],
                      [[f"{f['index']}{' (winner)' if f['index'] == best else ''}", f.get("chosen_as") or "",
                        fmt(f.get("val", {}).get(key.removeprefix("val_"))), f.get("best_epoch"),
                        fmt(f.get("params")), described.get(f.get("hash")) or f.get("hash")] for f in fins],
                      caption="finalists (retrained; the best by validation score is tested once)"))


def _metrics(doc: Document, r: _Run) -> None:
    m = r.metrics
    test, val, base = m.get("test", {}), m.get("val", {}), m.get("baseline_test", {})
    ci = test.get("ci95", {})
    doc.add(Heading("Test metrics", anchor="metrics"))
    keys = [k for k, v in test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("ci_n_boot",)]
    rows = [[metric_label(k, m), fmt(test[k]), fmt_ci(ci.get(k)) or "n/a", fmt(val.get(k)), fmt(base.get(k))]
            for k in keys]
    doc.add(Table(["metric", "test", "95 % CI (test)", "validation", "trivial baseline (test)"], rows,
                  caption=f"the winner's metrics ({m.get('task')}); baseline: "
                          f"{base.get('prediction') or 'always the training majority class'}"))
    if test.get("ci_method"):
        doc.add(Para(f"Confidence intervals: {test['ci_method']}. F0.5 (label 1) is kept for comparison with "
                     "earlier runs; the F-beta of the positive class is the one to read."
                     if "f05" in test else f"Confidence intervals: {test['ci_method']}.", note=True))


def _classification(doc: Document, r: _Run) -> None:
    m = r.metrics
    test, val = m.get("test", {}), m.get("val", {})
    names = test.get("confusion_matrix_labels") or (m.get("data") or {}).get("label_names") or []
    op, pos = m.get("operating_point"), m.get("positive_class")
    doc.add(Heading("Operating point and confusion matrix", anchor="confusion"))
    if op and pos:
        doc.add(Para(f"Rule {op['rule']}"
                     + (f" (minimum sensitivity {op['min_sensitivity']})" if op.get("min_sensitivity") else
                        " (Youden's J = sensitivity + specificity - 1, maximised)")
                     + f", chosen on the {op.get('chosen_on', 'val')} split: an image is called {pos['name']} when "
                     f"P({pos['name']}) >= {op['threshold']:.4f}. The exported bundle applies the same threshold."))
        at, at_v = test.get("at_operating_point", {}), val.get("at_operating_point", {})
        ci = test.get("ci95", {})
        names_at = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV", "npv": "NPV",
                    "balanced_acc": "balanced ACC", "acc": "ACC", "fbeta_positive": f"F-beta ({pos['name']})"}
        rows = [[label, fmt(at.get(k)), fmt_ci(ci.get("op_" + k)) or "", fmt(at_v.get(k))]
                for k, label in names_at.items() if k in at]
        doc.add(Table([f"at the threshold ({pos['name']} positive)", "test", "95 % CI", "validation"], rows))
    if not test.get("confusion_matrix") and not test.get("per_class"):
        doc.add(Para("No confusion matrix in metrics.json (a run from before the clinical metrics).", note=True))
    for key, what in (("confusion_matrix", "at the operating threshold" if op else "argmax"),
                      ("confusion_matrix_argmax", "argmax (threshold 0.5), for comparison")):
        cm = test.get(key)
        if cm:
            doc.add(Table(["true \\ predicted"] + list(names),
                          [[names[i] if i < len(names) else i] + row for i, row in enumerate(cm)],
                          caption=f"test confusion matrix, {what}"))
    pc = test.get("per_class") or {}
    if pc:
        doc.add(Table(["class", "sensitivity", "specificity", "PPV", "NPV", "F1", "support"],
                      [[n, *(fmt(v.get(k)) for k in ("sensitivity", "specificity", "ppv", "npv", "f1")),
                        fmt(v.get("support"))] for n, v in pc.items()],
                      caption=f"per class on the test split (one vs rest; decision: {test.get('decision', 'n/a')})"))
    doc.add(Heading("Calibration", anchor="calibration"))
    cal_t, cal_v = test.get("calibration") or {}, val.get("calibration") or {}
    if cal_t:
        doc.add(Table(["", "test", "validation"],
                      [["Brier score", fmt(cal_t.get("brier")), fmt(cal_v.get("brier"))],
                       [f"ECE ({cal_t.get('n_bins')} bins)", fmt(cal_t.get("ece")), fmt(cal_v.get("ece"))]],
                      caption=f"calibration of the {cal_t.get('of', 'scores')} (lower is better)"))
    img = r.image("calibration.png", "reliability diagram and the test scores per true class (dashed: the "
                                     "operating threshold)")
    doc.add(img or Para("calibration.png not found.", note=True))


def _segmentation(doc: Document, r: _Run) -> None:
    m = r.metrics
    test = m.get("test", {})
    doc.add(Heading("Per class and per image", anchor="per-class"))
    pc, ci = test.get("per_class") or {}, test.get("ci95") or {}
    if pc:
        doc.add(Table(["class", "Dice", "Dice 95 % CI", "IoU", "HD95 (px)"],
                      [[k, fmt(v.get("dice")), fmt_ci(ci.get(f"dice_{k}")) or "n/a", fmt(v.get("iou")),
                        fmt(v.get("hd95"), 2)] for k, v in pc.items()],
                      caption="test split, foreground classes (mean over the images where the class is present in "
                              "truth or prediction)"))
    s = test.get("per_image_dice_summary")
    if s:
        doc.add(Para(f"Per-image Dice on {s.get('n')} test images ({s.get('n_without_foreground')} without "
                     f"foreground left out): mean {fmt(s.get('mean'))}, median {fmt(s.get('median'))}, quartiles "
                     f"{fmt(s.get('q25'))} – {fmt(s.get('q75'))}, min {fmt(s.get('min'))}, max {fmt(s.get('max'))}."))
    for name, caption in (("dice_per_image.png", "distribution of the per-image Dice (test)"),
                          ("overlays.png", "validation images: image / ground truth / prediction")):
        img = r.image(name, caption)
        if img:
            doc.add(img)


def _explanations(doc: Document, r: _Run) -> None:
    pngs: list[Path] = []
    for folder in ("gradcam", "bundle/gradcam", "export/gradcam"):
        d = r.path / folder
        if d.is_dir():
            pngs += sorted(d.glob("*.png"))
    if r.metrics.get("task") == "classification" or pngs:
        doc.add(Heading("Explanations", anchor="explanations"))
    if not pngs:
        if r.metrics.get("task") == "classification":
            doc.add(Para("No Grad-CAM images yet: 'mednas export RUN_DIR' writes them, then 'mednas report "
                         "RUN_DIR' adds them here.", note=True))
        return
    for p in pngs[:8]:
        doc.add(Image(p, str(p.relative_to(r.path)), f"Grad-CAM: {p.relative_to(r.path)}", half=True))
    if len(pngs) > 8:
        doc.add(Para(f"{len(pngs) - 8} more Grad-CAM images in the run directory.", note=True))


def _environment(doc: Document, r: _Run) -> None:
    doc.add(Heading("Environment", anchor="environment"))
    e = r.env
    if not e:
        doc.add(Para("environment.json not found.", note=True))
        return
    git = e.get("git") or {}
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in e.get("gpus") or []) or "none"
    rows = [["Python", f"{e.get('python', {}).get('version')} ({e.get('platform')})"],
            ["mednas-nni git revision", (git.get("commit", "")[:12] + (" (uncommitted changes)" if git.get("dirty")
                                                                       else "")) if git else "not a git checkout"],
            ["CPU", f"{e.get('cpu', {}).get('model')}, {e.get('cpu', {}).get('logical_cores')} logical cores, "
                    f"torch threads {e.get('cpu', {}).get('torch_threads')}"],
            ["GPU", gpus], ["device", e.get("device")], ["seed", e.get("seed")]]
    pk = e.get("packages") or {}
    rows += [[k, v] for k, v in pk.items() if v and k in ("mednas-nni", "torch", "nni", "monai", "scikit-learn",
                                                           "torchmetrics", "numpy", "onnxruntime")]
    doc.add(Table(["", ""], rows, caption="environment.json (all package versions are in the file)"))


def _files(doc: Document, r: _Run) -> None:
    doc.add(Heading("Files", anchor="files"))
    known = ["config.resolved.yaml", "metrics.json", "best_arch.json", "best.pt", "archs.jsonl", "finalists.json",
             "search_summary.json", "environment.json", "search.log", "status.json", "bundle/", "export/"]
    doc.add(Para("In this run directory: " + ", ".join(f for f in known if (r.path / f).exists())
                 + ". 'mednas export' turns the winner into a deployable bundle; 'mednas runs' compares runs."))


def build_report(run_dir: str | Path) -> Document:
    """The report of ``run_dir`` as a :class:`~.document.Document`."""
    r = _Run(Path(run_dir))
    m = r.metrics
    doc = Document(f"mednas run report: {r.path.name}")
    doc.add(Para(f"Run directory {r.path} · phase {r.status.get('phase', 'unknown')} · started "
                 f"{r.status.get('started', 'n/a')}", note=True))
    _summary(doc, r)
    if not m:
        _environment(doc, r)
        return doc
    _data(doc, r)
    _search(doc, r)
    _winner(doc, r)
    _metrics(doc, r)
    if m.get("task") == "segmentation":
        _segmentation(doc, r)
    elif m.get("task") == "classification":
        _classification(doc, r)
    _explanations(doc, r)
    _environment(doc, r)
    _files(doc, r)
    return doc


def write_run_report(run_dir: str | Path, seed: int | None = None, device: str | None = None,
                     environment: bool = True) -> list[Path]:
    """Write ``environment.json`` (when ``environment``) then ``report.md`` and ``report.html`` into ``run_dir``;
    returns the paths. A failure is logged as a warning and leaves the run as it is (the search results are
    already written)."""
    from ..io import atomic_write_text
    from .environment import write_environment

    rd = Path(run_dir)
    written: list[Path] = []
    try:
        if environment:
            written.append(write_environment(rd, seed, device))
        doc = build_report(rd)
        written.append(atomic_write_text(rd / REPORT_MD, render_markdown(doc)))
        written.append(atomic_write_text(rd / REPORT_HTML, render_html(doc)))
    except Exception as e:  # noqa: BLE001 - a report problem must not turn a finished run into a failed one
        _logger.warning("%s: the run report was not written (%s: %s); 'mednas report %s' retries", rd,
                        type(e).__name__, e, rd)
    for p in written:
        _logger.info("wrote %s", p)
    return written

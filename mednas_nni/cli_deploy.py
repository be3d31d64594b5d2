"""``mednas export`` and ``mednas predict``.

``predict`` must run where only onnxruntime is installed, so this module imports nothing heavy at import time:
``export`` imports the run loader and the exporter (torch, nni) inside its command, ``predict`` only
:mod:`mednas_nni.deploy` (numpy, onnxruntime, pydantic, PIL).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

__all__ = ["add_parsers", "cmd_export", "cmd_predict"]

_logger = logging.getLogger(__name__)


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.2f} MiB"


def _metric_line(m: dict[str, Any], names: list[str]) -> str:
    from .exporters._metrics import fmt, metric_label

    return " ".join(f"{metric_label(k)} {fmt(m.get(k))}" for k in names)


def _summary(out: Any, report: dict[str, Any]) -> None:
    """The few lines ``mednas export`` prints about a finished export."""
    par = report.get("parity", {})
    print(f"bundle: {out}")
    for name, size in report.get("files", {}).items():
        print(f"  {name:<20} {_kib(size)}")
    if report.get("bundle_hash"):
        print(f"bundle hash: {report['bundle_hash']} (in every 'mednas predict' record)")
    if par:
        print(f"parity: max |Δ logits| {par['max_abs_diff_logits']:.2e} (end to end "
              f"{par['max_abs_diff_end_to_end']:.2e}) <= atol {par['atol']:g} on {par['images']} test images")
        if "mask_dice_ort_vs_pytorch" in par:
            print(f"masks: Dice onnxruntime vs PyTorch {par['mask_dice_ort_vs_pytorch']:.4f} (end to end "
                  f"{par['mask_dice_end_to_end']:.4f})")
        mt, mo = par["metrics"]["pytorch"] or {}, par["metrics"]["onnxruntime_fp32"] or {}
        names = [k for k in mt if k in mo][:4]
        if names:
            print(f"test: PyTorch {_metric_line(mt, names)} | onnxruntime fp32 {_metric_line(mo, names)}")
        i8 = par.get("int8")
        if i8 and i8.get("metrics"):
            d = i8.get("drop_points_vs_pytorch", {})
            drops = ", ".join(f"{v:+.2f}" for k, v in d.items() if k in names)
            extra = f", mask Dice vs fp32 {i8['mask_dice_vs_fp32']:.4f}" if "mask_dice_vs_fp32" in i8 else ""
            print(f"int8: {_metric_line(i8['metrics'], names)} (drop {drops or 'n/a'} points{extra}), "
                  f"{_kib(i8['size_bytes'])} vs {_kib(i8['fp32_size_bytes'])}")
    lat = report.get("latency", {})
    if lat:
        print("latency (onnxruntime, batch 1, 1 thread, median): "
              + ", ".join(f"{k} {v['threads_1']['median_ms']:.3f} ms" for k, v in lat.items()))
    g = report.get("gradcam", {})
    if g.get("files") and g.get("layer") is None:   # segmentation: the run's overlays, not Grad-CAM
        print(f"explanations: {', '.join(g['files'])} in {g['dir']}")
    elif g.get("files"):
        print(f"grad-cam: {len(g['files'])} images in {g['dir']} (layer {g['layer']})")
    elif g.get("skipped"):
        print(f"grad-cam: skipped ({g['skipped']})")


def cmd_export(args: argparse.Namespace) -> int:
    """``mednas export RUN_DIR``: load the run once (:func:`mednas_nni.experiment.load_trained`) and hand the
    trained model to the exporter plugin."""
    from pathlib import Path

    from .errors import ConfigError
    from .io import RunDir, atomic_write_json
    from .registry import get_plugin

    rd = RunDir.open(args.run_dir)
    out = Path(args.out) if args.out else rd / "bundle"
    cls = get_plugin("exporters", args.exporter)
    params: dict[str, Any] = {}
    for key in ("opset", "int8", "atol", "calibration_images", "latency_runs", "gradcam_per_class"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    fields = getattr(getattr(cls, "Params", None), "model_fields", {})
    unknown = [k for k in params if fields and k not in fields]
    if unknown:
        raise ConfigError(f"--{unknown[0].replace('_', '-')}: not a parameter of exporter '{args.exporter}'; "
                          f"expected one of {', '.join(fields)}")
    from pydantic import ValidationError

    try:
        exporter = cls(**params)
    except ValidationError as e:
        err = e.errors()[0]
        flag = str(err["loc"][0]).replace("_", "-")
        msg = err["msg"].replace("Input should be ", "expected ")
        raise ConfigError(f"--{flag}: {msg}, got {err.get('input')!r}") from None
    from .experiment import load_trained

    trained = load_trained(rd.path)
    report = exporter.export(trained, out)
    atomic_write_json(rd / "export_report.json", report)
    _summary(out, report)
    return 0


def _table(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in records:
        name = r["file"] + (f"[{r['index']}]" if "index" in r else "")
        if "error" in r:
            rows.append((name, "ERROR", r["error"]))
        elif "probabilities" in r:
            probs = "  ".join(f"{k}={v:.4f}" for k, v in r["probabilities"].items())
            rows.append((name, r["class"], probs))
        else:
            rows.append((name, r.get("mask", ""), ", ".join(f"{k}={v}" for k, v in r["class_pixels"].items())))
        for reason in r.get("ood_reasons", []):
            rows.append(("", "", f"OUT OF DISTRIBUTION: {reason}"))
        for note in r.get("notes", []):
            rows.append(("", "", f"note: {note}"))
    w0 = max([len("file")] + [len(a) for a, _, _ in rows])
    w1 = max([len("class")] + [len(b) for _, b, _ in rows])
    head = f"{'file':<{w0}}  {'class':<{w1}}  probabilities"
    return "\n".join([head] + [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows])


def cmd_predict(args: argparse.Namespace) -> int:
    from .deploy import Bundle, predict_files

    if not getattr(args, "debug", False):  # pydicom logs each oddity of a damaged file; the record says what failed
        logging.getLogger("pydicom").setLevel(logging.ERROR)
    bundle = Bundle(args.bundle, int8=args.int8, threads=args.threads)
    records = predict_files(bundle, args.inputs, out=args.out, mask_dir=args.mask_dir,
                            skip_errors=args.skip_errors)
    if args.format == "table":
        print(_table(records))
    else:
        for r in records:
            print(json.dumps(r))
    for r in records:  # never a silent answer: each flagged record gets a warning line
        name = r["file"] + (f"[{r['index']}]" if "index" in r else "")
        if r.get("ood"):
            print(f"mednas: warning: {name}: out of distribution for this bundle: {'; '.join(r['ood_reasons'])}",
                  file=sys.stderr)
        elif "error" in r:
            print(f"mednas: skipped: {r['error']}", file=sys.stderr)
    errors = sum("error" in r for r in records)
    ood = sum(bool(r.get("ood")) for r in records)
    if args.out or errors or ood:
        where = f" to {args.out}" if args.out else ""
        print(f"mednas: wrote {len(records)} prediction record(s){where} ({ood} out of distribution, {errors} "
              "unreadable)", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` and ``predict`` subcommands to the ``mednas`` parser."""
    e = sub.add_parser(
        "export", help="write a deployable ONNX bundle for a finished run",
        description="Export the best model of RUN_DIR as a self-contained bundle (model.onnx [+ model.int8.onnx], "
                    "preprocessing.json with the acquisition, training-image statistics and, for binary classifiers, "
                    "the positive class and operating threshold; parity.json; model_card.md; gradcam/ for "
                    "classifiers). Fails, writing nothing, when onnxruntime disagrees with PyTorch by more than "
                    "--atol (segmentation: also when any test mask differs).")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--out", metavar="DIR", help="bundle folder (default: RUN_DIR/bundle); replaced as a whole")
    e.add_argument("--exporter", default="onnx", help="exporter plugin (default: onnx)")
    e.add_argument("--int8", action="store_true", default=None,
                   help="also write model.int8.onnx (static quantisation, calibrated on training images)")
    e.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    e.add_argument("--atol", type=float, help="parity tolerance on the logits (default 1e-4)")
    e.add_argument("--calibration-images", dest="calibration_images", type=int, metavar="N",
                   help="training images for int8 calibration (default 128)")
    e.add_argument("--latency-runs", dest="latency_runs", type=int, metavar="N",
                   help="timed runs for the latency median (default 50)")
    e.add_argument("--gradcam-per-class", dest="gradcam_per_class", type=int, metavar="N",
                   help="Grad-CAM test images per class (default 2; 0 = none)")
    e.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "predict", help="run a bundle on image files, folders, DICOM series or globs (onnxruntime only)",
        description="Classify or segment INPUTs with an exported bundle (segmentation bundles write one mask PNG "
                    "per image, pixel value = class index). An INPUT is a file (PNG/JPEG/BMP/TIFF, .npy/.npz: an "
                    "image or a stack, channels last; DICOM with its Modality and VOI LUTs applied; NIfTI/MHA/NRRD: "
                    "the middle slice of a volume), a folder (walked recursively; a DICOM series in it is one "
                    "input, its middle slice) or a quoted glob ('scans/**/*.dcm'). Prints one JSON line per image "
                    "(or a table); --out writes all records as JSON. Every record carries the bundle's hash, the "
                    "DICOM SOPInstanceUID, and an out-of-distribution flag with its reasons (DICOM Modality, "
                    "volume, colour or image statistics unlike the training images), also warned about on "
                    "stderr. Needs only numpy, onnxruntime and Pillow (+ pydicom / SimpleITK for DICOM / NIfTI).")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--out", metavar="FILE.json", help="write the predictions as JSON")
    p.add_argument("--format", choices=["jsonl", "table"], default="jsonl", help="stdout format (default jsonl)")
    p.add_argument("--int8", action="store_true", help="run model.int8.onnx")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (default: all)")
    p.add_argument("--skip-errors", dest="skip_errors", action="store_true",
                   help="an unreadable input gets a record with 'error' and the others are predicted (default: "
                        "stop with one line naming the file, exit 2, nothing written)")
    p.add_argument("--mask-dir", dest="mask_dir", metavar="DIR",
                   help="segmentation bundles: folder for the mask PNGs (default: next to --out, else ./masks)")
    p.set_defaults(func=cmd_predict)

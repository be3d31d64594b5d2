"""``model_card.md`` of a bundle: intended use, data, the task's metrics beside the trivial baseline (with 95 % CIs),
the clinical metrics and input checks (:mod:`._card_clinical`), deployment checks, size and speed, architecture,
search, explanations and versions. Every link points inside the bundle (relative paths), so the bundle can be
copied anywhere."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from mednas_nni.deploy.layout import (INPUT_NAME, MODEL_CARD_FILE, OUTPUT_NAME, PARITY_FILE, PREPROCESSING_FILE)

from ._card_clinical import ci95_of, clinical_section, decision_lines, input_checks_section
from ._measure import cpu_name
from ._metrics import baseline_of, fmt, higher_is_better, metric_label, metric_names

__all__ = ["CardFacts", "model_card"]

_METRIC_NOTES = {
    "classification": "ACC/AUC are the official MedMNIST definitions (`medmnist.evaluator`). The majority baseline "
                      "always predicts the most frequent training class (its AUC is 0.5).",
    "segmentation": "Dice and IoU are means over the foreground classes (MONAI `DiceMetric`, `MeanIoU`), HD95 the "
                    "95th-percentile Hausdorff distance in pixels (MONAI `HausdorffDistanceMetric`), pixel accuracy "
                    "the share of pixels whose class is right. The all-background baseline predicts background "
                    "everywhere.",
}


@dataclass
class CardFacts:
    """What the exporter measured, for the card."""

    parity: dict[str, Any]
    prep: Any
    shape: tuple[int, int, int]
    params: int
    flops: int
    latency: dict[str, Any]
    sizes: dict[str, int]
    versions: dict[str, str]
    int8: dict[str, Any] | None = None
    description: str | None = None
    explanations: dict[str, Any] = field(default_factory=dict)
    bundle_hash: str = ""
    calibration_png: str | None = None  # the run's reliability diagram, copied into the bundle


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.2f} MiB"


def _baseline_name(task: Any, segmentation: bool) -> str:
    return getattr(task, "baseline_name", None) or ("all-background baseline" if segmentation
                                                    else "majority baseline")


def _better(name: str, model: Any, base: Any) -> bool | None:
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (model, base)):
        return None
    return model > base if higher_is_better(name) else model < base


def _metrics_section(trained: Any, f: CardFacts, seg: bool) -> list[str]:
    m_pt = f.parity["metrics"]["pytorch"] or {}
    m_ort = f.parity["metrics"]["onnxruntime_fp32"] or {}
    m8 = (f.int8 or {}).get("metrics") or {}
    base, val, test_run = baseline_of(trained.metrics), trained.metrics.get("val", {}), trained.metrics.get("test", {})
    bname = _baseline_name(trained.task, seg)
    L = ["## Metrics (test split)", "",
         f"| metric | PyTorch | 95 % CI (run) | ONNX fp32 (onnxruntime) | ONNX int8 | {bname} | val (PyTorch) |",
         "|---|---|---|---|---|---|---|"]
    names = metric_names(trained.task, m_pt, test_run)
    for k in names:
        ci = ci95_of(test_run, k)
        L.append(f"| {metric_label(k)} | {fmt(m_pt.get(k, test_run.get(k)))} | "
                 f"{f'[{ci[0]:.3f}, {ci[1]:.3f}]' if ci else 'n/a'} | {fmt(m_ort.get(k))} | "
                 f"{fmt(m8.get(k)) if f.int8 else 'not exported'} | {fmt(base.get(k))} | {fmt(val.get(k))} |")
    note = getattr(trained.task, "metrics_note", None) or _METRIC_NOTES.get(f.prep.task, "")
    if note:
        L += ["", note]
    n_boot = (test_run.get("ci95") or {}).get("n_bootstrap") or test_run.get("n_bootstrap")
    if test_run.get("ci95"):
        L += ["", "95 % CIs: the run's bootstrap over the test split (`metrics.json` `test.ci95`"
              + (f", {n_boot} resamples" if n_boot else "") + ")."]
    judged = [(k, _better(k, m_pt.get(k), base.get(k))) for k in names]
    worse = [f"{metric_label(k)} {m_pt[k]:.4f} vs {base[k]:.4f}" for k, ok in judged if ok is False]
    if worse:
        advice = (f" Treat this model as a pipeline check, not as a {'segmenter' if seg else 'classifier'}; search "
                  "or train longer." if len(worse) == sum(ok is not None for _, ok in judged) else "")
        L += ["", f"**Warning: not better than the {bname} on the test split ({'; '.join(worse)}).**{advice}"]
    return L + [""]


def _checks_section(f: CardFacts, seg: bool) -> list[str]:
    p, (c, h, w) = f.parity, f.shape
    out = f.prep.output
    L = ["## Deployment checks", "",
         f"- onnxruntime vs PyTorch on {p['images']} test images: max |Δ logits| {p['max_abs_diff_logits']:.2e} "
         f"(same tensors), {p['max_abs_diff_end_to_end']:.2e} end to end (raw images through "
         f"`{PREPROCESSING_FILE}`); tolerance {p['atol']:g}: passed."]
    if seg:
        L.append(f"- Masks (per-pixel {out.decision}): Dice between onnxruntime and PyTorch masks "
                 f"{p['mask_dice_ort_vs_pytorch']:.4f} (same tensors), {p['mask_dice_end_to_end']:.4f} end to end; "
                 "required: exactly 1.0.")
    shape_out = f"(batch, {len(out.label_names)}, {h}, {w})" if seg else f"(batch, {len(out.label_names)})"
    L += [f"- Opset {p['opset']}, legacy exporter (`torch.onnx.export(dynamo=False)`), dynamic batch axis, input "
          f"`{INPUT_NAME}` float32 NCHW (batch, {c}, {h}, {w}), output `{OUTPUT_NAME}` {shape_out} (apply "
          f"{out.activation}{', then per-pixel ' + out.decision if seg else ''}).",
          f"- Preprocessing: resize to {h}x{w} (bilinear), x/255, then (x - {f.prep.intensity.mean}) / "
          f"{f.prep.intensity.std} per channel; details in `{PREPROCESSING_FILE}`."]
    if f.int8:
        i8 = f.int8
        drops = ", ".join(f"{v:+.2f} {metric_label(k)} points" for k, v in i8.get("drop_points_vs_pytorch", {}).items())
        agree = (f"mask Dice vs fp32 {i8['mask_dice_vs_fp32']:.4f}, pixel agreement {i8['pixel_agreement_vs_fp32']:.4f}"
                 if seg else f"argmax agreement {i8['argmax_agreement']:.3f}")
        L.append(f"- int8 (static QDQ, MinMax calibration on {i8['settings']['calibration'].split(' over ')[-1]}): "
                 f"{_kb(i8['size_bytes'])} vs {_kb(i8['fp32_size_bytes'])}; metric drop vs PyTorch "
                 f"{drops or 'n/a'} (positive = worse); {agree}.")
    return L + [""]


def _explanations(f: CardFacts, trained: Any) -> list[str]:
    """Pictures inside the bundle, linked and shown by paths relative to the card."""
    g = f.explanations
    L = ["## Explanations", ""]
    folder = "" if g.get("dir") in (None, ".", "") else f"{g['dir']}/"
    if g.get("files") and g.get("method", "").startswith("Grad-CAM"):
        L += [f"Grad-CAM (Selvaraju et al., ICCV 2017; `monai.visualize.GradCAM`) at layer `{g['layer']}` (the last "
              f"convolution with a spatial output) for {len(g['files'])} test images, in the bundle's "
              f"`{folder or './'}`:", ""]
        for x in g["files"]:
            L += [f"- [`{folder}{x['file']}`]({folder}{x['file']}): true {x['true']}, predicted {x['predicted']} "
                  f"(p={x['probability']:.2f})", "",
                  f"  ![Grad-CAM: true {x['true']}, predicted {x['predicted']}]({folder}{x['file']})", ""]
    elif g.get("files"):
        L.append(f"{g.get('method', 'Pictures')}:")
        for x in g["files"]:
            L += ["", f"![{x}]({folder}{x})"]
    else:
        L.append(f"None written ({g.get('skipped', 'none asked for')}).")
    return L + [""]


def _calibration_line(metrics: dict[str, Any]) -> str:
    cal = (metrics.get("test") or {}).get("calibration") or {}
    if isinstance(cal.get("brier"), (int, float)):
        return (f"- Probabilities were not recalibrated; on the test split their Brier score is {cal['brier']:.3f} "
                f"and their ECE {fmt(cal.get('ece'))} (see Clinical metrics).")
    return "- Probabilities are not calibrated."


def model_card(trained: Any, f: CardFacts) -> str:
    """The Markdown model card of ``trained`` with the measured facts ``f``."""
    cfg, info, task, metrics = trained.cfg, trained.info, trained.task, trained.metrics
    seg = f.prep.segmentation
    L: list[str] = [f"# Model card: {cfg.space.name} winner on {info.name}", "",
                    f"Exported by mednas-nni {f.versions['mednas_nni']} from run `{trained.run_dir.name}` on "
                    f"{time.strftime('%Y-%m-%d')}. Bundle files: "
                    + ", ".join(f"`{k}` ({_kb(v)})" for k, v in f.sizes.items())
                    + f", `{PREPROCESSING_FILE}`, `{PARITY_FILE}`, `{MODEL_CARD_FILE}`."
                    + (f" Bundle hash (`mednas predict` puts it in every record): `{f.bundle_hash}`."
                       if f.bundle_hash else ""), ""]
    ood = "" if seg else "; it has no 'none of these' class"
    L += ["## Intended use and limits", "",
          "- **Research use only. This is not a medical device** and has not been validated for diagnosis, "
          "screening or any clinical decision. Do not use it on patients.",
          f"- {task.card_sentence().strip()} It was trained on {info.name} ({f.prep.task_type or f.prep.task}); "
          "images from other modalities, scanners, resolutions or populations are out of distribution and its "
          f"outputs on them are meaningless{ood}.",
          "- The model was found by an automated architecture search with a small budget and trained for "
          f"{cfg.evaluator.epochs} epoch(s); compare its metrics with the {_baseline_name(task, seg)} below before "
          "trusting it.",
          *decision_lines(f.prep), _calibration_line(metrics), ""]
    params = {k: v for k, v in dict(cfg.data.params).items() if k != "root"}
    L += ["## Data", "",
          f"- Data set: **{info.name}** (`{cfg.data.name}` plugin, params `{json.dumps(params, default=str)}`).",
          f"- Licence: {info.licence or 'see the data set source'}.",
          f"- Citation: {info.citation or 'see the data set source'}.",
          "- Splits: " + (", ".join(f"{k} {v}" for k, v in info.split_sizes.items()) or "see the data set")
          + "; the search and training used train, model selection val, and the test split was used once for the "
          "numbers below.", ""]
    L += _metrics_section(trained, f, seg)
    L += clinical_section(metrics, f.prep, f.calibration_png)
    L += input_checks_section(f.prep)
    L += _checks_section(f, seg)
    L += ["## Size and speed", "",
          f"- Parameters: {f.params:,}", f"- FLOPs per image: {f.flops:,} ({f.flops / 2:,.0f} MACs; "
          "`torch.utils.flop_counter`, convolutions and matrix products only)", "",
          "| model | onnxruntime batch 1, 1 thread (median ms) | batch 1, default threads (median ms) |",
          "|---|---|---|"]
    for k, v in f.latency.items():
        L.append(f"| {k} | {v['threads_1']['median_ms']:.3f} | {v['threads_default']['median_ms']:.3f} |")
    L += ["", f"Measured on {cpu_name()} ({os.cpu_count()} logical CPUs), median of "
          f"{next(iter(f.latency.values()))['threads_1']['runs']} runs after 5 warm-up runs; onnxruntime "
          f"{f.versions['onnxruntime']}, CPUExecutionProvider.", ""]
    L += ["## Architecture", "",
          f"Search space `{cfg.space.name}` with params `{json.dumps(dict(cfg.space.params), default=str)}`."]
    if f.description:
        L += ["", "```", f.description.rstrip(), "```"]
    L += ["", "<details><summary>best_arch.json</summary>", "", "```json", json.dumps(trained.sample, indent=1),
          "```", "", "</details>", ""]
    s, r = metrics.get("search", {}), metrics.get("retrain", {})
    ev = cfg.evaluator
    L += ["## How it was searched", "",
          f"- Strategy `{cfg.strategy.name}` with params `{json.dumps(dict(cfg.strategy.params), default=str)}`.",
          f"- Search: {s.get('evaluated', '?')} architectures evaluated ({s.get('failed', '?')} failed) in "
          f"{(s.get('seconds') or 0):.0f} s; {len(metrics.get('finalists', []))} finalist(s) retrained for "
          f"{r.get('epochs', ev.epochs)} epoch(s) ({(r.get('seconds') or 0):.0f} s) with lr {ev.lr}, batch "
          f"{ev.batch_size}; selected by {metrics.get('selected_by', '?')} (best epoch "
          f"{metrics.get('best_epoch', '?')}, finalist {metrics.get('best_finalist', '?')}).",
          f"- Seed {cfg.run.seed}, device {metrics.get('device', cfg.run.device)}.", ""]
    L += _explanations(f, trained)
    L += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in f.versions.items()), ""]
    return "\n".join(L)

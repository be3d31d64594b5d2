"""Parity of the exported model with PyTorch on the whole test split, and the int8 copy's report.

* Logits: max |Δ| between onnxruntime and PyTorch on the same normalised test tensors (the training pipeline),
  and end to end: raw ``uint8`` test images through ``preprocessing.json`` (the bundle runtime) and onnxruntime,
  against PyTorch on the training pipeline. Both must be within ``atol``.
* Segmentation also compares masks (argmax of the logits, :func:`~mednas_nni.deploy.bundle.masks_from_logits`):
  the Dice between onnxruntime's and PyTorch's masks over the test split must be exactly 1.0.
* Metrics: the task scores PyTorch and onnxruntime (and int8) with the same code, ``task.evaluate`` (onnxruntime
  behind an ``nn.Module``, :func:`._convert.ort_module`), so the numbers are the task's own definitions.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mednas_nni.deploy.bundle import Bundle, masks_from_logits
from mednas_nni.deploy.layout import MODEL_FILE, PREPROCESSING_FILE
from mednas_nni.deploy.readers import InputImage
from mednas_nni.errors import ExportError

from ._convert import ort_module, ort_session, run_session, torch_logits
from ._metrics import higher_is_better, metric_label, metric_names

__all__ = ["mask_dice", "task_metrics", "check_parity", "int8_report"]

_logger = logging.getLogger(__name__)


def mask_dice(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """Mean Dice over the foreground classes ``1..K-1`` between two stacks of class-index masks, pooled over the
    whole stack; a class absent from both counts as 1.0. Identical masks give exactly 1.0."""
    scores = []
    for c in range(1, max(2, int(num_classes))):
        ina, inb = a == c, b == c
        denom = int(ina.sum()) + int(inb.sum())
        scores.append(1.0 if denom == 0 else 2.0 * int(np.logical_and(ina, inb).sum()) / denom)
    return float(np.mean(scores))


def task_metrics(task: Any, model: Any, dataset: Any, split: str = "test", batch_size: int = 64
                 ) -> dict[str, float]:
    """``task.evaluate`` of ``model`` on ``split`` (CPU), as plain floats."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset.dataset(split), batch_size=batch_size, shuffle=False, num_workers=0)
    out = task.evaluate(model, loader, "cpu")
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float, np.floating, np.integer))}


def _masks(prep: Any, logits: np.ndarray) -> np.ndarray:
    return masks_from_logits(logits, prep.output.activation, prep.output.threshold)


def check_parity(trained: Any, onnx_path: Path, bundle_dir: Path, x_test: np.ndarray, raw_test: np.ndarray,
                 *, atol: float, opset: int, out: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """``(parity report, PyTorch logits, onnxruntime logits)``; raises on any disagreement.

    ``bundle_dir`` holds ``model.onnx`` and ``preprocessing.json`` already; ``out`` is the final bundle folder
    (named in the messages).

    Raises:
        ExportError: max |Δ logits| > ``atol`` (same tensors or end to end), or segmentation masks that differ.
    """
    model, task = trained.model, trained.task
    ref = torch_logits(model, x_test)
    got = run_session(ort_session(onnx_path), x_test)
    if got.shape != ref.shape:
        raise ExportError(f"{out / MODEL_FILE}: output shape {got.shape} disagrees with PyTorch's {ref.shape}; "
                          "expected the same")
    max_diff = float(np.abs(got.astype(np.float64) - ref).max())
    if not max_diff <= atol:  # also catches NaN
        raise ExportError(f"onnx parity failed for {out / MODEL_FILE}: max |Δ| {max_diff:.3g} > atol {atol:g} on "
                          f"{len(x_test)} test images (opset {opset})")
    bundle = Bundle(bundle_dir)
    x_dev = np.stack([bundle.preprocess(InputImage("test", i, raw_test[i])) for i in range(len(raw_test))])
    pre_diff = float(np.abs(x_dev - x_test).max())
    e2e = bundle.run(x_dev)
    e2e_diff = float(np.abs(e2e.astype(np.float64) - ref).max())
    if not e2e_diff <= atol:
        raise ExportError(f"{out / PREPROCESSING_FILE}: end-to-end parity failed; expected raw test images "
                          f"through preprocessing.json + model.onnx within atol {atol:g} of PyTorch, got max "
                          f"|Δ| {e2e_diff:.3g} (inputs differ by {pre_diff:.3g})")
    parity: dict[str, Any] = {
        "split": "test", "images": int(len(x_test)), "atol": atol, "opset": opset, "passed": True,
        "task": bundle.task, "max_abs_diff_logits": max_diff, "max_abs_diff_end_to_end": e2e_diff,
        "max_abs_diff_preprocessing": pre_diff,
    }
    if bundle.prep.segmentation:
        k = len(bundle.label_names)
        m_ref, m_got, m_e2e = _masks(bundle.prep, ref), _masks(bundle.prep, got), _masks(bundle.prep, e2e)
        dice, dice_e2e = mask_dice(m_got, m_ref, k), mask_dice(m_e2e, m_ref, k)
        if dice != 1.0 or dice_e2e != 1.0:
            which = "same tensors" if dice != 1.0 else "end to end"
            raise ExportError(f"onnx mask parity failed for {out / MODEL_FILE}: expected Dice 1.0 between "
                              f"onnxruntime and PyTorch masks on {len(x_test)} test images, got "
                              f"{min(dice, dice_e2e):.6f} ({which}; max |Δ logits| {max(max_diff, e2e_diff):.3g})")
        parity.update({"mask_dice_ort_vs_pytorch": dice, "mask_dice_end_to_end": dice_e2e,
                       "pixel_agreement": float((m_got == m_ref).mean())})
    else:
        parity["argmax_agreement"] = float((ref.argmax(1) == got.argmax(1)).mean())
    m_torch = task_metrics(task, model, trained.dataset)
    m_ort = task_metrics(task, ort_module(onnx_path), trained.dataset)
    parity["metrics"] = {"pytorch": m_torch, "onnxruntime_fp32": m_ort}
    parity["notes"] = ("max_abs_diff_logits: PyTorch and onnxruntime on the same normalised test tensors (the "
                       "training pipeline); end_to_end: raw uint8 test images through preprocessing.json "
                       "(mednas_nni.deploy) and onnxruntime, against PyTorch on the training pipeline; metrics: "
                       f"{type(task).__name__}.evaluate on the test split")
    return parity, ref, got


def int8_report(trained: Any, prep: Any, int8_path: Path, fp32_path: Path, x_test: np.ndarray, ref: np.ndarray,
                got: np.ndarray, m_torch: dict[str, float], settings: dict[str, Any]) -> dict[str, Any]:
    """The int8 copy against PyTorch (metrics, drop in points) and, for segmentation, its masks against fp32's."""
    got8 = run_session(ort_session(int8_path), x_test)
    m8 = task_metrics(trained.task, ort_module(int8_path), trained.dataset)
    drop = {k: 100.0 * (m_torch[k] - m8[k]) for k in metric_names(trained.task, m_torch)
            if k in m8 and higher_is_better(k) and np.isfinite(m_torch[k]) and np.isfinite(m8[k])}
    report: dict[str, Any] = {
        "settings": settings, "max_abs_diff_logits": float(np.abs(got8 - ref).max()), "metrics": m8,
        "drop_points_vs_pytorch": drop, "size_bytes": int8_path.stat().st_size,
        "fp32_size_bytes": fp32_path.stat().st_size}
    if prep.segmentation:
        k = len(prep.output.label_names)
        m_fp, m_i8 = _masks(prep, got), _masks(prep, got8)
        report["mask_dice_vs_fp32"] = mask_dice(m_i8, m_fp, k)
        report["pixel_agreement_vs_fp32"] = float((m_i8 == m_fp).mean())
        report["argmax_agreement"] = report["pixel_agreement_vs_fp32"]
    else:
        report["argmax_agreement"] = float((ref.argmax(1) == got8.argmax(1)).mean())
    worst = max(drop.items(), key=lambda kv: kv[1], default=None)
    if worst is not None and worst[1] > 1.0:
        _logger.warning("int8 model loses %.1f %s points on the test split", worst[1], metric_label(worst[0]))
    return report

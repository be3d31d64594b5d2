"""The built-in ``onnx`` exporter: a deployable bundle checked against PyTorch with onnxruntime.

``ONNXExporter().export(run_dir, out_dir)`` writes ``out_dir`` (``mednas export`` uses ``RUN_DIR/bundle``, the
``export`` section of a search config ``RUN_DIR/export``) with ``model.onnx``, optionally ``model.int8.onnx``,
``preprocessing.json``, ``parity.json`` and ``model_card.md`` (the bundle layout is documented in
:mod:`mednas_nni.deploy_runtime`), plus Grad-CAM images of the winner in ``RUN_DIR/gradcam/``.

Everything is written into a temporary folder next to ``out_dir`` and renamed into place at the end, so a failed
export (parity worse than ``atol``, quantisation error, bad run directory) leaves no half-written bundle, and an
earlier bundle at ``out_dir`` survives until the new one is complete.

Exporter choice: the legacy TorchScript exporter, ``torch.onnx.export(..., dynamo=False)``. Measured on the default
run's MSTF cell winner (142k parameters; torch 2.14.1, onnxruntime 1.32, 2 CPU cores): both exporters reach the
same parity (max |Δ| 4.8e-6 vs 3.8e-6 on random inputs), but the legacy export took 3.1 s vs 7.6-10.5 s for dynamo,
dynamo writes opset 18 and fails to down-convert to the default opset 17 (onnx version converter: "ReduceMean ...
No initializer or constant input to node found"), and it prints progress lines to stdout. The legacy exporter's
deprecation warning is filtered here.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from mednas_nni import __version__
from mednas_nni.deploy_runtime import (BUNDLE_FORMAT, BUNDLE_VERSION, MODEL_CARD_FILE, MODEL_FILE, MODEL_INT8_FILE,
                                       PARITY_FILE, PREPROCESSING_FILE, Bundle, InputImage)
from mednas_nni.errors import ExportError, MedNASError
from mednas_nni.io import RunDir, atomic_write_json, atomic_write_text
from mednas_nni.plugins import ExporterPlugin, PluginParams

__all__ = ["ONNXExporterParams", "ONNXExporter", "export_onnx", "onnx_parity", "ort_session",
           "measure_ort_latency", "count_flops", "torch_logits", "INPUT_NAME", "OUTPUT_NAME"]

_logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
GRADCAM_DIR = "gradcam"


class ONNXExporterParams(PluginParams):
    """Config ``export.params`` of the ``onnx`` exporter."""

    opset: int = Field(17, ge=13, le=20, description="ONNX opset of model.onnx (legacy exporter: 13..20).")
    int8: bool = Field(False, description="Also write model.int8.onnx (onnxruntime static QDQ quantisation).")
    atol: float = Field(1e-4, gt=0, description="Largest allowed max |logit difference| onnxruntime vs PyTorch.")
    calibration_images: int = Field(128, ge=1, description="Training images used to calibrate int8.")
    latency_runs: int = Field(50, ge=1, description="Timed onnxruntime runs (batch 1) for the median latency.")
    gradcam_per_class: int = Field(2, ge=0, description="Grad-CAM test images per class (0 = none).")


# ------------------------------------------------------------------------------------------------------------
# Building blocks (also used by the tests and benchmarks/deploy_latency.py)
# ------------------------------------------------------------------------------------------------------------

def export_onnx(model: Any, path: str | Path, input_shape: tuple[int, int, int], opset: int = 17) -> Path:
    """Export ``model`` (eval mode) to ``path`` with a dynamic batch axis, input ``image``, output ``logits``.

    Args:
        model: a plain ``nn.Module`` (a frozen architecture).
        path: the ``.onnx`` file to write.
        input_shape: ``(C, H, W)`` of one input image.
        opset: ONNX opset version.

    Raises:
        ExportError: ``torch.onnx.export`` failed.
    """
    import torch

    path = Path(path)
    model = model.eval()
    example = torch.zeros(2, *input_shape)  # batch 2: a batch-1 trace could bake in size-1 broadcasts
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Legacy exporter (see the module docstring for why not dynamo).
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=int(opset),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    except Exception as e:  # noqa: BLE001 - torch.onnx raises many types
        first = str(e).strip().splitlines()
        raise ExportError(f"{path}: torch.onnx.export failed (opset {opset}); expected an exportable model, got "
                          f"{type(e).__name__}: {first[0][:200] if first else ''}") from None
    return path


def ort_session(path: str | Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session (``threads`` = intra-op threads, 0 = onnxruntime's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _run_session(sess: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)])


def torch_logits(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """PyTorch logits of ``model`` (eval, no grad, CPU) for a float32 ``(N, C, H, W)`` array."""
    import torch

    model = model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).numpy()
                               for i in range(0, len(x), batch_size)])


def onnx_parity(path: str | Path, model: Any, x: np.ndarray, reference: np.ndarray | None = None
                ) -> tuple[float, np.ndarray, np.ndarray]:
    """``(max |Δ|, torch logits, onnxruntime logits)`` of ``model`` and the ONNX file on the same inputs ``x``."""
    ref = torch_logits(model, x) if reference is None else reference
    got = _run_session(ort_session(path), np.ascontiguousarray(x, dtype=np.float32))
    if got.shape != ref.shape:
        raise ExportError(f"{path}: output shape {got.shape} disagrees with PyTorch's {ref.shape}; expected the "
                          "same")
    return float(np.abs(got.astype(np.float64) - ref).max()), ref, got


def measure_ort_latency(path: str | Path, x: np.ndarray, runs: int = 50, threads: int = 1,
                        warmup: int = 5) -> dict[str, float]:
    """Median / p90 wall time in ms of ``runs`` onnxruntime calls on ``x`` after ``warmup`` calls."""
    sess = ort_session(path, threads)
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
            "runs": runs, "threads": threads, "batch": int(x.shape[0])}


def count_flops(model: Any, input_shape: tuple[int, int, int]) -> int:
    """FLOPs of one forward pass on one image (``torch.utils.flop_counter``; counts conv/matmul, 2 per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------------------
# Helpers of the exporter
# ------------------------------------------------------------------------------------------------------------

def _stack_split(dataset: Any, split: str, limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                              np.ndarray]:
    """``(tensors (N,C,H,W) float32, raw uint8 images, labels)`` of a split through the training pipeline."""
    raw, y = dataset.arrays(split)
    ds = dataset.dataset(split)
    idx = np.arange(len(raw))
    if limit is not None and limit < len(raw):
        idx = np.sort(np.random.default_rng(seed).choice(len(raw), size=limit, replace=False))
    x = np.stack([np.asarray(ds[int(i)][0], dtype=np.float32) for i in idx])
    return x, raw[idx], y[idx]


def _is_gray_source(raw: np.ndarray) -> bool:
    if raw.ndim == 3:
        return True
    sample = raw[: min(len(raw), 64)].astype(np.int16)
    return bool(raw.shape[-1] == 3 and np.array_equal(sample[..., 0], sample[..., 1])
                and np.array_equal(sample[..., 0], sample[..., 2]))


def _preprocessing(info: Any, channels: int, size: tuple[int, int], gray_source: bool, int8: bool) -> dict[str, Any]:
    multilabel = info.task.startswith("multi-label")
    return {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
        "dataset": info.name, "task": info.task,
        "model": MODEL_FILE, "model_int8": MODEL_INT8_FILE if int8 else None,
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32", "channels": channels,
                  "height": size[0], "width": size[1], "color": "gray" if channels == 1 else "rgb",
                  "batch": "dynamic"},
        "resize": {"method": "bilinear", "library": "PIL Image.resize(..., Image.Resampling.BILINEAR)",
                   "rule": "resize the whole image to height x width (aspect ratio not kept; the training images "
                           "are square); 8-bit images are resized as 8-bit, others as float"},
        "channel_conversion": {
            "gray_to_rgb": bool(channels == 3 and gray_source),
            "rgb_to_gray": bool(channels == 1),
            "rule": "gray->RGB repeats the channel (only for models trained on gray images stored as RGB); "
                    "RGB->gray uses ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B); anything else is an error"},
        "intensity": {"source_range": [0, 255], "scale": 1.0 / 255.0,
                      "mean": [float(m) for m in info.mean], "std": [float(s) for s in info.std],
                      "formula": "x[c] = (pixel[c] * scale - mean[c]) / std[c]",
                      "non_uint8": "images that are not 8-bit (16-bit PNG, DICOM, NIfTI, float arrays) are min-max "
                                   "scaled to 0..255 first; a constant image becomes 0"},
        "output": {"name": OUTPUT_NAME, "activation": "sigmoid" if multilabel else "softmax",
                   "decision": "threshold each label" if multilabel else "argmax",
                   "threshold": 0.5, "num_classes": int(info.num_classes),
                   "label_names": list(info.label_names)},
    }


def _scores(logits: np.ndarray, task: str) -> np.ndarray:
    from mednas_nni.deploy_runtime import sigmoid, softmax

    return sigmoid(logits) if task.startswith("multi-label") else softmax(logits, axis=1)


def _metrics(y: np.ndarray, logits: np.ndarray, task: str) -> dict[str, float] | None:
    if task == "segmentation":
        return None
    from mednas_nni.evaluators.classification import classification_metrics

    return classification_metrics(y, _scores(logits, task), task)


def _describe(space_cls: Any, model: Any, sample: dict[str, Any]) -> str | None:
    for attr in ("describe_arch", "describe"):
        fn = getattr(space_cls, attr, None)
        if callable(fn):
            try:
                text = fn(sample)
            except TypeError:
                continue
            if isinstance(text, str) and text.strip():
                return text
    fn = getattr(model, "describe", None)
    if callable(fn):
        try:
            text = fn()
            return text if isinstance(text, str) and text.strip() else None
        except TypeError:
            return None
    return None


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: expected a folder (or nothing) for the bundle, got a file")
    if out.is_dir() and any(out.iterdir()) and not ((out / PREPROCESSING_FILE).exists()
                                                     or (out / MODEL_FILE).exists()):
        raise ExportError(f"{out}: exists and is not a bundle; expected a new folder or an earlier bundle "
                          "(it would be replaced)")


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``; an existing ``target`` goes only once ``new`` is there."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    try:
        new.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"mednas_nni": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}"


# ------------------------------------------------------------------------------------------------------------
# The plugin
# ------------------------------------------------------------------------------------------------------------

class ONNXExporter(ExporterPlugin):
    """ONNX bundle (fp32 + optional int8) checked against PyTorch with onnxruntime, plus model card and Grad-CAM.

    Args:
        opset: ONNX opset of ``model.onnx``.
        int8: also write ``model.int8.onnx`` (static QDQ quantisation calibrated on training images).
        atol: the export fails when max |logit difference| onnxruntime vs PyTorch on the test split exceeds it.
        calibration_images: training images for the int8 calibration.
        latency_runs: timed onnxruntime runs for the median batch-1 latency.
        gradcam_per_class: Grad-CAM test images per class written to ``RUN_DIR/gradcam`` (0 = none).

    Example::

        report = ONNXExporter(int8=True).export("runs/zc_nsga2-breastmnist-...", "bundle")
    """

    name = "onnx"
    Params = ONNXExporterParams

    def __init__(self, *, opset: int = 17, int8: bool = False, atol: float = 1e-4, calibration_images: int = 128,
                 latency_runs: int = 50, gradcam_per_class: int = 2):
        self.params = ONNXExporterParams(opset=opset, int8=int8, atol=atol, calibration_images=calibration_images,
                                         latency_runs=latency_runs, gradcam_per_class=gradcam_per_class)

    def export(self, run_dir: Any, out_dir: Any) -> dict[str, Any]:
        """Write the bundle for the best model of ``run_dir`` into ``out_dir``; return a JSON-able report.

        Args:
            run_dir: a finished run directory (a :class:`~mednas_nni.io.RunDir` or a path).
            out_dir: the bundle folder (created or replaced as a whole).

        Raises:
            RunDirError: ``run_dir`` is not a finished run (no config, no weights).
            ExportError: export, parity (worse than ``atol``) or quantisation failed; nothing is written.
        """
        from mednas_nni.experiment import load_trained_model

        t_start = time.perf_counter()
        rd = RunDir.open(getattr(run_dir, "path", run_dir))
        out = Path(out_dir)
        _check_target(out)
        model, cfg, dataset = load_trained_model(rd.path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        gtmp = Path(tempfile.mkdtemp(prefix=f".{GRADCAM_DIR}.tmp-", dir=rd.path)) if self.params.gradcam_per_class \
            else None
        try:
            report = self._export(rd, model, cfg, dataset, tmp, out, gtmp)
            os.chmod(tmp, 0o755)
            _replace_dir(tmp, out)
            if gtmp is not None and report["gradcam"].get("files"):
                os.chmod(gtmp, 0o755)
                _replace_dir(gtmp, rd / GRADCAM_DIR)
            elif gtmp is not None:
                shutil.rmtree(gtmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if gtmp is not None:
                shutil.rmtree(gtmp, ignore_errors=True)
            raise
        report["seconds"] = time.perf_counter() - t_start
        report["files"] = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
        _logger.info("bundle written to %s in %.1f s", out, report["seconds"])
        return report

    # -- the steps, all writing into tmp
    def _export(self, rd: RunDir, model: Any, cfg: Any, dataset: Any, tmp: Path, out: Path,
                gtmp: Path | None) -> dict[str, Any]:
        from mednas_nni.registry import get_plugin

        p = self.params
        info = dataset.info
        x_test, raw_test, y_test = _stack_split(dataset, "test")
        channels, height, width = (int(s) for s in x_test.shape[1:])
        shape = (channels, height, width)

        # 1. model.onnx and parity on identical input tensors
        onnx_path = export_onnx(model, tmp / MODEL_FILE, shape, p.opset)
        max_diff, ref, got = onnx_parity(onnx_path, model, x_test)
        if not max_diff <= p.atol:  # also catches NaN
            raise ExportError(f"onnx parity failed for {out / MODEL_FILE}: max |Δ| {max_diff:.3g} > atol "
                              f"{p.atol:g} on {len(x_test)} test images (opset {p.opset})")

        # 2. preprocessing.json, checked end to end: raw test images -> bundle preprocessing -> onnxruntime
        prep = _preprocessing(info, channels, (height, width), _is_gray_source(raw_test), p.int8)
        atomic_write_json(tmp / PREPROCESSING_FILE, prep)
        bundle = Bundle(tmp)
        x_dev = np.stack([bundle.preprocess(InputImage("test", i, raw_test[i])) for i in range(len(raw_test))])
        pre_diff = float(np.abs(x_dev - x_test).max())
        e2e = bundle.run(x_dev)
        e2e_diff = float(np.abs(e2e.astype(np.float64) - ref).max())
        if not e2e_diff <= p.atol:
            raise ExportError(f"{out / PREPROCESSING_FILE}: end-to-end parity failed; expected raw test images "
                              f"through preprocessing.json + model.onnx within atol {p.atol:g} of PyTorch, got max "
                              f"|Δ| {e2e_diff:.3g} (inputs differ by {pre_diff:.3g})")
        m_torch, m_ort = _metrics(y_test, ref, info.task), _metrics(y_test, got, info.task)
        parity: dict[str, Any] = {
            "split": "test", "images": int(len(x_test)), "atol": p.atol, "opset": p.opset, "passed": True,
            "max_abs_diff_logits": max_diff,
            "max_abs_diff_end_to_end": e2e_diff,
            "max_abs_diff_preprocessing": pre_diff,
            "argmax_agreement": float((ref.argmax(1) == got.argmax(1)).mean()) if ref.ndim == 2 else None,
            "metrics": {"pytorch": m_torch, "onnxruntime_fp32": m_ort},
            "notes": ("max_abs_diff_logits: PyTorch and onnxruntime on the same normalised test tensors (the "
                      "training pipeline); end_to_end: raw uint8 test images through preprocessing.json "
                      "(deploy_runtime) and onnxruntime, against PyTorch on the training pipeline"),
        }

        # 3. model.int8.onnx
        int8_report: dict[str, Any] | None = None
        if p.int8:
            int8_report = self._int8(model, dataset, onnx_path, tmp / MODEL_INT8_FILE, x_test, y_test, ref, info,
                                     m_torch)
            parity["int8"] = int8_report

        # 4. size, params, FLOPs, latency
        params = int(sum(t.numel() for t in model.parameters()))
        flops = count_flops(model, shape)
        one = x_test[:1]
        latency = {"fp32": {"threads_1": measure_ort_latency(onnx_path, one, p.latency_runs, threads=1),
                            "threads_default": measure_ort_latency(onnx_path, one, p.latency_runs, threads=0)}}
        if p.int8:
            latency["int8"] = {"threads_1": measure_ort_latency(tmp / MODEL_INT8_FILE, one, p.latency_runs, 1),
                               "threads_default": measure_ort_latency(tmp / MODEL_INT8_FILE, one, p.latency_runs, 0)}

        # 5. Grad-CAM (classification only), into a temporary folder of the run directory
        gradcam: dict[str, Any] = {"files": []}
        if gtmp is not None and info.task != "segmentation":
            from mednas_nni.explain import write_gradcam

            try:
                gradcam = write_gradcam(model, dataset, gtmp, per_class=p.gradcam_per_class)
            except MedNASError as e:
                _logger.warning("Grad-CAM skipped: %s", e)
                gradcam = {"files": [], "skipped": str(e)}

        # 6. parity.json and model_card.md
        atomic_write_json(tmp / PARITY_FILE, parity)
        sample = json.loads((rd / RunDir.BEST_ARCH).read_text())
        metrics = json.loads((rd / RunDir.METRICS).read_text()) if (rd / RunDir.METRICS).is_file() else {}
        space_cls = get_plugin("search_spaces", cfg.space.name)
        card = _model_card(
            rd=rd, cfg=cfg, info=info, metrics=metrics, parity=parity, int8=int8_report, sample=sample,
            description=_describe(space_cls, model, sample), params=params, flops=flops, latency=latency,
            gradcam=gradcam, shape=shape, prep=prep, sizes={MODEL_FILE: (tmp / MODEL_FILE).stat().st_size,
                                                            **({MODEL_INT8_FILE: (tmp / MODEL_INT8_FILE).stat().st_size}
                                                               if p.int8 else {})},
            versions=_versions())
        atomic_write_text(tmp / MODEL_CARD_FILE, card)
        return {"exporter": self.name, "params": p.model_dump(), "run_dir": str(rd.path), "bundle": str(out),
                "dataset": info.name, "task": info.task, "parity": parity, "params_count": params, "flops": flops,
                "latency": latency,
                "gradcam": {"dir": str(rd / GRADCAM_DIR) if gradcam.get("files") else None,
                            "layer": gradcam.get("layer"), "files": [g["file"] for g in gradcam.get("files", [])],
                            **({"skipped": gradcam["skipped"]} if "skipped" in gradcam else {})}}

    def _int8(self, model: Any, dataset: Any, onnx_path: Path, int8_path: Path, x_test: np.ndarray,
              y_test: np.ndarray, ref: np.ndarray, info: Any, m_torch: dict[str, float] | None) -> dict[str, Any]:
        from ._quant import quantize_int8

        calib, _, _ = _stack_split(dataset, "train", limit=self.params.calibration_images, seed=0)
        settings = quantize_int8(onnx_path, int8_path, calib, INPUT_NAME)
        got8 = _run_session(ort_session(int8_path), x_test)
        m8 = _metrics(y_test, got8, info.task)
        drop = None
        if m_torch is not None and m8 is not None:
            drop = {k: 100.0 * (m_torch[k] - m8[k]) for k in ("acc", "auc")}
        report = {"settings": settings, "max_abs_diff_logits": float(np.abs(got8 - ref).max()),
                  "argmax_agreement": float((ref.argmax(1) == got8.argmax(1)).mean()) if ref.ndim == 2 else None,
                  "metrics": m8, "drop_points_vs_pytorch": drop,
                  "size_bytes": int8_path.stat().st_size, "fp32_size_bytes": onnx_path.stat().st_size}
        if drop is not None and max(drop.values()) > 1.0:
            _logger.warning("int8 model loses %.1f ACC / %.1f AUC points on the test split", drop["acc"], drop["auc"])
        return report


# ------------------------------------------------------------------------------------------------------------
# Model card
# ------------------------------------------------------------------------------------------------------------

def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.2f} MiB"


def _model_card(*, rd: RunDir, cfg: Any, info: Any, metrics: dict[str, Any], parity: dict[str, Any],
                int8: dict[str, Any] | None, sample: dict[str, Any], description: str | None, params: int,
                flops: int, latency: dict[str, Any], gradcam: dict[str, Any], shape: tuple[int, int, int],
                prep: dict[str, Any], sizes: dict[str, int], versions: dict[str, str]) -> str:
    m_pt = parity["metrics"]["pytorch"] or {}
    m_ort = parity["metrics"]["onnxruntime_fp32"] or {}
    m8 = (int8 or {}).get("metrics") or {}
    base = metrics.get("majority_baseline_test", {})
    val = metrics.get("val", {})
    test_run = metrics.get("test", {})
    L: list[str] = []
    L += [f"# Model card: {cfg.space.name} winner on {info.name}", "",
          f"Exported by mednas-nni {versions['mednas_nni']} from run `{rd.path.name}` on "
          f"{time.strftime('%Y-%m-%d')}. Bundle files: "
          + ", ".join(f"`{k}` ({_kb(v)})" for k, v in sizes.items())
          + f", `{PREPROCESSING_FILE}`, `{PARITY_FILE}`, `{MODEL_CARD_FILE}`.", ""]
    L += ["## Intended use and limits", "",
          "- **Research use only. This is not a medical device** and has not been validated for diagnosis, "
          "screening or any clinical decision. Do not use it on patients.",
          f"- It classifies {shape[1]}x{shape[2]} {'gray' if shape[0] == 1 else 'RGB'} images like those of "
          f"{info.name} ({info.task}, {info.num_classes} classes: {', '.join(info.label_names)}). Images from "
          "other modalities, scanners, resolutions or populations are out of distribution and its outputs on them "
          "are meaningless; it has no 'none of these' class.",
          "- The model was found by an automated architecture search with a small budget and trained for "
          f"{cfg.evaluator.epochs} epoch(s); compare its metrics with the majority baseline below before trusting it.",
          "- Probabilities are not calibrated.", ""]
    L += ["## Data", "",
          f"- Data set: **{info.name}** (`{cfg.data.name}` plugin, params "
          f"`{json.dumps({k: v for k, v in dict(cfg.data.params).items() if k != 'root'})}`).",
          f"- Licence: {info.licence or 'see the data set source'}.",
          f"- Citation: {info.citation or 'see the data set source'}.",
          "- Splits (official): " + ", ".join(f"{k} {v}" for k, v in info.split_sizes.items()) + "; the search and "
          "training used train, model selection val, and the test split was used once for the numbers below.", ""]
    L += ["## Metrics (test split)", "",
          "| metric | PyTorch | ONNX fp32 (onnxruntime) | ONNX int8 | majority baseline | val (PyTorch) |",
          "|---|---|---|---|---|---|"]
    for k in ("acc", "auc", "balanced_acc"):
        if k in m_pt or k in test_run:
            L.append(f"| {k.upper() if k != 'balanced_acc' else 'balanced ACC'} | {_fmt(m_pt.get(k, test_run.get(k)))} "
                     f"| {_fmt(m_ort.get(k))} | {_fmt(m8.get(k)) if int8 else 'not exported'} | {_fmt(base.get(k))} "
                     f"| {_fmt(val.get(k))} |")
    L += ["", "ACC/AUC are the official MedMNIST definitions (`medmnist.evaluator`). The majority baseline always "
          "predicts the most frequent training class (its AUC is 0.5)."]
    worse = [f"{k.upper()} {m_pt[k]:.4f} <= {base[k]:.4f}" for k in ("acc", "auc")
             if k in m_pt and k in base and m_pt[k] <= base[k]]
    if worse:
        advice = (" Treat this model as a pipeline check, not as a classifier; search or train longer."
                  if len(worse) == 2 else "")
        L += ["", f"**Warning: not above the majority baseline on the test split ({'; '.join(worse)}).**{advice}"]
    L.append("")
    L += ["## Deployment checks", "",
          f"- onnxruntime vs PyTorch on {parity['images']} test images: max |Δ logits| "
          f"{parity['max_abs_diff_logits']:.2e} (same tensors), {parity['max_abs_diff_end_to_end']:.2e} end to end "
          f"(raw images through `{PREPROCESSING_FILE}`); tolerance {parity['atol']:g}: passed.",
          f"- Opset {parity['opset']}, legacy exporter (`torch.onnx.export(dynamo=False)`), dynamic batch axis, "
          f"input `{INPUT_NAME}` float32 NCHW (batch, {shape[0]}, {shape[1]}, {shape[2]}), output `{OUTPUT_NAME}` "
          f"(apply {prep['output']['activation']}).",
          f"- Preprocessing: resize to {shape[1]}x{shape[2]} (bilinear), x/255, then (x - {prep['intensity']['mean']})"
          f" / {prep['intensity']['std']} per channel; details in `{PREPROCESSING_FILE}`."]
    if int8:
        d = int8.get("drop_points_vs_pytorch") or {}
        L.append(f"- int8 (static QDQ, MinMax calibration on {int8['settings']['calibration'].split(' over ')[-1]}): "
                 f"{_kb(int8['size_bytes'])} vs {_kb(int8['fp32_size_bytes'])}; metric drop vs PyTorch "
                 f"{d.get('acc', float('nan')):+.2f} ACC points, {d.get('auc', float('nan')):+.2f} AUC points "
                 f"(positive = worse); argmax agreement {int8['argmax_agreement']:.3f}.")
    L.append("")
    L += ["## Size and speed", "",
          f"- Parameters: {params:,}", f"- FLOPs per image: {flops:,} ({flops / 2:,.0f} MACs; "
          "`torch.utils.flop_counter`, convolutions and matrix products only)", "",
          "| model | onnxruntime batch 1, 1 thread (median ms) | batch 1, default threads (median ms) |",
          "|---|---|---|"]
    for k, v in latency.items():
        L.append(f"| {k} | {v['threads_1']['median_ms']:.3f} | {v['threads_default']['median_ms']:.3f} |")
    L += ["", f"Measured on {_cpu_name()} ({os.cpu_count()} logical CPUs), median of "
          f"{next(iter(latency.values()))['threads_1']['runs']} runs after 5 warm-up runs; onnxruntime "
          f"{versions['onnxruntime']}, CPUExecutionProvider.", ""]
    L += ["## Architecture", "", f"Search space `{cfg.space.name}` with params `{json.dumps(dict(cfg.space.params))}`."]
    if description:
        L += ["", "```", description.rstrip(), "```"]
    L += ["", "<details><summary>best_arch.json</summary>", "", "```json", json.dumps(sample, indent=1), "```", "",
          "</details>", ""]
    s = metrics.get("search", {})
    r = metrics.get("retrain", {})
    L += ["## How it was searched", "",
          f"- Strategy `{cfg.strategy.name}` with params `{json.dumps(dict(cfg.strategy.params))}`.",
          f"- Search: {s.get('evaluated', '?')} architectures evaluated ({s.get('failed', '?')} failed) in "
          f"{(s.get('seconds') or 0):.0f} s; {len(metrics.get('finalists', []))} finalist(s) retrained for "
          f"{r.get('epochs', cfg.evaluator.epochs)} epoch(s) ({(r.get('seconds') or 0):.0f} s) with Adam lr "
          f"{cfg.evaluator.lr}, batch {cfg.evaluator.batch_size}; selected by {metrics.get('selected_by', '?')} "
          f"(best epoch {metrics.get('best_epoch', '?')}, finalist {metrics.get('best_finalist', '?')}).",
          f"- Seed {cfg.run.seed}, device {metrics.get('device', cfg.run.device)}.", ""]
    L += ["## Explanations", ""]
    if gradcam.get("files"):
        L += [f"Grad-CAM (Selvaraju et al., ICCV 2017; `monai.visualize.GradCAM`) at layer `{gradcam['layer']}` "
              f"(the last convolution with a spatial output) for {len(gradcam['files'])} test images, in "
              f"`{rd.path / GRADCAM_DIR}`:", ""]
        L += [f"- `{g['file']}`: true {g['true']}, predicted {g['predicted']} (p={g['probability']:.2f})"
              for g in gradcam["files"]]
    else:
        L.append(f"None written ({gradcam.get('skipped', 'gradcam_per_class = 0 or not a classification task')}).")
    L += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(L)

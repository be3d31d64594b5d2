"""The built-in ``onnx`` exporter: a deployable bundle checked against PyTorch with onnxruntime.

``ONNXExporter().export(trained, out_dir)`` takes a :class:`~mednas_nni.contracts.TrainedModel` (the trained
network, its task, data set, architecture, config and metrics, already in memory) and writes ``out_dir``
(``mednas export`` uses ``RUN_DIR/bundle``, the ``export`` section of a search config ``RUN_DIR/export``) with
``model.onnx``, optionally ``model.int8.onnx``, ``preprocessing.json``, ``parity.json`` and ``model_card.md`` (the
layout: :mod:`mednas_nni.deploy.layout`), plus, for classification, Grad-CAM images of the winner in the bundle's
``gradcam/`` (segmentation: the run's ``overlays.png``), linked from the model card by relative paths so that the
bundle can be copied anywhere. The task decides what the output means (``preprocessing.json`` ``output``, the model card
sentence) and how the model is scored; segmentation bundles output per-pixel logits and must give the same masks
as PyTorch on the whole test split.

Everything is written into a temporary folder next to ``out_dir`` and renamed into place at the end, so a failed
export (parity worse than ``atol``, masks that differ, quantisation error) leaves no half-written bundle, and an
earlier bundle at ``out_dir`` survives until the new one is complete.

The pieces live next to this file: :mod:`._convert` (torch.onnx export, onnxruntime calls), :mod:`._data`
(splits, ``preprocessing.json``), :mod:`._parity`, :mod:`._quant` (int8), :mod:`._measure` (latency, FLOPs) and
:mod:`._card` (model card).
"""
from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import Field

from mednas_nni.contracts import ExporterPlugin, PluginParams, TrainedModel
from mednas_nni.deploy.bundle import bundle_hash
from mednas_nni.deploy.layout import (GRADCAM_DIR, MODEL_CARD_FILE, MODEL_FILE, MODEL_INT8_FILE, PARITY_FILE,
                                      PREPROCESSING_FILE)
from mednas_nni.errors import ExportError, MedNASError
from mednas_nni.io import atomic_write_json, atomic_write_text, dir_mode

from ._card import CardFacts, model_card
from ._convert import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_parity, ort_session, run_session, torch_logits
from ._data import build_preprocessing, is_gray_source, stack_split, task_type
from ._measure import count_flops, cpu_name, measure_ort_latency, versions
from ._parity import check_parity, int8_report

__all__ = ["ONNXExporterParams", "ONNXExporter", "export_onnx", "onnx_parity", "ort_session",
           "measure_ort_latency", "count_flops", "torch_logits", "stack_split", "INPUT_NAME", "OUTPUT_NAME"]

_logger = logging.getLogger(__name__)

OVERLAYS_FILE = "overlays.png"
CALIBRATION_FILE = "calibration.png"  # the run's reliability diagram (the metrics half of issue #12)
# Old private names, still imported by scripts written before the split.
_stack_split, _run_session, _cpu_name = stack_split, run_session, cpu_name


class ONNXExporterParams(PluginParams):
    """Config ``export.params`` of the ``onnx`` exporter."""

    opset: int = Field(17, ge=13, le=20, description="ONNX opset of model.onnx (legacy exporter: 13..20).")
    int8: bool = Field(False, description="Also write model.int8.onnx (onnxruntime static QDQ quantisation).")
    atol: float = Field(1e-4, gt=0, description="Largest allowed max |logit difference| onnxruntime vs PyTorch.")
    calibration_images: int = Field(128, ge=1, description="Training images used to calibrate int8.")
    latency_runs: int = Field(50, ge=1, description="Timed onnxruntime runs (batch 1) for the median latency.")
    gradcam_per_class: int = Field(2, ge=0, description="Grad-CAM test images per class (0 = none; "
                                                        "classification only).")


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


def _cpu_model(model: Any) -> Any:
    """``model`` in eval mode on the CPU (a copy when it lives elsewhere: the caller's model is not moved)."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()
    return model.eval()


def _describe(trained: TrainedModel) -> str | None:
    fn = getattr(trained.space, "describe", None)
    if callable(fn):
        try:
            text = fn(trained.sample)
        except Exception:  # noqa: BLE001 - a space's describe must not break an export
            _logger.warning("search space describe() failed; the model card shows best_arch.json only")
            return None
        return text if isinstance(text, str) and text.strip() else None
    return None


class ONNXExporter(ExporterPlugin):
    """ONNX bundle (fp32 + optional int8) checked against PyTorch with onnxruntime, plus model card and Grad-CAM.

    Args:
        opset: ONNX opset of ``model.onnx``.
        int8: also write ``model.int8.onnx`` (static QDQ quantisation calibrated on training images).
        atol: the export fails when max |logit difference| onnxruntime vs PyTorch on the test split exceeds it.
        calibration_images: training images for the int8 calibration.
        latency_runs: timed onnxruntime runs for the median batch-1 latency.
        gradcam_per_class: Grad-CAM test images per class written to the bundle's ``gradcam/`` (0 = none;
            classification only).

    Example::

        from mednas_nni.experiment import load_trained
        report = ONNXExporter(int8=True).export(load_trained("runs/zc_nsga2-breastmnist-..."), "bundle")
    """

    name = "onnx"
    Params = ONNXExporterParams

    def __init__(self, *, opset: int = 17, int8: bool = False, atol: float = 1e-4, calibration_images: int = 128,
                 latency_runs: int = 50, gradcam_per_class: int = 2):
        self.params = ONNXExporterParams(opset=opset, int8=int8, atol=atol, calibration_images=calibration_images,
                                         latency_runs=latency_runs, gradcam_per_class=gradcam_per_class)

    def export(self, trained: TrainedModel, out_dir: Any) -> dict[str, Any]:
        """Write the bundle of ``trained`` into ``out_dir``; return a JSON-able report.

        Args:
            trained: the trained model with its task, data set, config and metrics (nothing is reloaded).
            out_dir: the bundle folder (created or replaced as a whole).

        Raises:
            ExportError: export, parity (worse than ``atol``; segmentation masks that differ) or quantisation
                failed; nothing is written.
        """
        if not isinstance(trained, TrainedModel):
            raise TypeError(f"ONNXExporter.export: expected a TrainedModel (mednas_nni.experiment.load_trained), "
                            f"got {type(trained).__name__}")
        t_start = time.perf_counter()
        out = Path(out_dir)
        _check_target(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            report = self._export(trained, tmp, out)
            os.chmod(tmp, dir_mode())   # mkdtemp makes 0700; the bundle gets a plain mkdir's mode (umask)
            _replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        report["seconds"] = time.perf_counter() - t_start
        report["files"] = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
        if report["gradcam"].get("files"):
            report["gradcam"]["dir"] = os.path.normpath(out / report["gradcam"]["dir"])
        _logger.info("bundle written to %s in %.1f s", out, report["seconds"])
        return report

    # -- the steps, all writing into tmp
    def _export(self, trained: TrainedModel, tmp: Path, out: Path) -> dict[str, Any]:
        p, info, task = self.params, trained.info, trained.task
        model = _cpu_model(trained.model)
        work = TrainedModel(model=model, task=task, dataset=trained.dataset, sample=trained.sample,
                            cfg=trained.cfg, run_dir=Path(trained.run_dir), metrics=trained.metrics or {},
                            space=trained.space)
        x_test, raw_test, _ = stack_split(trained.dataset, "test")
        channels, height, width = (int(s) for s in x_test.shape[1:])
        shape = (channels, height, width)

        # 1. model.onnx + preprocessing.json, then parity (same tensors, end to end, masks) and the task's metrics
        onnx_path = export_onnx(model, tmp / MODEL_FILE, shape, p.opset)
        train_raw, _ = trained.dataset.arrays("train")
        prep = build_preprocessing(task, info, channels, (height, width), is_gray_source(raw_test), p.int8,
                                   train_raw=train_raw if tuple(train_raw.shape[1:3]) == (height, width) else None,
                                   metrics=trained.metrics)
        prep.write(tmp / PREPROCESSING_FILE)
        parity, ref, got = check_parity(work, onnx_path, tmp, x_test, raw_test, atol=p.atol, opset=p.opset, out=out)

        # 2. model.int8.onnx
        int8: dict[str, Any] | None = None
        if p.int8:
            from ._quant import quantize_int8

            calib, _, _ = stack_split(trained.dataset, "train", limit=p.calibration_images, seed=0)
            settings = quantize_int8(onnx_path, tmp / MODEL_INT8_FILE, calib, INPUT_NAME)
            int8 = int8_report(work, prep, tmp / MODEL_INT8_FILE, onnx_path, x_test, ref, got,
                               parity["metrics"]["pytorch"], settings)
            parity["int8"] = int8

        # 3. size, params, FLOPs, latency
        params = int(sum(t.numel() for t in model.parameters()))
        flops = count_flops(model, shape)
        one = x_test[:1]
        latency = {"fp32": {"threads_1": measure_ort_latency(onnx_path, one, p.latency_runs, threads=1),
                            "threads_default": measure_ort_latency(onnx_path, one, p.latency_runs, threads=0)}}
        if p.int8:
            latency["int8"] = {"threads_1": measure_ort_latency(tmp / MODEL_INT8_FILE, one, p.latency_runs, 1),
                               "threads_default": measure_ort_latency(tmp / MODEL_INT8_FILE, one, p.latency_runs, 0)}

        # 4. explanations: Grad-CAM (classification) or the run's overlays (segmentation), inside the bundle, and
        #    the run's reliability diagram when the run wrote one
        explanations = self._explanations(work, prep, tmp)
        calibration = Path(trained.run_dir) / CALIBRATION_FILE
        if not prep.segmentation and calibration.is_file():
            shutil.copyfile(calibration, tmp / CALIBRATION_FILE)

        # 5. parity.json and model_card.md
        atomic_write_json(tmp / PARITY_FILE, parity)
        sizes = {MODEL_FILE: (tmp / MODEL_FILE).stat().st_size}
        if p.int8:
            sizes[MODEL_INT8_FILE] = (tmp / MODEL_INT8_FILE).stat().st_size
        digest = bundle_hash(tmp)
        facts = CardFacts(parity=parity, prep=prep, shape=shape, params=params, flops=flops, latency=latency,
                          sizes=sizes, versions=versions(), int8=int8, description=_describe(trained),
                          explanations=explanations, bundle_hash=digest,
                          calibration_png=CALIBRATION_FILE if (tmp / CALIBRATION_FILE).is_file() else None)
        atomic_write_text(tmp / MODEL_CARD_FILE, model_card(work, facts))
        gradcam = {"dir": explanations.get("dir"), "layer": explanations.get("layer"),
                   "files": [g["file"] if isinstance(g, dict) else g for g in explanations.get("files", [])],
                   **({"skipped": explanations["skipped"]} if "skipped" in explanations else {})}
        return {"exporter": self.name, "params": p.model_dump(), "run_dir": str(trained.run_dir), "bundle": str(out),
                "bundle_hash": digest,
                "dataset": info.name, "task": prep.task, "task_type": task_type(info), "parity": parity,
                "params_count": params, "flops": flops, "latency": latency, "gradcam": gradcam}

    def _explanations(self, trained: TrainedModel, prep: Any, bundle_tmp: Path) -> dict[str, Any]:
        """Pictures for the model card, written into the bundle; ``dir`` is relative to the bundle."""
        if prep.segmentation:
            overlays = Path(trained.run_dir) / OVERLAYS_FILE
            if overlays.is_file():
                shutil.copyfile(overlays, bundle_tmp / OVERLAYS_FILE)
                return {"method": "Validation overlays of the run (image / truth / prediction)", "dir": ".",
                        "files": [OVERLAYS_FILE]}
            return {"files": [], "skipped": "Grad-CAM is for classification; the run has no overlays.png"}
        if not self.params.gradcam_per_class:
            return {"files": [], "skipped": "gradcam_per_class = 0"}
        from mednas_nni.explain import write_gradcam

        try:
            out = prep.output
            g = write_gradcam(trained.model, trained.dataset, bundle_tmp / GRADCAM_DIR,
                              per_class=self.params.gradcam_per_class,
                              positive=out.positive_class.index if out.positive_class else None,
                              threshold=out.threshold)
        except MedNASError as e:
            _logger.warning("Grad-CAM skipped: %s", e)
            shutil.rmtree(bundle_tmp / GRADCAM_DIR, ignore_errors=True)
            return {"files": [], "skipped": str(e)}
        g["dir"] = GRADCAM_DIR
        return g

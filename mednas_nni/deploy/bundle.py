"""An exported bundle opened for inference: the onnxruntime session, raw outputs, probabilities and masks.

Imports only numpy, onnxruntime, pydantic and PIL (never torch or nni), so a bundle runs where only
``onnxruntime`` is installed. The bundle layout is described in :mod:`mednas_nni.deploy.layout`.
"""
from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._util import one_line
from .image import InputImage
from .layout import HASHED_FILES, MODEL_FILE, MODEL_INT8_FILE, PREPROCESSING_FILE
from .preprocessing import Preprocessing, preprocess

__all__ = ["Bundle", "bundle_hash", "softmax", "sigmoid", "masks_from_logits"]


def softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1.0 / (1.0 + np.exp(-z))


def masks_from_logits(logits: np.ndarray, activation: str = "softmax", threshold: float = 0.5) -> np.ndarray:
    """Class-index masks ``(N, H, W)`` uint8 from segmentation logits ``(N, K, H, W)``.

    ``K > 1``: per-pixel argmax over the classes (softmax is monotonic, so it is not applied). One channel, or a
    ``sigmoid`` output: foreground (1) where ``sigmoid(logit) >= threshold``.
    """
    if logits.ndim != 4:
        raise DataError(f"segmentation output: expected logits (N, K, H, W), got shape {tuple(logits.shape)}")
    if activation == "sigmoid" or logits.shape[1] == 1:
        return (sigmoid(logits[:, 0]) >= float(threshold)).astype(np.uint8)
    return np.argmax(logits, axis=1).astype(np.uint8)


def bundle_hash(folder: str | os.PathLike) -> str:
    """``sha256:<hex>`` over the bundle files that decide its answers (``model.onnx``, ``model.int8.onnx`` when
    present, ``preprocessing.json``: name and SHA-256 of each, in that order); the model card is not part of it."""
    h = hashlib.sha256()
    for name in HASHED_FILES:
        f = Path(folder) / name
        if f.is_file():
            h.update(name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).hexdigest().encode() + b"\n")
    return f"sha256:{h.hexdigest()}"


class Bundle:
    """An exported bundle folder opened for inference (onnxruntime, CPU).

    Args:
        path: the bundle folder.
        int8: run ``model.int8.onnx`` instead of ``model.onnx``.
        threads: onnxruntime ``intra_op_num_threads`` (0 = onnxruntime's default).

    Raises:
        DataError: a file is missing or damaged, or the files disagree (input size, channels, classes).
    """

    def __init__(self, path: str | os.PathLike, int8: bool = False, threads: int = 0):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: not a bundle; expected a folder written by 'mednas export', got "
                            + ("a file" if self.path.exists() else "nothing at that path"))
        self.prep: Preprocessing = Preprocessing.read(self.path / PREPROCESSING_FILE)
        model_file = self.path / (MODEL_INT8_FILE if int8 else MODEL_FILE)
        if not model_file.is_file():
            hint = "; export with --int8" if int8 else ""
            raise DataError(f"{model_file}: file not found; expected the bundle's model (written by "
                            f"'mednas export'){hint}")
        self.model_file = model_file
        self.session = self._open_session(model_file, threads)
        self._check_model()

    # -- loading and consistency checks
    @staticmethod
    def _open_session(model_file: Path, threads: int) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(str(model_file), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DataError(f"{model_file}: expected a loadable ONNX model, got {one_line(e)}") from None

    def _check_model(self) -> None:
        f = self.path / PREPROCESSING_FILE
        inp, out = self.prep.input, self.prep.output
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1:
            raise DataError(f"{self.model_file}: expected one input, got {len(ins)} ({[i.name for i in ins]})")
        self.input_name = ins[0].name
        if inp.name != self.input_name:
            raise DataError(f"{f}: input.name {inp.name!r} disagrees with {self.model_file.name}; expected "
                            f"{self.input_name!r}")
        shape = list(ins[0].shape)
        want = [inp.channels, inp.height, inp.width]
        if len(shape) != 4 or any(isinstance(s, int) and s != w for s, w in zip(shape[1:], want)):
            raise DataError(f"{f}: input {want[0]}x{want[1]}x{want[2]} (CxHxW) disagrees with "
                            f"{self.model_file.name} input shape {shape}; expected the same size")
        self.output_name = outs[0].name
        k = len(out.label_names)
        oshape = list(outs[0].shape)
        one_sigmoid = oshape[1:2] == [1] and out.activation == "sigmoid" and k == 2  # background/foreground
        if len(oshape) >= 2 and isinstance(oshape[1], int) and oshape[1] != k and not one_sigmoid:
            raise DataError(f"{f}: output.label_names has {k} names but {self.model_file.name} gives {oshape[1]} "
                            f"outputs (shape {oshape}); expected the same number")
        if self.prep.segmentation and len(oshape) != 4:
            raise DataError(f"{f}: task segmentation needs a per-pixel output (batch, K, H, W), but "
                            f"{self.model_file.name} gives shape {oshape}; expected 4 axes")

    # -- properties
    @property
    def task(self) -> str:
        """The task plugin the model was trained for (``classification`` / ``segmentation``)."""
        return self.prep.task

    @property
    def task_type(self) -> str | None:
        """The finer task type (MedMNIST vocabulary, e.g. ``binary-class``), if recorded."""
        return self.prep.task_type

    @property
    def label_names(self) -> list[str]:
        return list(self.prep.output.label_names)

    @cached_property
    def hash(self) -> str:
        """The bundle's hash (:func:`bundle_hash`), carried by every prediction record."""
        return bundle_hash(self.path)

    # -- inference
    def preprocess(self, img: InputImage) -> np.ndarray:
        """``(C, H, W)`` float32 model input for one image (see :func:`~mednas_nni.deploy.preprocessing.preprocess`)."""
        return preprocess(img, self.prep, str(self.path / PREPROCESSING_FILE))

    def run(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw model outputs (logits) for a float32 ``(N, C, H, W)`` batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = [self.session.run([self.output_name], {self.input_name: x[i:i + batch_size]})[0]
                for i in range(0, len(x), batch_size)]
        return np.concatenate(outs, axis=0)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Apply the bundle's output activation (softmax over classes, or sigmoid for multi-label)."""
        if self.prep.output.activation == "sigmoid":
            return sigmoid(logits)
        return softmax(logits, axis=1)

    def masks(self, logits: np.ndarray) -> np.ndarray:
        """Class-index masks ``(N, H, W)`` uint8 of segmentation logits (see :func:`masks_from_logits`)."""
        out = self.prep.output
        return masks_from_logits(logits, out.activation, out.threshold)

    def predict_images(self, images: list[InputImage]) -> list[dict[str, Any]]:
        """Preprocess and predict; one record per image (see :func:`mednas_nni.deploy.predict.predict_images`)."""
        from .predict import predict_images

        return predict_images(self, images)

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, model={self.model_file.name!r}, task={self.task!r})"

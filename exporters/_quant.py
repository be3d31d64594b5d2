"""Static int8 quantisation of an ONNX model with onnxruntime (QDQ format).

Recipe (onnxruntime docs, "Quantize ONNX models", static quantisation on CPU): ``quant_pre_process`` (shape
inference + graph optimisation) first, then ``quantize_static`` in QDQ format with uint8 activations and
per-channel int8 weights, calibrated with MinMax over real training images fed by a
:class:`~onnxruntime.quantization.CalibrationDataReader`.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mednas_nni.errors import ExportError

__all__ = ["ArrayCalibrationReader", "quantize_int8"]

_logger = logging.getLogger(__name__)


def _reader_base() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


class ArrayCalibrationReader:
    """A ``CalibrationDataReader`` over an array of preprocessed images ``(N, C, H, W)`` float32.

    Built lazily as a subclass of onnxruntime's class (see :func:`quantize_int8`); feeds batches of
    ``batch_size`` images under ``input_name``.
    """

    def __init__(self, images: np.ndarray, input_name: str = "image", batch_size: int = 16):
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.input_name, self.batch_size = input_name, int(batch_size)
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.images):
            return None
        batch = self.images[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._pos = 0


def _nonfinite_pad_nodes(model: Any) -> list[str]:
    """Names of ``Pad`` nodes padding with a non-finite constant, and of every node reading their output.

    Max pooling with ``ceil`` padding is exported as ``Pad(value=-inf)`` + ``MaxPool`` (the MSTF reduction cell,
    ``search_spaces/ops.py`` ``HalvingPool2d``). MinMax calibration then sees ``-inf`` in the padded tensor,
    onnxruntime computes a NaN zero point and the quantised graph is garbage, so these nodes stay in float.
    """
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    bad_outputs, names = set(), []
    for node in model.graph.node:
        if node.op_type == "Pad" and len(node.input) > 2 and node.input[2] in consts:
            if not np.isfinite(np.asarray(consts[node.input[2]], dtype=np.float64)).all():
                names.append(node.name)
                bad_outputs.update(node.output)
    names += [n.name for n in model.graph.node if bad_outputs.intersection(n.input)]
    return names


class _AxisWarningFilter(logging.Filter):
    """Drops onnxruntime's "Axis 1 is out-of-range for weight ... with rank 1" lines.

    ``quantize_static(per_channel=True)`` logs one on the root logger for every 1-D constant it meets (e.g. the
    normalisation constants of MONAI blocks), and quantises those tensors per tensor instead, as it should.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Axis ") and "is out-of-range for weight" in record.getMessage())


@contextlib.contextmanager
def _quiet_axis_warnings() -> Iterator[None]:
    root, f = logging.getLogger(), _AxisWarningFilter()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def _check_qparams(path: str | Path) -> None:
    """Every scale / zero point of the QDQ nodes must be finite (a NaN one silently ruins the model)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            for name in node.input[1:]:
                if name in inits and not np.isfinite(numpy_helper.to_array(inits[name]).astype(np.float64)).all():
                    raise ExportError(f"{path}: int8 quantisation produced a non-finite scale or zero point "
                                      f"({name}); expected finite calibration ranges")


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray,
                  input_name: str = "image", exclude_op_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """Quantise ``fp32_path`` into ``out_path`` (QDQ, uint8 activations, per-channel int8 weights).

    Args:
        fp32_path: the float model.
        out_path: where to write the int8 model.
        calibration: preprocessed training images ``(N, C, H, W)`` for MinMax calibration.
        input_name: the model's input name.
        exclude_op_types: operator types left in float (for example ``("Gemm",)``).

    Returns:
        A JSON-able description of the settings.

    Raises:
        ExportError: onnxruntime could not quantise the model.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    reader_cls = type("_Reader", (ArrayCalibrationReader, _reader_base()), {})
    reader = reader_cls(calibration, input_name)
    settings = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                "activations": "uint8 (asymmetric)", "weights": "int8 per channel (symmetric)",
                "calibration": f"MinMax over {len(calibration)} training images", "pre_process": True,
                "float_op_types": list(exclude_op_types)}
    with tempfile.TemporaryDirectory(prefix="mednas-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre))
            import onnx

            graph = onnx.load(str(pre))
            op_types = None
            if exclude_op_types:
                op_types = sorted({n.op_type for n in graph.node} - set(exclude_op_types))
            float_nodes = _nonfinite_pad_nodes(graph)
            settings["float_nodes"] = len(float_nodes)
            with warnings.catch_warnings(), _quiet_axis_warnings():
                # MinMax ranges are computed for every tensor, also the excluded -inf padded ones, whose NaN
                # zero points are never used (checked: no non-finite scale or zero point in the output model).
                warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"onnxruntime\.quantization.*")
                quantize_static(str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=op_types,
                                nodes_to_exclude=float_nodes or None,
                                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
            _check_qparams(out_path)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime/onnx raise many types
            first = str(e).strip().splitlines()
            raise ExportError(f"{fp32_path}: int8 quantisation failed; expected onnxruntime quantize_static to "
                              f"succeed, got {type(e).__name__}: {first[0][:200] if first else ''}") from None
    return settings

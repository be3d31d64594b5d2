"""PyTorch -> ONNX conversion and the onnxruntime calls the exporter checks it with.

Exporter choice: the legacy TorchScript exporter, ``torch.onnx.export(..., dynamo=False)``. Measured on the default
run's MSTF cell winner (142k parameters; torch 2.14.1, onnxruntime 1.32, 2 CPU cores): both exporters reach the
same parity (max |Δ| 4.8e-6 vs 3.8e-6 on random inputs), but the legacy export took 3.1 s vs 7.6-10.5 s for dynamo,
dynamo writes opset 18 and fails to down-convert to the default opset 17 (onnx version converter: "ReduceMean ...
No initializer or constant input to node found"), and it prints progress lines to stdout. The legacy exporter's
deprecation warning is filtered here.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mednas_nni.deploy.layout import INPUT_NAME, OUTPUT_NAME
from mednas_nni.errors import ExportError

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx", "ort_session", "run_session", "torch_logits", "onnx_parity",
           "ort_module"]


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


def run_session(sess: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of an onnxruntime session for a float32 ``(N, C, H, W)`` array, in batches."""
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
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
    got = run_session(ort_session(path), x)
    if got.shape != ref.shape:
        raise ExportError(f"{path}: output shape {got.shape} disagrees with PyTorch's {ref.shape}; expected the "
                          "same")
    return float(np.abs(got.astype(np.float64) - ref).max()), ref, got


_ORT_MODULE: Any = None


def ort_module(path: str | Path) -> Any:
    """An ``nn.Module`` whose forward runs the ONNX file with onnxruntime (CPU).

    It lets the task score the exported model with exactly the code that scored the PyTorch model
    (``task.evaluate(ort_module(path), loader)``). It holds one frozen dummy parameter, so ``.parameters()``,
    ``.to(device)`` and ``.eval()`` work as for any network; outputs come back on the input's device.
    """
    global _ORT_MODULE
    if _ORT_MODULE is None:
        import torch
        from torch import nn

        class OrtModule(nn.Module):
            """onnxruntime behind the ``nn.Module`` interface (inference only)."""

            def __init__(self, session: Any, source: str):
                super().__init__()
                self.session, self.source = session, source
                self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                out = run_session(self.session, x.detach().float().cpu().numpy())
                return torch.from_numpy(out).to(x.device)

            def extra_repr(self) -> str:
                return self.source

        _ORT_MODULE = OrtModule
    return _ORT_MODULE(ort_session(path), str(path))

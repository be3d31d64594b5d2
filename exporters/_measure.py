"""Size and speed of an exported model: onnxruntime latency, FLOPs, the machine and the library versions."""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._convert import ort_session

__all__ = ["measure_ort_latency", "count_flops", "cpu_name", "versions"]


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


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``; else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Versions of the libraries the bundle was made and checked with."""
    import onnx
    import onnxruntime
    import torch

    from mednas_nni import __version__

    return {"mednas_nni": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "python": platform.python_version()}

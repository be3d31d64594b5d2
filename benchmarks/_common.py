"""Shared helpers for the benchmark scripts: machine facts, result tables."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    import torch

    from mednas_nni.exporters.onnx import _cpu_name

    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write_results(out_dir: Path, stem: str, payload: dict[str, Any], table: str) -> None:
    from mednas_nni.io import atomic_write_json, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / f"{stem}.json", payload)
    atomic_write_text(out_dir / f"{stem}.md", table)

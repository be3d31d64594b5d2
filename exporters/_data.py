"""What the exporter reads from the data set: whole splits as arrays, and the ``preprocessing.json`` it implies."""
from __future__ import annotations

from typing import Any

import numpy as np

from mednas_nni.deploy.layout import MODEL_FILE, MODEL_INT8_FILE, OUTPUT_NAME
from mednas_nni.deploy.preprocessing import (ChannelConversion, InputSpec, IntensitySpec, OutputSpec,
                                             Preprocessing)
from mednas_nni.errors import ExportError

__all__ = ["sample_image", "stack_split", "is_gray_source", "task_type", "build_preprocessing"]


def sample_image(item: Any) -> Any:
    """The image of one data-set item: ``item["image"]`` of a dict sample (a pre-Core-v2 ``(x, y)`` pair: ``x``)."""
    return item["image"] if isinstance(item, dict) else item[0]


def stack_split(dataset: Any, split: str, limit: int | None = None, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tensors (N, C, H, W) float32, raw uint8 images, labels)`` of ``split`` through the training pipeline.

    ``limit``: a seeded random subset of that many items (sorted), e.g. for int8 calibration.
    """
    raw, y = dataset.arrays(split)
    ds = dataset.dataset(split)
    idx = np.arange(len(raw))
    if limit is not None and limit < len(raw):
        idx = np.sort(np.random.default_rng(seed).choice(len(raw), size=limit, replace=False))
    x = np.stack([np.asarray(sample_image(ds[int(i)]), dtype=np.float32) for i in idx])
    return x, raw[idx], y[idx]


def is_gray_source(raw: np.ndarray) -> bool:
    """True for gray images, also gray images stored as RGB (all three channels equal)."""
    if raw.ndim == 3:
        return True
    sample = raw[: min(len(raw), 64)].astype(np.int16)
    return bool(raw.shape[-1] == 3 and np.array_equal(sample[..., 0], sample[..., 1])
                and np.array_equal(sample[..., 0], sample[..., 2]))


def task_type(info: Any) -> str:
    """The data set's task type (MedMNIST vocabulary, or ``segmentation``)."""
    return str(getattr(info, "task_type", None) or info.task)


def _output(task: Any, info: Any) -> dict[str, Any]:
    """``output``: defaults from the data set, overridden by ``task.output_spec()``."""
    multilabel = task_type(info).startswith("multi-label")
    out: dict[str, Any] = {"name": OUTPUT_NAME, "activation": "sigmoid" if multilabel else "softmax",
                           "decision": "threshold each label" if multilabel else "argmax", "threshold": 0.5,
                           "num_classes": int(info.num_classes), "label_names": list(info.label_names)}
    out.update(task.output_spec() or {})
    out["name"] = OUTPUT_NAME  # the exporter names the graph output, whatever the task says
    return out


def build_preprocessing(task: Any, info: Any, channels: int, size: tuple[int, int], gray_source: bool,
                        int8: bool) -> Preprocessing:
    """The bundle's :class:`~mednas_nni.deploy.preprocessing.Preprocessing` for a model trained on ``info``.

    Raises:
        ExportError: the task's ``output_spec()`` does not fit the schema (the message names the field).
    """
    from pydantic import ValidationError

    try:
        output = OutputSpec(**_output(task, info))
    except ValidationError as e:
        raise ExportError(f"{type(task).__name__}.output_spec(): output.{_first(e)}") from None
    try:
        return Preprocessing(
            dataset=info.name, task=str(getattr(task, "name", None) or info.task), task_type=task_type(info),
            model=MODEL_FILE, model_int8=MODEL_INT8_FILE if int8 else None,
            input=InputSpec(channels=channels, height=size[0], width=size[1],
                            color="gray" if channels == 1 else "rgb"),
            channel_conversion=ChannelConversion(gray_to_rgb=bool(channels == 3 and gray_source),
                                                 rgb_to_gray=bool(channels == 1)),
            intensity=IntensitySpec(mean=[float(m) for m in info.mean], std=[float(s) for s in info.std]),
            output=output)
    except ValidationError as e:
        raise ExportError(f"data set {info.name!r} (DatasetInfo): preprocessing.json {_first(e)}") from None


def _first(e: Any) -> str:
    err = e.errors()[0]
    loc = ".".join(map(str, err["loc"]))
    msg = str(err["msg"]).removeprefix("Value error, ").replace("Input should be ", "expected ")
    return f"{loc}: {msg}, got {err.get('input')!r}" if loc else msg

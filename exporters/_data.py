"""What the exporter reads from the data set: whole splits as arrays, and the ``preprocessing.json`` it implies."""
from __future__ import annotations

from typing import Any

import numpy as np

from mednas_nni.deploy.layout import MODEL_FILE, MODEL_INT8_FILE, OUTPUT_NAME
from mednas_nni.deploy.ood import acquisition_description, training_statistics
from mednas_nni.deploy.preprocessing import (AcquisitionSpec, ChannelConversion, InputSpec, IntensitySpec,
                                             OutputSpec, Preprocessing)
from mednas_nni.errors import ExportError

__all__ = ["sample_image", "stack_split", "is_gray_source", "task_type", "positive_class", "operating_point",
           "build_preprocessing"]


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


def positive_class(info: Any, metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"index", "name"}`` of a binary set's positive class: the run's ``metrics.json`` ``positive_class``,
    else the data set's ``positive_class`` (an index or a label name); None when neither names one."""
    names = list(info.label_names)
    if len(names) != 2 or task_type(info) != "binary-class":
        return None
    given = (metrics or {}).get("positive_class")
    if given is None:
        given = getattr(info, "positive_class", None)
    if isinstance(given, dict):
        given = given.get("index", given.get("name"))
    if isinstance(given, str) and given in names:
        return {"index": names.index(given), "name": given}
    if isinstance(given, int) and not isinstance(given, bool) and 0 <= given < len(names):
        return {"index": given, "name": names[given]}
    return None


def operating_point(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's ``operating_point`` (``rule``, ``threshold``, ``chosen_on``, ``min_sensitivity``) or None."""
    op = (metrics or {}).get("operating_point")
    if not isinstance(op, dict) or not isinstance(op.get("threshold"), (int, float)):
        return None
    return {"chosen_on": "val", "rule": "?", **{k: v for k, v in op.items() if v is not None}}


def _output(task: Any, info: Any, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """``output``: defaults from the data set, overridden by ``task.output_spec()``; for a binary set the
    positive class and the run's operating threshold."""
    multilabel = task_type(info).startswith("multi-label")
    out: dict[str, Any] = {"name": OUTPUT_NAME, "activation": "sigmoid" if multilabel else "softmax",
                           "decision": "threshold each label" if multilabel else "argmax", "threshold": 0.5,
                           "num_classes": int(info.num_classes), "label_names": list(info.label_names)}
    out.update(task.output_spec() or {})
    out["name"] = OUTPUT_NAME  # the exporter names the graph output, whatever the task says
    pos = positive_class(info, metrics) if out["activation"] == "softmax" else None
    if pos is not None:
        out["positive_class"] = pos
        op = operating_point(metrics)
        threshold = float(op["threshold"]) if op else 0.5
        if op:
            out["operating_point"] = op
        out["threshold"] = threshold
        out["decision"] = (f"{pos['name']} when p({pos['name']}) >= {threshold:g}, else "
                           f"{info.label_names[1 - pos['index']]}"
                           + (f" (operating point: {op['rule']}, chosen on {op['chosen_on']})" if op else ""))
    else:
        out.pop("positive_class", None)
    return out


def _acquisition(info: Any, channels: int, size: tuple[int, int]) -> AcquisitionSpec:
    acq = AcquisitionSpec(modality=str(getattr(info, "modality", "") or ""),
                          dicom_modalities=[str(m).upper() for m in getattr(info, "dicom_modalities", []) or []],
                          color="gray" if channels == 1 else "rgb", height=size[0], width=size[1],
                          from_volumes=bool(getattr(info, "from_volumes", False)))
    acq.description = acquisition_description(acq)
    return acq


def build_preprocessing(task: Any, info: Any, channels: int, size: tuple[int, int], gray_source: bool,
                        int8: bool, train_raw: np.ndarray | None = None,
                        metrics: dict[str, Any] | None = None) -> Preprocessing:
    """The bundle's :class:`~mednas_nni.deploy.preprocessing.Preprocessing` for a model trained on ``info``.

    ``train_raw``: the raw ``uint8`` training images (at the model's size) for ``input_statistics``;
    ``metrics``: the run's ``metrics.json`` (positive class, operating point).

    Raises:
        ExportError: the task's ``output_spec()`` does not fit the schema (the message names the field).
    """
    from pydantic import ValidationError

    try:
        output = OutputSpec(**_output(task, info, metrics))
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
            output=output, acquisition=_acquisition(info, channels, size),
            input_statistics=training_statistics(train_raw) if train_raw is not None and len(train_raw) else None)
    except ValidationError as e:
        raise ExportError(f"data set {info.name!r} (DatasetInfo): preprocessing.json {_first(e)}") from None


def _first(e: Any) -> str:
    err = e.errors()[0]
    loc = ".".join(map(str, err["loc"]))
    msg = str(err["msg"]).removeprefix("Value error, ").replace("Input should be ", "expected ")
    return f"{loc}: {msg}, got {err.get('input')!r}" if loc else msg

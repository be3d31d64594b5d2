"""Files in, records out: what ``mednas predict`` does with a :class:`~mednas_nni.deploy.bundle.Bundle`.

Every record carries the input (``file``, ``index`` for a stack), the bundle's hash (``bundle_hash``), for DICOM
the file's ``modality``, ``sop_instance_uid`` and ``series_instance_uid``, the out-of-distribution verdict
(``ood``, ``ood_reasons``, ``image_statistics``: :mod:`~mednas_nni.deploy.ood`) and the conversions made
(``notes``). Classification records carry the class and the probabilities; a binary classifier whose bundle names
a positive class decides with the bundle's operating threshold on that class's probability (``positive_class``,
``positive_probability``, ``threshold``). Segmentation records carry the mask's size and per-class pixel counts,
and :func:`predict_files` writes each mask as an 8-bit PNG whose pixel values are class indices, at the size of
the source image (nearest-neighbour resize). With ``skip_errors`` an input that cannot be read or converted gives
a record with ``error`` (the one-line reason) instead of stopping the batch. Torch-free.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io import atomic_write_bytes  # standard library only: keeps this module torch-free
from .bundle import Bundle
from .image import InputImage
from .inputs import InputItem, expand_inputs
from .layout import PREPROCESSING_FILE
from .ood import ood_reasons
from .preprocessing import normalize, prepare_pixels
from .readers import read_images

__all__ = ["predict_images", "predict_files", "read_item", "mask_png_bytes"]

_logger = logging.getLogger(__name__)
_META_KEYS = ("modality", "sop_instance_uid", "series_instance_uid", "series_file", "series_slices")


@dataclass
class _Slot:
    """One record to be: an image ready for the model, or an error."""

    source: str
    index: int | None = None
    image: InputImage | None = None
    x: np.ndarray | None = None
    reasons: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def _base_record(bundle: Bundle, slot: _Slot) -> dict[str, Any]:
    rec: dict[str, Any] = {"file": slot.source}
    if slot.index is not None:
        rec["index"] = slot.index
    rec["bundle_hash"] = bundle.hash
    if slot.image is not None:
        rec.update({k: slot.image.meta[k] for k in _META_KEYS if k in slot.image.meta})
    return rec


def _finish(bundle: Bundle, rec: dict[str, Any], slot: _Slot) -> dict[str, Any]:
    checked = bundle.prep.acquisition is not None or bundle.prep.input_statistics is not None
    rec["ood"] = bool(slot.reasons) if checked else None
    rec["ood_reasons"] = list(slot.reasons)
    rec["image_statistics"] = slot.stats
    if slot.image is not None and slot.image.notes:
        rec["notes"] = list(slot.image.notes)
    return rec


def _classify(bundle: Bundle, p: np.ndarray, rec: dict[str, Any]) -> None:
    names, out = bundle.label_names, bundle.prep.output
    if out.activation == "sigmoid":  # multi-label: every label above the threshold
        rec["classes"] = [n for n, q in zip(names, p) if q >= out.threshold]
        rec["class"] = ", ".join(rec["classes"]) or "(none)"
    elif out.positive_class is not None and len(names) == 2:
        pos = out.positive_class.index
        op = out.operating_point
        threshold = op.threshold if op is not None else 0.5
        k = pos if float(p[pos]) >= threshold else 1 - pos
        rec["class_index"], rec["class"] = k, names[k]
        rec["positive_class"] = out.positive_class.name
        rec["positive_probability"] = round(float(p[pos]), 6)
        rec["threshold"] = threshold
        rec["decision"] = (f"{names[pos]} if p({names[pos]}) >= {threshold:g} "
                           + (f"(operating point: {op.rule}, chosen on {op.chosen_on})" if op is not None
                              else "(no operating point in the bundle: 0.5)"))
    else:
        k = int(np.argmax(p))
        rec["class_index"], rec["class"] = k, names[k]
    rec["probabilities"] = {n: round(float(q), 6) for n, q in zip(names, p)}


def _mask_record(bundle: Bundle, slot: _Slot, mask: np.ndarray, rec: dict[str, Any]) -> None:
    from PIL import Image

    names = bundle.label_names
    h, w = slot.image.pixels.shape[:2]
    if mask.shape != (h, w):
        mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST))
    counts = np.bincount(mask.reshape(-1), minlength=len(names))
    rec["mask_shape"] = [int(h), int(w)]
    rec["class_pixels"] = {names[i] if i < len(names) else str(i): int(c) for i, c in enumerate(counts)}
    rec["_mask"] = mask


def _prepare(bundle: Bundle, im: InputImage, skip_errors: bool) -> _Slot:
    slot = _Slot(im.source, im.index, image=im)
    try:
        a = prepare_pixels(im, bundle.prep, str(bundle.path / PREPROCESSING_FILE))
    except DataError as e:
        if not skip_errors:
            raise
        slot.error = str(e)
        return slot
    slot.reasons, slot.stats = ood_reasons(im, bundle.prep, a)
    slot.x = normalize(a, bundle.prep)
    return slot


def _records(bundle: Bundle, slots: list[_Slot]) -> list[dict[str, Any]]:
    ready = [s for s in slots if s.error is None]
    outputs: dict[int, np.ndarray] = {}
    if ready:
        logits = bundle.run(np.stack([s.x for s in ready]))
        values = bundle.masks(logits) if bundle.prep.segmentation else bundle.probabilities(logits)
        outputs = {id(s): v for s, v in zip(ready, values)}
    records = []
    for s in slots:
        rec = _base_record(bundle, s)
        if s.error is not None:
            rec["error"] = s.error
            if s.image is not None and s.image.notes:
                rec["notes"] = list(s.image.notes)
        elif bundle.prep.segmentation:
            _mask_record(bundle, s, outputs[id(s)], rec)
            _finish(bundle, rec, s)
        else:
            _classify(bundle, outputs[id(s)], rec)
            _finish(bundle, rec, s)
        records.append(rec)
    return records


def predict_images(bundle: Bundle, images: list[InputImage], skip_errors: bool = False) -> list[dict[str, Any]]:
    """Preprocess every image (all before the model runs), check it, predict; one JSON-able record per image.

    Segmentation records also hold the mask array under ``_mask`` (``(H, W)`` uint8 class indices at the source
    size), which :func:`predict_files` writes as a PNG and removes.

    Raises:
        DataError: an image cannot be converted (unless ``skip_errors``: then its record has ``error``).
    """
    return _records(bundle, [_prepare(bundle, im, skip_errors) for im in images])


def read_item(item: InputItem) -> list[InputImage]:
    """The images of one expanded input (a file, or a DICOM series' middle slice)."""
    if item.error is not None:
        raise DataError(item.error)
    if item.series is not None:
        from .dicom import read_dicom_series

        return [read_dicom_series(item.path, item.series)]
    return read_images(item.path)


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a class-index mask (pixel value = class index)."""
    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _mask_name(rec: dict[str, Any], used: set[str]) -> str:
    """``<stem>[_<index>]_mask.png``; a second file with the same stem (from another folder) gets ``-2``..."""
    stem = Path(rec["file"]).name.split(".")[0] + (f"_{rec['index']}" if "index" in rec else "")
    name, k = f"{stem}_mask.png", 1
    while name in used:
        k += 1
        name = f"{stem}-{k}_mask.png"
    used.add(name)
    return name


def predict_files(bundle: Bundle, inputs: list[str | os.PathLike], out: str | os.PathLike | None = None,
                  mask_dir: str | os.PathLike | None = None, skip_errors: bool = False) -> list[dict[str, Any]]:
    """Read every input (files, folders, DICOM series, globs: :mod:`~mednas_nni.deploy.inputs`), predict with
    ``bundle`` and (optionally) write ``out`` as JSON.

    Every input is read and checked before anything is written, so without ``skip_errors`` a bad input leaves
    no partial output. Segmentation bundles write one mask PNG per image into ``mask_dir`` (default:
    ``<out stem>_masks`` next to ``out``, else ``masks`` in the current folder) and put its path in the record
    under ``mask``.

    Raises:
        DataError: an input cannot be read or converted (the message names the file), unless ``skip_errors``:
            then that input's record has ``error`` and the others are predicted.
    """
    expanded = expand_inputs(list(inputs))
    if expanded.skipped:
        _logger.warning("skipped %d file(s) of unsupported types in the input folders (first: %s)",
                        len(expanded.skipped), expanded.skipped[0])
    slots: list[_Slot] = []
    for item in expanded.items:
        try:
            images = read_item(item)
        except DataError as e:
            if not skip_errors:
                raise
            slots.append(_Slot(str(item.path), error=str(e)))
            continue
        slots.extend(_prepare(bundle, im, skip_errors) for im in images)
    records = _records(bundle, slots)
    if bundle.prep.segmentation:
        mdir = Path(mask_dir) if mask_dir is not None else (
            Path(out).with_name(Path(out).stem + "_masks") if out is not None else Path("masks"))
        used: set[str] = set()
        for rec in records:
            if "_mask" in rec:
                name = _mask_name(rec, used)
                atomic_write_bytes(mdir / name, mask_png_bytes(rec.pop("_mask")))
                rec["mask"] = str(mdir / name)
    if out is not None:
        doc = {"bundle": str(bundle.path), "bundle_hash": bundle.hash, "model": bundle.model_file.name,
               "task": bundle.task, "task_type": bundle.task_type, "dataset": bundle.prep.dataset,
               "records": len(records), "errors": sum("error" in r for r in records),
               "out_of_distribution": sum(bool(r.get("ood")) for r in records),
               "skipped_files": [str(p) for p in expanded.skipped], "predictions": records}
        atomic_write_bytes(Path(out), (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return records

"""Files in, records out: what ``mednas predict`` does with a :class:`~mednas_nni.deploy.bundle.Bundle`.

Classification records carry the class and the probabilities; segmentation records carry the mask's size and
per-class pixel counts, and :func:`predict_files` writes each mask as an 8-bit PNG whose pixel values are class
indices, at the size of the source image (nearest-neighbour resize). Torch-free.
"""
from __future__ import annotations

import json
import os
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_bytes  # standard library only: keeps this module torch-free
from .bundle import Bundle
from .readers import InputImage, read_images

__all__ = ["predict_images", "predict_files", "mask_png_bytes"]


def _base_record(im: InputImage) -> dict[str, Any]:
    rec: dict[str, Any] = {"file": im.source}
    if im.index is not None:
        rec["index"] = im.index
    return rec


def _class_records(bundle: Bundle, images: list[InputImage], logits: np.ndarray) -> list[dict[str, Any]]:
    probs = bundle.probabilities(logits)
    names, out = bundle.label_names, bundle.prep.output
    records = []
    for im, p in zip(images, probs):
        rec = _base_record(im)
        if out.activation == "sigmoid":  # multi-label: every label above the threshold
            rec["classes"] = [n for n, q in zip(names, p) if q >= out.threshold]
            rec["class"] = ", ".join(rec["classes"]) or "(none)"
        else:
            k = int(np.argmax(p))
            rec["class_index"], rec["class"] = k, names[k]
        rec["probabilities"] = {n: round(float(q), 6) for n, q in zip(names, p)}
        if im.notes:
            rec["notes"] = list(im.notes)
        records.append(rec)
    return records


def _mask_records(bundle: Bundle, images: list[InputImage], logits: np.ndarray) -> list[dict[str, Any]]:
    from PIL import Image

    names = bundle.label_names
    records = []
    for im, mask in zip(images, bundle.masks(logits)):
        h, w = im.pixels.shape[:2]
        if mask.shape != (h, w):
            mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST))
        counts = np.bincount(mask.reshape(-1), minlength=len(names))
        rec = _base_record(im)
        rec["mask_shape"] = [int(h), int(w)]
        rec["class_pixels"] = {names[i] if i < len(names) else str(i): int(c) for i, c in enumerate(counts)}
        rec["_mask"] = mask
        if im.notes:
            rec["notes"] = list(im.notes)
        records.append(rec)
    return records


def predict_images(bundle: Bundle, images: list[InputImage]) -> list[dict[str, Any]]:
    """Preprocess every image (all before the model runs), predict, and return one JSON-able record per image.

    Segmentation records also hold the mask array under ``_mask`` (``(H, W)`` uint8 class indices at the source
    size), which :func:`predict_files` writes as a PNG and removes.
    """
    if not images:
        return []
    x = np.stack([bundle.preprocess(im) for im in images])
    logits = bundle.run(x)
    if bundle.prep.segmentation:
        return _mask_records(bundle, images, logits)
    return _class_records(bundle, images, logits)


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
                  mask_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Read every input, predict with ``bundle`` and (optionally) write ``out`` as JSON.

    Every file is read and checked before anything is written, so a bad input leaves no partial output.
    Segmentation bundles write one mask PNG per image into ``mask_dir`` (default: ``<out stem>_masks`` next to
    ``out``, else ``masks`` in the current folder) and put its path in the record under ``mask``.

    Raises:
        DataError: an input cannot be read or converted (the message names the file).
    """
    images: list[InputImage] = []
    for p in inputs:
        images.extend(read_images(p))
    records = predict_images(bundle, images)
    if bundle.prep.segmentation:
        mdir = Path(mask_dir) if mask_dir is not None else (
            Path(out).with_name(Path(out).stem + "_masks") if out is not None else Path("masks"))
        used: set[str] = set()
        for rec in records:
            name = _mask_name(rec, used)
            atomic_write_bytes(mdir / name, mask_png_bytes(rec.pop("_mask")))
            rec["mask"] = str(mdir / name)
    if out is not None:
        doc = {"bundle": str(bundle.path), "model": bundle.model_file.name, "task": bundle.task,
               "task_type": bundle.task_type, "dataset": bundle.prep.dataset, "predictions": records}
        atomic_write_bytes(Path(out), (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return records

"""Grad-CAM explanations of a trained classifier (MONAI ``monai.visualize.GradCAM``).

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017, doi:10.1109/ICCV.2017.74) weights the feature maps of one convolution layer by the spatially averaged
gradient of a class score and keeps the positive part.

Target layer: the **last convolution executed** in a forward pass (found with forward hooks on one real image,
so the order in which submodules were registered does not matter) among those whose output still has at least
2 x 2 positions. The last convolution is the paper's choice (the most class-specific features that still have a
spatial layout); skipping 1 x 1 outputs avoids a constant map when a network convolves after global pooling.
For the MSTF cell space this is the 1 x 1 fuse convolution of the last reduction cell (4 x 4 positions for a
28 x 28 input with 3 blocks), so the maps are coarse by construction.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ExportError
from .io import atomic_savefig, atomic_write_json

__all__ = ["last_conv_layer", "gradcam_maps", "write_gradcam"]

_logger = logging.getLogger(__name__)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def last_conv_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name (``model.named_modules()`` key) of the last convolution run on ``example`` with >= 2x2 output.

    Args:
        model: the network (put in eval mode by the caller).
        example: one input batch ``(N, C, H, W)``.

    Raises:
        ExportError: the network runs no convolution with a spatial output.
    """
    order: list[tuple[str, tuple[int, ...]]] = []
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, _CONV):
            hooks.append(mod.register_forward_hook(
                lambda _m, _i, out, name=name: order.append((name, tuple(out.shape[2:])))))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    spatial = [name for name, shape in order if shape and min(shape) >= 2 and int(np.prod(shape)) >= 4]
    if not spatial:
        raise ExportError(f"{type(model).__name__}: Grad-CAM needs a convolution layer with a spatial output; "
                          f"expected at least one, got {len(order)} convolution(s) without one")
    return spatial[-1]


def _minmax_per_sample(x: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1] with its max at 1 (a constant map becomes 0).

    MONAI's ``default_normalizer`` maps (min, max) to (1, 0), i.e. it *flips* the map, so the most important
    region would be drawn as the least important (Project-MONAI/tutorials issue #1796); we use this instead.
    """
    flat = x.detach().reshape(len(x), -1)
    lo = flat.min(1).values.view(-1, *([1] * (x.dim() - 1)))
    hi = flat.max(1).values.view(-1, *([1] * (x.dim() - 1)))
    span = hi - lo
    return torch.where(span > 0, (x.detach() - lo) / span.clamp_min(1e-12), torch.zeros_like(x))


def gradcam_maps(model: nn.Module, x: torch.Tensor, layer: str, class_idx: list[int]) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in [0, 1] of ``class_idx[i]`` for each image ``x[i]`` at ``layer``.

    Images with the same target class go through one batched call (valid in eval mode: no sample sees another's
    gradient); each map is normalised on its own.
    """
    from monai.visualize import GradCAM

    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=_minmax_per_sample)
    maps = np.zeros((len(x), *x.shape[2:]), dtype=np.float32)
    targets = np.asarray(class_idx, dtype=int)
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        with torch.enable_grad():
            m = cam(x=x[idx], class_idx=int(c))
        maps[idx] = m.detach().cpu().numpy()[:, 0]
    return maps


def _examples(y: np.ndarray, multilabel: bool, c: int, k: int) -> np.ndarray:
    hit = (y[:, c] == 1) if multilabel else (y.reshape(len(y), -1)[:, 0] == c)
    return np.flatnonzero(hit)[:k]


def _image(item: Any) -> torch.Tensor:
    """The image tensor of a data-set item (a dict sample; a pre-Core-v2 ``(x, y)`` pair also works)."""
    return torch.as_tensor(item["image"] if isinstance(item, dict) else item[0])


def _figure(raw: np.ndarray, heat: np.ndarray, title: str) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in threads and on servers

    fig = Figure(figsize=(6.4, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    gray = raw.ndim == 2
    ax1.imshow(raw, cmap="gray" if gray else None, interpolation="nearest")
    ax1.set_title("image", fontsize=9)
    ax2.imshow(raw, cmap="gray" if gray else None, interpolation="nearest")
    im = ax2.imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax2.set_title("Grad-CAM overlay", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_axis_off()
    fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_gradcam(model: nn.Module, dataset: Any, out_dir: str | Path, per_class: int = 2,
                  split: str = "test", positive: int | None = None, threshold: float = 0.5) -> dict[str, Any]:
    """Write Grad-CAM PNGs for ``per_class`` images of each class of ``split`` into ``out_dir``.

    Classification only (a segmentation data set raises :class:`ExportError`). Single-label tasks explain the
    **predicted** class (why the model said what it said); multi-label tasks
    explain each positive label in turn. Each PNG shows the image and the heat-map overlay; the title gives the
    true and the predicted class. ``out_dir/index.json`` lists the files.

    Args:
        model: the trained network.
        dataset: a dataset plugin (``info``, ``arrays(split)``, ``dataset(split)``).
        out_dir: folder to write into (created).
        per_class: images per class (the first ones of the split, so the choice is reproducible).
        split: the split to draw images from.
        positive, threshold: a binary classifier's positive class and operating threshold: the prediction is
            ``positive`` when its probability is at least ``threshold`` (what the bundle decides), else argmax.

    Returns:
        ``{"layer": ..., "files": [{"file", "index", "true", "predicted", "probability", "explained"}, ...]}``.

    Raises:
        ExportError: the data set is not a classification set, or the network has no spatial convolution.
    """
    info = dataset.info
    task_type = str(getattr(info, "task_type", None) or info.task)
    if info.task == "segmentation" or task_type == "segmentation":
        raise ExportError(f"{info.name}: Grad-CAM explains classifiers; expected a classification data set, got "
                          "a segmentation one")
    raw, y = dataset.arrays(split)
    tensors = dataset.dataset(split)
    multilabel = task_type.startswith("multi-label")
    model = model.eval()
    out_dir = Path(out_dir)
    first = _image(tensors[0])[None].float()
    layer = last_conv_layer(model, first)
    records = []
    for c, cname in enumerate(info.label_names):
        idx = _examples(y, multilabel, c, per_class)
        if len(idx) == 0:
            continue
        x = torch.stack([_image(tensors[int(i)]) for i in idx]).float()
        with torch.no_grad():
            logits = model(x)
        probs = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)).numpy()
        if multilabel:
            targets = [c] * len(idx)
        elif positive is not None and probs.shape[1] == 2:
            targets = [positive if p[positive] >= threshold else 1 - positive for p in probs]
        else:
            targets = [int(p.argmax()) for p in probs]
        maps = gradcam_maps(model, x, layer, targets)
        for j, i in enumerate(idx):
            if multilabel:
                true = ", ".join(n for n, t in zip(info.label_names, y[i]) if t == 1) or "(none)"
                pred = ", ".join(n for n, q in zip(info.label_names, probs[j]) if q >= 0.5) or "(none)"
            else:
                true, pred = info.label_names[int(y[i].reshape(-1)[0])], info.label_names[targets[j]]
            p = float(probs[j][targets[j]])
            rule = (f"decision: {info.label_names[positive]} if p({info.label_names[positive]}) >= {threshold:.2f} "
                    "(operating threshold)\n" if positive is not None and not multilabel else "")
            title = (f"{info.name} {split} #{int(i)} | true: {true} | predicted: {pred} (p={p:.2f})\n{rule}"
                     f"Grad-CAM of '{info.label_names[targets[j]]}' at {layer}")
            safe = "".join(ch if ch.isalnum() else "_" for ch in cname)[:40]
            name = f"class{c}_{safe}_{split}{int(i)}.png"
            fig = _figure(raw[i], maps[j], title)
            atomic_savefig(fig, out_dir / name, dpi=120)
            records.append({"file": name, "index": int(i), "true": true, "predicted": pred, "probability": p,
                            "explained": info.label_names[targets[j]]})
    report = {"method": "Grad-CAM (monai.visualize.GradCAM)", "layer": layer, "split": split, "files": records}
    atomic_write_json(out_dir / "index.json", report)
    _logger.info("wrote %d Grad-CAM images to %s (layer %s)", len(records), out_dir, layer)
    return report

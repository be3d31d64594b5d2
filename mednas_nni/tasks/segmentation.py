"""The ``segmentation`` task: 2-D semantic segmentation into class-index masks (binary or multi-class).

* **Network output.** ``(B, K, H, W)`` logits with ``K = info.num_classes`` (background included; binary data has
  ``K = 2``), softmax over channels; the predicted mask is the argmax (class index per pixel).
* **Loss.** MONAI ``DiceCELoss(to_onehot_y=True, softmax=True)`` against ``(B, 1, H, W)`` long masks (Dice +
  cross-entropy, as nnU-Net: Isensee et al., *Nat. Methods* 18:203, 2021, doi:10.1038/s41592-020-01008-z);
  ``params.loss`` selects ``dice`` or ``ce`` alone. Class weights come from ``dataset.loss_weights()``.
* **Metrics.** :mod:`mednas_nni.tasks.metrics_segmentation` (MONAI Dice and IoU per foreground class and their
  mean, 95th-percentile Hausdorff distance, pixel accuracy). ``hd95`` is reported but not offered as ``select_by``
  (lower is better; selection keys are higher-better).
* **Baseline.** The all-background mask (Dice 0 where a class is present, pixel accuracy = background fraction).
* **Winner's report** (:meth:`SegmentationTask.detailed_metrics`): per-class Dice/IoU/HD95, bootstrap 95 % CIs over
  images and the per-image Dice of the val and test splits.
* **Figures.** ``overlays.png``: image / ground truth / prediction for a few validation images;
  ``dice_per_image.png``: the distribution of the per-image Dice on the test split.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ..contracts import PluginParams, Task
from .metrics_segmentation import SegmentationMeter, class_keys, segmentation_scores
from .training import unpack_batch

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.data import DataLoader

    from ..contracts import DatasetInfo, DatasetPlugin

__all__ = ["SegmentationTask", "SegmentationParams", "OVERLAYS_FILE", "DICE_PER_IMAGE_FILE"]

_logger = logging.getLogger(__name__)

OVERLAYS_FILE = "overlays.png"
DICE_PER_IMAGE_FILE = "dice_per_image.png"


class SegmentationParams(PluginParams):
    """Config ``task.params`` of the ``segmentation`` task."""

    loss: Literal["dice_ce", "dice", "ce"] = Field(
        "dice_ce", description="MONAI DiceCELoss (default), DiceLoss, or cross-entropy alone (DiceCELoss with "
                               "lambda_dice=0).")
    overlay_images: int = Field(4, ge=1, le=16, description="Validation images drawn in overlays.png.")
    ci_n_boot: int = Field(1000, ge=0, le=100_000, description="Bootstrap resamples (over images) of the 95 % CIs "
                                                                "of the winner's Dice/IoU/HD95 (0: none).")


class SegmentationTask(Task):
    """Semantic segmentation into ``info.num_classes`` classes (background = 0); see the module doc.

    :attr:`metric_names` (the possible ``select_by`` keys, with ``val_``) are ``dice``, ``iou``, ``pixel_acc`` and
    ``dice_<class>`` for every foreground class (e.g. ``dice_nucleus``); ``hd95`` is reported but cannot select.
    """

    name = "segmentation"
    Params = SegmentationParams
    metric_names = ("dice", "iou", "pixel_acc")
    default_select_by = "val_dice"

    def __init__(self, info: DatasetInfo, **params: Any):
        super().__init__(info, **params)
        from ..errors import ConfigError

        self.num_classes = int(info.num_classes)
        if self.num_classes < 2:
            raise ConfigError(f"data {info.name}: segmentation expects num_classes >= 2 (background included), "
                              f"got {self.num_classes}")
        names = [str(n) for n in info.label_names]
        self.label_names = ["background"] + names if len(names) == self.num_classes - 1 else names
        if len(self.label_names) != self.num_classes:
            self.label_names = ["background"] + [f"class{c}" for c in range(1, self.num_classes)]
        self.class_keys = class_keys(self.label_names, self.num_classes)
        # any reported higher-is-better metric can select, including one foreground class's Dice
        self.metric_names = (*type(self).metric_names, *(f"dice_{k}" for k in self.class_keys))

    # ------------------------------------------------------------------ the pieces
    def loss(self, dataset: DatasetPlugin | None = None) -> nn.Module:
        """MONAI ``DiceCELoss`` / ``DiceLoss`` (``to_onehot_y=True, softmax=True``), per ``params.loss``."""
        from monai.losses import DiceCELoss, DiceLoss

        w = dataset.loss_weights() if dataset is not None else None
        w = None if w is None else torch.as_tensor(w, dtype=torch.float32)
        if self.params.loss == "dice":
            return DiceLoss(to_onehot_y=True, softmax=True, weight=w)
        return DiceCELoss(to_onehot_y=True, softmax=True, weight=w,
                          lambda_dice=0.0 if self.params.loss == "ce" else 1.0)

    def target(self, label: torch.Tensor) -> torch.Tensor:
        """Long class-index masks ``(B, 1, H, W)`` (a ``(B, H, W)`` batch gets its channel axis)."""
        y = label.long()
        return y.unsqueeze(1) if y.ndim == 3 else y

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: str = "cpu",
                 max_batches: int | None = None) -> dict[str, float]:
        """Dice / IoU (mean and ``dice_<class>``), ``hd95`` and ``pixel_acc`` of the argmax masks (eval mode)."""
        model.eval()
        meter = SegmentationMeter(self.num_classes, self.label_names)
        for b, batch in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            x, y = unpack_batch(batch)
            logits = model(x.to(device).float())
            meter.update(logits.argmax(1, keepdim=True).cpu(), self.target(torch.as_tensor(y)).cpu())
        return meter.compute()

    @torch.no_grad()
    def _meter(self, model: nn.Module, dataset: DatasetPlugin, split: str, device: str) -> SegmentationMeter:
        from torch.utils.data import DataLoader

        model.eval()
        meter = SegmentationMeter(self.num_classes, self.label_names)
        for batch in DataLoader(dataset.dataset(split), batch_size=64):
            x, y = unpack_batch(batch)
            meter.update(model(x.to(device).float()).argmax(1, keepdim=True).cpu(),
                         self.target(torch.as_tensor(y)).cpu())
        return meter

    def detailed_metrics(self, model: nn.Module, dataset: DatasetPlugin, device: str = "cpu",
                         seed: int = 0) -> dict[str, Any]:
        """Per-class Dice/IoU/HD95, bootstrap CIs over images and the per-image Dice of the val and test splits
        (:meth:`SegmentationMeter.details`)."""
        return {split: self._meter(model, dataset, split, device).details(int(self.params.ci_n_boot), seed + i)
                for i, split in enumerate(("val", "test"))}

    def baseline(self, dataset: DatasetPlugin, split: str = "test") -> dict[str, Any]:
        """The metrics of an all-background prediction on ``split`` (masks as the model sees them)."""
        meter = SegmentationMeter(self.num_classes, self.label_names)
        ds = dataset.dataset(split)
        for i in range(len(ds)):
            y = self.target(torch.as_tensor(unpack_batch(ds[i])[1])[None])
            meter.update(torch.zeros_like(y), y)
        return {**meter.compute(), "prediction": "all background"}

    def select_key(self, select_by: str | None) -> str:
        from ..errors import ConfigError

        if select_by == "val_hd95":
            raise ConfigError("evaluator.select_by: expected a higher-is-better metric of the segmentation task ("
                              f"{', '.join('val_' + m for m in self.metric_names)}), got 'val_hd95' (lower is "
                              "better; it is reported but cannot select)")
        return super().select_key(select_by)

    def output_spec(self) -> dict[str, Any]:
        """``(N, K, H, W)`` logits; softmax over channels, argmax = class index per pixel."""
        return {"name": "logits", "kind": "mask", "activation": "softmax", "decision": "argmax",
                "mask": "argmax over channels = class index", "num_classes": self.num_classes,
                "label_names": list(self.label_names)}

    def card_sentence(self) -> str:
        s, c = self.info.image_size, self.info.in_channels
        colour = "gray" if c == 1 else "RGB" if c == 3 else f"{c}-channel"
        return (f"It segments a {s}x{s} {colour} image into {self.num_classes} classes "
                f"({', '.join(self.label_names)}), one class index per pixel.")

    # ------------------------------------------------------------------ figures
    @torch.no_grad()
    def write_figures(self, model: nn.Module, dataset: DatasetPlugin, run_dir: Any, device: str = "cpu") -> list[Any]:
        """``run_dir/overlays.png`` (``run_dir``: a :class:`~mednas_nni.io.RunDir` or a folder): image / ground
        truth / prediction (with its mean Dice) for the first ``params.overlay_images`` validation images, and
        ``run_dir/dice_per_image.png``. Returns the paths."""
        from ..io import atomic_savefig

        ds = dataset.dataset("val")
        n = min(int(self.params.overlay_images), len(ds))
        if n == 0:
            _logger.warning("no validation images; %s not written", OVERLAYS_FILE)
            return []
        xs, ys = zip(*(unpack_batch(ds[i]) for i in range(n)))
        x = torch.stack([torch.as_tensor(v).float() for v in xs])
        y = self.target(torch.stack([torch.as_tensor(v) for v in ys]))
        model.eval()
        pred = model(x.to(device)).argmax(1, keepdim=True).cpu()
        dice = segmentation_scores(pred, y, self.num_classes)["dice"]
        fig = self._overlay_figure(x.numpy(), y[:, 0].numpy(), pred[:, 0].numpy(), dice.numpy())
        folder = Path(getattr(run_dir, "path", run_dir))    # a RunDir (what experiment.py passes) or a path
        path = atomic_savefig(fig, folder / OVERLAYS_FILE, dpi=110)
        test = self._meter(model, dataset, "test", device).details(n_boot=0)["per_image_dice"]
        return [path, atomic_savefig(self._dice_figure(test), folder / DICE_PER_IMAGE_FILE, dpi=110)]

    def _dice_figure(self, dice: list[float | None]) -> Any:
        from matplotlib.figure import Figure

        v = np.asarray([d for d in dice if d is not None], dtype=float)
        fig = Figure(figsize=(6.0, 3.2), layout="constrained")
        ax = fig.subplots()
        from matplotlib.ticker import MaxNLocator

        ax.hist(v, bins=np.linspace(0, 1, 21), color="tab:blue", alpha=0.8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if len(v):
            ax.axvline(float(np.median(v)), color="k", ls="--", lw=1.2, label=f"median {np.median(v):.3f}")
            ax.legend(fontsize=8, loc="upper left")
        ax.set(xlim=(0, 1), xlabel="Dice of one image (mean over its foreground classes)", ylabel="images",
               title=f"{self.info.name}: per-image Dice on the test split (n={len(v)}, "
                     f"{len(dice) - len(v)} without foreground)")
        ax.title.set_fontsize(9)
        return fig

    def _display(self, x: np.ndarray) -> np.ndarray:
        # undo NormalizeIntensity: x * std + mean, per channel, into [0, 1]
        c = x.shape[0]
        mean = np.resize(np.asarray(self.info.mean, dtype=np.float32), c)[:, None, None]
        std = np.resize(np.asarray(self.info.std, dtype=np.float32), c)[:, None, None]
        img = np.clip(x * std + mean, 0.0, 1.0)
        return img[0] if c != 3 else img.transpose(1, 2, 0)

    def _overlay_figure(self, x: np.ndarray, truth: np.ndarray, pred: np.ndarray, dice: np.ndarray) -> Any:
        # Figure without pyplot: no global state, no GUI backend (renders with Agg).
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        k = self.num_classes
        palette = [(0, 0, 0, 0), (0.95, 0.15, 0.15, 1), (0.1, 0.55, 1.0, 1), (1.0, 0.85, 0.1, 1),
                   (0.2, 0.85, 0.3, 1), (0.8, 0.3, 0.9, 1), (1.0, 0.55, 0.0, 1), (0.1, 0.9, 0.9, 1)]
        colours = [palette[0]] + [palette[1 + (c - 1) % (len(palette) - 1)] for c in range(1, k)]
        cmap = ListedColormap(colours)
        n = len(x)
        fig = Figure(figsize=(7.5, 2.5 * n + 0.6), layout="constrained")
        axes = fig.subplots(n, 3, squeeze=False)
        for i in range(n):
            img = self._display(x[i])
            grey = img.ndim == 2
            score = np.nanmean(dice[i]) if np.isfinite(dice[i]).any() else float("nan")
            titles = (f"validation image {i + 1}", "ground truth",
                      f"prediction (Dice {score:.2f})" if np.isfinite(score) else "prediction")
            for j, (ax, title) in enumerate(zip(axes[i], titles)):
                ax.imshow(img, cmap="gray" if grey else None, vmin=0.0, vmax=1.0, interpolation="nearest")
                if j:
                    mask = truth[i] if j == 1 else pred[i]
                    ax.imshow(np.ma.masked_equal(mask, 0), cmap=cmap, vmin=0, vmax=k - 1, alpha=0.5,
                              interpolation="nearest")
                ax.set_title(title, fontsize=9)
                ax.set_axis_off()
        handles = [Patch(color=colours[c], alpha=0.6, label=self.label_names[c]) for c in range(1, k)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8,
                   frameon=False)
        fig.suptitle(f"{self.info.name}: image / ground truth / prediction", fontsize=10)
        return fig

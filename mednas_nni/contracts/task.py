"""The task contract: what a model is trained for, how it is scored and what "good" means.

A task owns the loss, the metrics, the model-selection key (``select_by``: ``val_<metric>`` for any metric that
:meth:`Task.evaluate` reports), the trivial baseline, the short training that multi-trial strategies run per
architecture, the finalists' retraining, the Lightning module of one-shot strategies, and what a deployed model's
output means (``preprocessing.json`` ``output`` and the model card sentence). Nothing else in the core knows the
task kind.
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .params import NoParams, PluginParams

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from ..config import EvaluatorConfig
    from .dataset import DatasetInfo, DatasetPlugin

__all__ = ["Task"]

#: ``on_epoch(record)``: called after every epoch with ``{"epoch", "train_loss", "val_<metric>"...}``
EpochCallback = Callable[[dict[str, float]], None]


class Task(abc.ABC):
    """A learning task (classification, segmentation, ...), built as ``Cls(info, **params)``.

    Subclasses implement :meth:`loss`, :meth:`target`, :meth:`evaluate`, :meth:`baseline`, :meth:`output_spec`
    and :meth:`card_sentence`; the training procedures (:meth:`fit`, :meth:`train_curve`) and
    :meth:`lightning_module` have working defaults built from those.
    """

    name: ClassVar[str]
    Params: ClassVar[type[PluginParams]] = NoParams
    #: metric names :meth:`evaluate` reports (``select_by`` is ``val_`` + one of them)
    metric_names: ClassVar[tuple[str, ...]] = ()
    #: the selection key used when ``evaluator.select_by`` is not set
    default_select_by: ClassVar[str] = ""

    def __init__(self, info: DatasetInfo, **params: Any):
        self.info = info
        self.params = self.Params(**params)

    # ------------------------------------------------------------------ the pieces
    @abc.abstractmethod
    def loss(self, dataset: DatasetPlugin | None = None) -> nn.Module:
        """The training criterion ``loss(logits, target(label))`` (class weights may come from ``dataset``)."""

    @abc.abstractmethod
    def target(self, label: torch.Tensor) -> torch.Tensor:
        """A batch of ``sample["label"]`` in the form :meth:`loss` expects."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, loader: DataLoader, device: str = "cpu",
                 max_batches: int | None = None) -> dict[str, float]:
        """Metrics of ``model`` on a loader of dict samples (names from :attr:`metric_names`)."""

    @abc.abstractmethod
    def baseline(self, dataset: DatasetPlugin, split: str = "test") -> dict[str, Any]:
        """Metrics of the trivial predictor (majority class; all-background mask) on ``split``."""

    @abc.abstractmethod
    def output_spec(self) -> dict[str, Any]:
        """The ``output`` part of ``preprocessing.json`` (activation, threshold, label names, what the output is)."""

    @abc.abstractmethod
    def card_sentence(self) -> str:
        """One sentence for the model card: what the model does (``It classifies ...`` / ``It segments ...``)."""

    # ------------------------------------------------------------------ selection
    def select_key(self, select_by: str | None) -> str:
        """The metric name behind ``select_by`` (``None``: :attr:`default_select_by`); a one-line error otherwise."""
        from ..errors import ConfigError, did_you_mean

        key = select_by or self.default_select_by
        names = [f"val_{m}" for m in self.metric_names]
        if key not in names:
            raise ConfigError(f"evaluator.select_by: expected one of {', '.join(names)} for the {self.name} task"
                              f"{did_you_mean(key, names)}, got {key!r}")
        return key.removeprefix("val_")

    # ------------------------------------------------------------------ procedures (defaults in mednas_nni.tasks)
    def fit(self, model: nn.Module, dataset: DatasetPlugin, recipe: EvaluatorConfig, *, device: str = "cpu",
            seed: int = 0, on_epoch: EpochCallback | None = None, progress: bool = False,
            desc: str = "train") -> dict[str, Any]:
        """Retrain a finalist with ``recipe``: ``{"history", "best_epoch", "best_state", "val"}`` (best by
        ``recipe.select_by``)."""
        from ..tasks.training import fit

        return fit(self, model, dataset, recipe, device=device, seed=seed, on_epoch=on_epoch, progress=progress,
                   desc=desc)

    def train_curve(self, model: nn.Module, dataset: DatasetPlugin, *, epochs: int, batch_size: int = 64,
                    lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0, device: str = "cpu",
                    augment: bool = False, max_batches_per_epoch: int | None = None,
                    on_epoch: EpochCallback | None = None) -> list[dict[str, float]]:
        """The short training of one architecture in a multi-trial search: the per-epoch history."""
        from ..tasks.training import train_curve

        return train_curve(self, model, dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                           weight_decay=weight_decay, seed=seed, device=device, augment=augment,
                           max_batches_per_epoch=max_batches_per_epoch, on_epoch=on_epoch)

    def lightning_module(self, **kwargs: Any) -> Any:
        """The ``nni.nas.evaluator.pytorch.LightningModule`` one-shot strategies train (loss and metrics of this
        task); see :mod:`mednas_nni.tasks.lightning`."""
        from ..tasks.lightning import TaskLightningModule

        return TaskLightningModule(self, **kwargs)

    def detailed_metrics(self, model: nn.Module, dataset: DatasetPlugin, device: str = "cpu",
                         seed: int = 0) -> dict[str, Any]:
        """Metrics of the winner beyond :meth:`evaluate`, merged into ``metrics.json``: ``{"val": {...}, "test":
        {...}}`` (keys added to each split) plus top-level keys (classification: ``positive_class``,
        ``operating_point``); confidence intervals seeded by ``seed``. Default: none."""
        return {}

    def write_figures(self, model: nn.Module, dataset: DatasetPlugin, run_dir: Any, device: str = "cpu") -> list[Any]:
        """Pictures of the winner on validation images written into ``run_dir`` (segmentation: ``overlays.png``);
        returns the paths written. Default: none."""
        return []

    def predict(self, model: nn.Module, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw network outputs (logits) for float images ``x`` (N, C, H, W), in eval mode, as numpy."""
        import numpy as np
        import torch

        model.eval()
        dev = next(model.parameters()).device
        with torch.no_grad():
            out = [model(torch.as_tensor(x[i:i + batch_size], device=dev)).cpu().numpy()
                   for i in range(0, len(x), batch_size)]
        return np.concatenate(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data={self.info.name!r})"

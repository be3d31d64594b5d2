"""The contracts every plugin follows, one per kind.

Each plugin is a class with a ``name`` (== its entry-point name) and a pydantic ``Params`` model
(``extra='forbid'``) that validates the ``params`` of its config section. The class is built as
``Cls(**params.model_dump())`` plus the context arguments documented for its kind.

* **datasets** subclass :class:`DatasetPlugin`.
* **search spaces** are NNI ``ModelSpace`` subclasses built as
  ``Cls(in_channels=..., num_classes=..., **params)`` (MONAI argument vocabulary).
* **strategies** are NNI ``Strategy`` subclasses that also implement :class:`SearchDriver`
  (how the core runs them end to end).
* **exporters** implement :class:`ExporterPlugin`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch.utils.data

    from .experiment import RunContext

__all__ = ["PluginParams", "DatasetInfo", "DatasetPlugin", "SearchDriver", "ExporterPlugin", "NoParams"]


class PluginParams(BaseModel):
    """Base of every plugin's ``Params``: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class NoParams(PluginParams):
    """For plugins without parameters."""


@dataclass
class DatasetInfo:
    """What the rest of the pipeline needs to know about a data set.

    ``task`` uses the MedMNIST vocabulary: ``binary-class``, ``multi-class``, ``multi-label, binary-class``,
    ``ordinal-regression`` (classification) or ``segmentation``.
    """

    name: str
    task: str
    num_classes: int
    in_channels: int
    image_size: int
    label_names: list[str]
    licence: str = ""
    citation: str = ""
    split_sizes: dict[str, int] = field(default_factory=dict)
    # Intensity normalisation applied after scaling uint8 to [0, 1]: (x - mean) / std, per channel.
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    extra: dict[str, Any] = field(default_factory=dict)


class DatasetPlugin(abc.ABC):
    """A data set: raw arrays per split plus MONAI transform pipelines.

    ``root`` must be accepted so the set works offline; downloading is off unless asked for.
    Datasets return ``(image, label)`` with image a float tensor ``(C, H, W)`` normalised as in ``info``
    and label a 1-D long tensor (MedMNIST shape).
    """

    name: ClassVar[str]
    Params: ClassVar[type[PluginParams]]

    @property
    @abc.abstractmethod
    def info(self) -> DatasetInfo: ...

    @abc.abstractmethod
    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``uint8`` images ``(N, H, W)`` or ``(N, H, W, C)`` and labels ``(N, k)`` for a split."""

    @abc.abstractmethod
    def dataset(self, split: str, augment: bool = False) -> torch.utils.data.Dataset:
        """A torch/MONAI dataset for ``train``, ``val`` or ``test``."""


class SearchDriver(abc.ABC):
    """What the core needs from a strategy plugin to run it end to end (``mednas search``)."""

    name: ClassVar[str]
    Params: ClassVar[type[PluginParams]]

    @abc.abstractmethod
    def run_search(self, ctx: RunContext) -> list[dict[str, Any]]:
        """Run (or resume) the search inside ``ctx.run_dir``; return the finalists' architecture dicts."""


class ExporterPlugin(abc.ABC):
    """Writes a deployable artefact for a trained model."""

    name: ClassVar[str]
    Params: ClassVar[type[PluginParams]]

    @abc.abstractmethod
    def export(self, run_dir: Any, out_dir: Any) -> dict[str, Any]:
        """Export the run's best model into ``out_dir``; return a report dict."""

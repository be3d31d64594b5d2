"""The data-set contract: raw arrays per split plus MONAI dictionary-transform pipelines."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .params import PluginParams

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch.utils.data

__all__ = ["DatasetInfo", "DatasetPlugin"]


@dataclass
class DatasetInfo:
    """What the rest of the pipeline needs to know about a data set.

    ``task`` names the task plugin that fits the data (``classification`` or ``segmentation``); ``task_type``
    refines it in the MedMNIST vocabulary (``binary-class``, ``multi-class``, ``multi-label, binary-class``,
    ``ordinal-regression``) or is ``segmentation``. ``num_classes`` counts classes *including* background for
    segmentation; ``out_channels`` is what a network must output (MONAI vocabulary).
    """

    name: str
    task_type: str
    num_classes: int
    in_channels: int
    image_size: int
    label_names: list[str]
    task: str = "classification"
    spatial_dims: int = 2
    licence: str = ""
    citation: str = ""
    split_sizes: dict[str, int] = field(default_factory=dict)
    # Intensity normalisation applied after scaling to [0, 1]: (x - mean) / std, per channel.
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    extra: dict[str, Any] = field(default_factory=dict)
    # What the images are, so that a deployed model can flag inputs from elsewhere (preprocessing.json
    # ``acquisition``): ``modality`` in words ("ultrasound", "X-ray", "microscopy"; "" = unknown, not checked),
    # ``dicom_modalities`` the DICOM Modality (0008,0060) codes of such images (["US"]; [] = not checked), and
    # ``from_volumes`` whether the 2-D images are slices of 3-D volumes (then a volume input is expected).
    modality: str = ""
    dicom_modalities: list[str] = field(default_factory=list)
    from_volumes: bool = False
    #: binary classification: the index of the class that counts as positive (the finding: BreastMNIST malignant,
    #: MHSMA abnormal); None = label 1. ``task.params.positive_class`` overrides it.
    positive_class: int | None = None

    @property
    def out_channels(self) -> int:
        return self.num_classes


class DatasetPlugin(abc.ABC):
    """A data set: raw arrays per split plus MONAI dictionary transforms.

    ``root`` must be accepted so the set works offline; downloading is off unless asked for. ``dataset(split)``
    returns dict samples ``{"image": float tensor (C, H, W) normalised as in info, "label": tensor}``: for
    classification the label is a 1-D long tensor (MedMNIST shape ``(k,)``), for segmentation a long class-index
    mask ``(1, H, W)``. ``default_task`` is the task plugin used when the config names none.
    """

    name: ClassVar[str]
    Params: ClassVar[type[PluginParams]]
    default_task: ClassVar[str] = "classification"

    @property
    @abc.abstractmethod
    def info(self) -> DatasetInfo: ...

    @abc.abstractmethod
    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``uint8`` images ``(N, H, W)`` or ``(N, H, W, C)`` and labels (``(N, k)``, or masks ``(N, H, W)``)."""

    @abc.abstractmethod
    def dataset(self, split: str, augment: bool = False) -> torch.utils.data.Dataset:
        """A torch/MONAI dataset of dict samples for ``train``, ``val`` or ``test``."""

    def loss_weights(self) -> Any:
        """Per-class loss weights (a float tensor) when the data set asks for a weighted loss, else None."""
        return None

"""One 2-D input image of ``mednas predict``, as a reader gives it (numpy only)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InputImage"]


@dataclass
class InputImage:
    """One 2-D image read from a file: ``pixels`` is ``(H, W)`` or ``(H, W, C)`` in its source dtype.

    ``notes`` lists every conversion made (readers and preprocessing append to it); ``meta`` holds what the file
    says about itself (DICOM: ``modality``, ``sop_instance_uid``, ``series_instance_uid``); ``value_range`` is the
    source range that maps onto 0..255 (a DICOM VOI window; None = min-max scaling of non-8-bit pixels);
    ``from_volume`` is true for a slice of a 3-D volume or series.
    """

    source: str
    index: int | None
    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    value_range: tuple[float, float] | None = None
    from_volume: bool = False

    @property
    def name(self) -> str:
        return self.source if self.index is None else f"{self.source}[{self.index}]"

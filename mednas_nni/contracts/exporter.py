"""The exporter contract: a trained model in memory in, a deployable artefact out."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .params import PluginParams

__all__ = ["ExporterPlugin", "TrainedModel"]


@dataclass
class TrainedModel:
    """Everything an exporter needs, already loaded: the frozen best network with its weights (eval mode), the
    task, the data set (``dataset.info``), the architecture, the resolved config and the run's metrics."""

    model: Any
    task: Any
    dataset: Any
    sample: dict[str, Any]
    cfg: Any
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    space: Any = None

    @property
    def info(self) -> Any:
        return self.dataset.info


class ExporterPlugin(abc.ABC):
    """Writes a deployable artefact for a trained model."""

    name: ClassVar[str]
    Params: ClassVar[type[PluginParams]]

    @abc.abstractmethod
    def export(self, trained: TrainedModel, out_dir: Any) -> dict[str, Any]:
        """Export ``trained`` into ``out_dir``; return a report dict."""

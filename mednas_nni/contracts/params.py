"""Base of every plugin's ``Params`` model."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["PluginParams", "NoParams"]


class PluginParams(BaseModel):
    """Base of every plugin's ``Params``: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class NoParams(PluginParams):
    """For plugins without parameters."""

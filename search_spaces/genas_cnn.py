"""The GeNAS plain-CNN chromosome as an NNI 3.0 ``ModelSpace``.

Method: Miahi, Mirroshandel & Nasr, "Genetic Neural Architecture Search for automatic assessment of human sperm
images", arXiv:1909.09432 (GeNAS). The abstract fixes a *constrained space of plain CNNs* (no skips, no branches)
searched by a genetic algorithm; the exact gene list is not available to us, so everything below the "chromosome"
level is **our choice** ("GeNAS (mednas reading)"): gene values, the conv/BN/ReLU block, ``valid`` padding by
default, 2x2 pooling genes and a head dropout gene. Every such choice is a constructor parameter.

Chromosome (labels are stable public API; architecture JSON keys on them)
------------------------------------------------------------------------
* ``depth``                -- number of conv layers, ``min_depth .. max_depth``
* ``layer{i}/filters``     -- output channels of conv layer ``i`` (0-based, ``i < max_depth``)
* ``layer{i}/kernel``      -- square kernel size
* ``layer{i}/stride``      -- conv stride
* ``layer{i}/pool``        -- ``'none'``, ``'max'`` or ``'avg'`` (2x2, stride 2, after the conv block)
* ``head/dropout``         -- dropout before the linear classifier

Only layers ``i < depth`` exist in the network. Genes of layers ``>= depth`` are *inactive*: they do not change the
network, so :meth:`GeNASCNNSpace.canonicalize` resets them to their first value and equal networks get equal
architecture dicts (and equal hashes). Every mutable of ``simplify()``
is an ``nni.mutable.Categorical``.

Network (for a sample)
----------------------
``depth`` x [Conv2d(k, stride s, padding 0 ('valid') or k//2 ('same'), no bias) -> BatchNorm2d -> ReLU ->
optional 2x2 pooling], then the global average over H, W (``x.mean((2, 3))``), dropout and a linear layer to
``out_channels`` logits (one per class). With ``valid`` padding a conv maps H to ``floor((H - k) / s) + 1`` and a
pooling gene maps H to ``floor(H / 2)``; deep or strided chromosomes therefore shrink the image to nothing. Such
architectures are *invalid*: :meth:`GeNASCNNSpace.is_valid` (for the constructor's ``image_size``) is
``(False, reason)`` exactly when some size in :meth:`~GeNASCNNSpace.spatial_sizes` is ``<= 0`` (then the forward
pass fails), and strategies prune them before any training.

Genetic operators
-----------------
:meth:`GeNASCNNSpace.crossover` (one-point, over the layer list) and :meth:`GeNASCNNSpace.mutate` (per active gene)
are :func:`~.genas_operators.one_point_crossover` and :func:`~.genas_operators.mutate` on this space's labels.

Freezing
--------
``space.freeze(sample)`` validates the sample (``nni.mutable.SampleValidationError`` on a bad label or value) and
builds a fresh :class:`GeNASCNN`: a plain ``nn.Module`` (ONNX-exportable) with no NNI mutable inside. NNI's
"simplified" execution format re-creates the space under ``model_context(sample)``; that also returns a
:class:`GeNASCNN` (through :meth:`GeNASCNNSpace.create_fixed_module`).
"""
import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import nni
import torch
from nni.mutable import label_scope
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import current_model, model_context
from pydantic import Field, field_validator, model_validator
from torch import nn

from mednas_nni.contracts import PluginParams, SearchSpace

from . import genas_operators
from ._common import check_image_size, check_spatial_dims, resolve_out_channels
from .genas_chromosome import (POOL_TYPES, _layers, arch_labels, canonicalize, describe_arch, describe_short,
                               layer_labels, make_label_values, spatial_sizes)

__all__ = ["GeNASCNNParams", "GeNASCNNSpace", "GeNASCNN", "layer_labels", "arch_labels", "spatial_sizes",
           "canonicalize", "make_label_values", "describe_arch", "describe_short", "POOL_TYPES"]

_logger = logging.getLogger(__name__)


class GeNASCNNParams(PluginParams):
    """Config ``params`` of the ``genas_cnn`` space (``in_channels``/``out_channels`` come from the data set).

    Every default is ours (the paper's gene values are not available).
    """

    max_depth: int = Field(6, ge=1, le=32, description="Largest number of conv layers.")
    min_depth: int = Field(2, ge=1, description="Smallest number of conv layers.")
    filters: List[int] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=1)
    kernels: List[int] = Field(default_factory=lambda: [3, 5, 7, 1], min_length=1)
    strides: List[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    pools: List[str] = Field(default_factory=lambda: ["none", "max"], min_length=1)
    dropouts: List[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5], min_length=1)
    padding: str = Field("valid", description="'valid' (no padding: sizes can reach 0) or 'same' (k//2, odd k).")

    @field_validator("filters", "kernels", "strides")
    @classmethod
    def _positive(cls, v: List[int]) -> List[int]:
        if any(int(x) < 1 for x in v) or len(set(v)) != len(v):
            raise ValueError(f"distinct integers >= 1, got {v}")
        return v

    @field_validator("pools")
    @classmethod
    def _pools(cls, v: List[str]) -> List[str]:
        bad = [p for p in v if p not in POOL_TYPES]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"distinct values among {', '.join(POOL_TYPES)}, got {v}")
        return v

    @field_validator("dropouts")
    @classmethod
    def _dropouts(cls, v: List[float]) -> List[float]:
        if any(not 0.0 <= x < 1.0 for x in v) or len(set(v)) != len(v):
            raise ValueError(f"distinct probabilities in [0, 1), got {v}")
        return v

    @field_validator("padding")
    @classmethod
    def _padding(cls, v: str) -> str:
        if v not in ("valid", "same"):
            raise ValueError(f"'valid' or 'same', got {v!r}")
        return v

    @model_validator(mode="after")
    def _depths(self) -> "GeNASCNNParams":
        if self.min_depth > self.max_depth:
            raise ValueError(f"min_depth <= max_depth must hold, got min_depth={self.min_depth}, "
                             f"max_depth={self.max_depth}")
        if self.padding == "same" and any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"padding 'same' needs odd kernels, got kernels={self.kernels}")
        return self


class _ConvBlock(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU [-> 2x2 max/avg pooling]."""

    def __init__(self, c_in: int, filters: int, kernel: int, stride: int, pool: str, padding: str):
        layers: List[nn.Module] = [
            nn.Conv2d(c_in, filters, kernel_size=kernel, stride=stride,
                      padding=kernel // 2 if padding == "same" else 0, bias=False),
            nn.BatchNorm2d(filters),
            nn.ReLU(inplace=False),
        ]
        if pool == "max":
            layers.append(nn.MaxPool2d(2, 2))
        elif pool == "avg":
            layers.append(nn.AvgPool2d(2, 2))
        super().__init__(*layers)


def _build_network(module: nn.Module, sample: Dict[str, Any], in_channels: int, out_channels: int,
                   padding: str) -> None:
    c = in_channels
    blocks = []
    for filters, kernel, stride, pool in _layers(sample):
        blocks.append(_ConvBlock(c, filters, kernel, stride, pool, padding))
        c = filters
    module.features = nn.Sequential(*blocks)
    module.dropout = nn.Dropout(float(sample["head/dropout"]))
    module.classifier = nn.Linear(c, out_channels)


def _network_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` images -> ``(N, out_channels)`` logits."""
    x = module.features(x)
    return module.classifier(module.dropout(x.mean((2, 3))))


def _check_args(spatial_dims: int, in_channels: int, out_channels: int, image_size: Optional[int], max_depth: int,
                min_depth: int, filters: Sequence[int], kernels: Sequence[int], strides: Sequence[int],
                pools: Sequence[str], dropouts: Sequence[float], padding: str) -> None:
    check_spatial_dims("genas_cnn", spatial_dims)
    check_image_size("genas_cnn", image_size)
    for key, value, low in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                            ("max_depth", max_depth, 1), ("min_depth", min_depth, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key} must be an int >= {low}, got {value!r}")
    # The rest is validated by GeNASCNNParams; re-run it so direct Python use gets the same messages.
    GeNASCNNParams(max_depth=max_depth, min_depth=min_depth, filters=list(filters), kernels=list(kernels),
                   strides=list(strides), pools=list(pools), dropouts=list(dropouts), padding=padding)


class GeNASCNN(nn.Module):
    """A frozen GeNAS plain CNN: a plain ``nn.Module`` without NNI mutables.

    Build it with ``GeNASCNNSpace(...).freeze(sample)``. ``arch`` holds the (canonical) architecture dict.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 image_size: Optional[int] = None, max_depth: int = 6, min_depth: int = 2,
                 filters: Sequence[int] = (8, 16, 32, 64), kernels: Sequence[int] = (3, 5, 7, 1),
                 strides: Sequence[int] = (1, 2), pools: Sequence[str] = ("none", "max"),
                 dropouts: Sequence[float] = (0.0, 0.25, 0.5), padding: str = "valid",
                 num_classes: Optional[int] = None):
        super().__init__()
        out_channels = resolve_out_channels("genas_cnn", out_channels, num_classes, warn=False)
        sample = current_model()
        if sample is None:
            raise RuntimeError("GeNASCNN must be built by GeNASCNNSpace(...).freeze(sample) "
                               "(or inside nni.nas.space.model_context(sample))")
        labels = arch_labels(max_depth)
        missing = [k for k in labels if k not in sample]
        if missing:
            raise ValueError(f"architecture dict: missing label(s) {', '.join(missing[:4])}")
        self.in_channels, self.out_channels, self.padding = in_channels, out_channels, padding
        self.num_classes = out_channels     # the pre-Core-v2 name, still read by older callers
        values = make_label_values(max_depth, min_depth, filters, kernels, strides, pools, dropouts)
        self.arch: Dict[str, Any] = canonicalize(sample, values)
        _build_network(self, self.arch, in_channels, out_channels, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _network_forward(self, x)

    def describe(self) -> str:
        return describe_arch(self.arch)


class GeNASCNNSpace(ModelSpace, SearchSpace):
    """GeNAS plain-CNN space: depth + (filters, kernel, stride, pool) per layer + head dropout. See the module doc.

    Args:
        spatial_dims: 2 (2-D images only).
        in_channels: image channels.
        out_channels: logits, one per class.
        image_size: input height (= width) used by :meth:`is_valid`; None: unknown (every sample is valid).
        max_depth, min_depth, filters, kernels, strides, pools, dropouts, padding: see :class:`GeNASCNNParams`.
        num_classes: deprecated name of ``out_channels``.

    The unfrozen space's forward is NNI's dry run (the first value of every gene); it is not a supernet.
    """

    name = "genas_cnn"
    Params = GeNASCNNParams
    tasks = ("classification",)

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 image_size: Optional[int] = None, max_depth: int = 6, min_depth: int = 2,
                 filters: Sequence[int] = (8, 16, 32, 64), kernels: Sequence[int] = (3, 5, 7, 1),
                 strides: Sequence[int] = (1, 2), pools: Sequence[str] = ("none", "max"),
                 dropouts: Sequence[float] = (0.0, 0.25, 0.5), padding: str = "valid",
                 num_classes: Optional[int] = None):
        super().__init__()
        out_channels = resolve_out_channels("genas_cnn", out_channels, num_classes)
        _check_args(spatial_dims, in_channels, out_channels, image_size, max_depth, min_depth, filters, kernels,
                    strides, pools, dropouts, padding)
        self.spatial_dims, self.image_size = spatial_dims, image_size
        self.in_channels, self.out_channels, self.padding = in_channels, out_channels, padding
        self.num_classes = out_channels     # the pre-Core-v2 name, still read by older callers
        self.max_depth, self.min_depth = max_depth, min_depth
        self._label_values = make_label_values(max_depth, min_depth, filters, kernels, strides, pools, dropouts)
        for label, values in self._label_values.items():
            scope, _, base = label.rpartition("/")
            if scope:
                with label_scope(scope):   # NNI builds slash-scoped labels only through label_scope
                    self.add_mutable(nni.choice(base, values))
            else:
                self.add_mutable(nni.choice(label, values))
        # Dry-run network (first value of every gene), so the space itself has a working forward.
        _build_network(self, {k: v[0] for k, v in self._label_values.items()}, in_channels, out_channels, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _network_forward(self, x)

    @classmethod
    def create_fixed_module(cls, sample: Dict[str, Any], *args: Any, **kwargs: Any) -> GeNASCNN:  # type: ignore[override]
        """Called by NNI instead of ``__init__`` inside ``model_context(sample)``: build the frozen network."""
        with model_context(sample):
            return GeNASCNN(*args, **kwargs)

    def freeze(self, sample: Dict[str, Any]) -> GeNASCNN:  # type: ignore[override]
        """Validate ``sample`` (``SampleValidationError`` if invalid) and build a fresh :class:`GeNASCNN`."""
        self.validate(sample)
        return self.create_fixed_module(sample, **self.args)

    # ------------------------------------------------------------------ chromosome helpers
    def labels(self) -> List[str]:
        """The labels of this space, in ``simplify()`` order."""
        return arch_labels(self.max_depth)

    def label_values(self) -> Dict[str, List[Any]]:
        """``{label: candidate values}`` in ``simplify()`` order (a copy; cheaper than ``simplify()``)."""
        return {k: list(v) for k, v in self._label_values.items()}

    def active_part(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        """The genes that shape the network: ``depth``, the head and the first ``depth`` layers' genes only."""
        depth = int(sample["depth"])
        return {k: v for k, v in sample.items()
                if not k.startswith("layer") or int(k[5:k.index("/")]) < depth}

    def canonicalize(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        """The same architecture with every inactive gene (layer ``>= depth``) set to its first value.

        Two samples give the same network exactly when their canonical forms are equal. Unknown keys are dropped,
        and values are mapped to the space's own objects (``0`` -> ``0.0`` for a float gene).
        """
        return canonicalize(sample, self._label_values)

    def spatial_sizes(self, sample: Dict[str, Any], input_size: int) -> List[int]:
        """Feature-map size after each active layer (see :func:`spatial_sizes`); stops at the first ``<= 0``."""
        return spatial_sizes(sample, input_size, self.padding)

    def is_valid(self, sample: Dict[str, Any], input_size: Optional[int] = None) -> Tuple[bool, str]:
        """``(False, reason)`` when the image would shrink to ``<= 0`` pixels somewhere (the forward would fail).

        The size checked is ``input_size`` if given, else the constructor's ``image_size``; with neither, every
        sample is valid: ``(True, "")``.
        """
        size = self.image_size if input_size is None else input_size
        if size is None:
            return True, ""
        sizes = self.spatial_sizes(sample, size)
        if len(sizes) == int(sample["depth"]) and all(h > 0 for h in sizes):
            return True, ""
        return False, f"feature map shrinks to {sizes[-1]} px at layer {len(sizes) - 1} (sizes {sizes})"

    def random_sample(self, rng: Any) -> Dict[str, Any]:
        """A canonical random architecture drawn with ``rng`` (a ``random.Random``); it may be invalid."""
        return self.canonicalize({k: rng.choice(v) for k, v in self._label_values.items()})

    def size(self) -> int:
        """Number of distinct networks (canonical architectures), invalid ones included."""
        per_layer = math.prod(len(self._label_values[k]) for k in layer_labels(0))
        return len(self._label_values["head/dropout"]) * sum(per_layer ** d for d in self._label_values["depth"])

    def describe(self, sample: Dict[str, Any]) -> str:
        """One short line (see :func:`describe_short`); :func:`describe_arch` gives one line per layer."""
        return describe_short(sample)

    # ------------------------------------------------------------------ genetic operators
    def crossover(self, a: Dict[str, Any], b: Dict[str, Any], rng: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """One-point crossover over the layer lists (:func:`~.genas_operators.one_point_crossover`)."""
        c1, c2 = genas_operators.one_point_crossover(a, b, self._label_values, rng)
        return self.canonicalize(c1), self.canonicalize(c2)

    def mutate(self, sample: Dict[str, Any], prob: float, rng: Any) -> Dict[str, Any]:
        """Per-gene mutation of the active genes (:func:`~.genas_operators.mutate`)."""
        return self.canonicalize(genas_operators.mutate(sample, self._label_values, prob, rng))

"""A small U-Net search space built from MONAI blocks, as an NNI 3.0 ``ModelSpace``.

U-Net: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015,
doi:10.1007/978-3-319-24574-4_28. The network is MONAI's :class:`monai.networks.nets.UNet` (strided-convolution
down path, transposed-convolution up path, optional residual units after Kerfoot et al., "Left-Ventricle
Quantification Using Residual U-Net", STACOM 2018, doi:10.1007/978-3-030-12029-0_40). This space searches a few of
its global hyper-parameters; it is the segmentation baseline that multi-trial strategies (GeNAS-WF, random search)
run on, not a cell-level space.

Labels (stable public API; architecture JSON keys on them), each an ``nni.mutable.Categorical``
-----------------------------------------------------------------------------------------------
* ``depth``   -- number of down-sampling levels (stride-2 convolutions), default ``[3, 4, 5]``
* ``width``   -- channels of the first level (doubled at every level), default ``[8, 16, 32]``
* ``unit``    -- ``'conv'`` (one convolution per level, MONAI ``num_res_units=0``) or ``'residual'`` (MONAI
  ``ResidualUnit`` with ``num_res_units`` sub-units)
* ``norm``    -- ``'batch'`` or ``'instance'`` normalisation
* ``dropout`` -- dropout probability inside every block, default ``[0.0, 0.1, 0.2]``

Every gene is active in every network, so the canonical form is the generic one of
:class:`~mednas_nni.contracts.SearchSpace` (values mapped to the label's own candidates), and so are the genetic
operators.

Network (for a sample)
----------------------
``UNet(spatial_dims=2, channels=(w, 2w, ..., 2**depth w), strides=(2,) * depth, ...)`` with MONAI's defaults
otherwise (3x3 kernels, PReLU, norm -> dropout -> activation). Its output is ``(N, out_channels, H, W)`` logits at
the input size. MONAI's U-Net needs ``H`` and ``W`` divisible by ``2**depth``; ours takes any size: the input is
padded (edge replication, bottom and right) to the next multiple of ``2**depth`` and the logits are cropped back.
A sample is *invalid* (:meth:`UNetSpace.is_valid`) when its bottleneck would be smaller than 2x2 pixels
(``ceil(image_size / 2**depth) < 2``): instance normalisation cannot train on one pixel, and such a network has no
spatial context left at the bottom.

Freezing
--------
``space.freeze(sample)`` validates the sample (``nni.mutable.SampleValidationError`` on a bad label or value) and
builds a fresh :class:`UNetNet`: a plain ``nn.Module`` without NNI mutables, exportable to ONNX (legacy exporter,
opset 17; the padding is fixed for the export size). NNI's "simplified" execution format re-creates the space under
``model_context(sample)``; that also returns a :class:`UNetNet` (through :meth:`UNetSpace.create_fixed_module`).
"""
import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import nni
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import current_model, model_context
from pydantic import Field, field_validator
from torch import nn

from mednas_nni.contracts import PluginParams, SearchSpace

from ._common import check_image_size, check_spatial_dims, resolve_out_channels

__all__ = ["UNetParams", "UNetSpace", "UNetNet", "LABELS", "UNITS", "NORMS", "bottleneck_size", "describe_arch"]

_logger = logging.getLogger(__name__)

LABELS = ("depth", "width", "unit", "norm", "dropout")
"""The labels of the space, in ``simplify()`` order."""
UNITS = ("conv", "residual")
"""Values a ``unit`` gene may take."""
NORMS = ("batch", "instance")
"""Values a ``norm`` gene may take."""


def _distinct(v: List[Any]) -> List[Any]:
    if len(set(v)) != len(v):
        raise ValueError(f"distinct values, got {v}")
    return v


class UNetParams(PluginParams):
    """Config ``params`` of the ``unet`` space: the candidate values of each label (``in_channels`` and
    ``out_channels`` come from the data set). The defaults are ours."""

    depths: List[int] = Field(default_factory=lambda: [3, 4, 5], min_length=1)
    widths: List[int] = Field(default_factory=lambda: [8, 16, 32], min_length=1)
    units: List[str] = Field(default_factory=lambda: ["conv", "residual"], min_length=1)
    norms: List[str] = Field(default_factory=lambda: ["batch", "instance"], min_length=1)
    dropouts: List[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2], min_length=1)
    num_res_units: int = Field(2, ge=1, le=8, description="Sub-units of a residual unit (MONAI num_res_units).")

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: List[int]) -> List[int]:
        if any(not 1 <= int(x) <= 8 for x in v):
            raise ValueError(f"integers in 1..8, got {v}")
        return _distinct(v)

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: List[int]) -> List[int]:
        if any(int(x) < 2 for x in v):
            raise ValueError(f"integers >= 2, got {v}")
        return _distinct(v)

    @field_validator("units")
    @classmethod
    def _units(cls, v: List[str]) -> List[str]:
        if any(u not in UNITS for u in v):
            raise ValueError(f"values among {', '.join(UNITS)}, got {v}")
        return _distinct(v)

    @field_validator("norms")
    @classmethod
    def _norms(cls, v: List[str]) -> List[str]:
        if any(n not in NORMS for n in v):
            raise ValueError(f"values among {', '.join(NORMS)}, got {v}")
        return _distinct(v)

    @field_validator("dropouts")
    @classmethod
    def _dropouts(cls, v: List[float]) -> List[float]:
        if any(not 0.0 <= x < 1.0 for x in v):
            raise ValueError(f"probabilities in [0, 1), got {v}")
        return _distinct(v)


def bottleneck_size(image_size: int, depth: int) -> int:
    """Height (= width) of the bottom feature map for an ``image_size`` input (after padding to ``2**depth``)."""
    return math.ceil(int(image_size) / 2 ** int(depth))


def describe_arch(sample: Dict[str, Any]) -> str:
    """``U-Net depth 4, width 16, residual units, batch norm, dropout 0.1`` (``no dropout`` for 0)."""
    dropout = float(sample["dropout"])
    return (f"U-Net depth {int(sample['depth'])}, width {int(sample['width'])}, {sample['unit']} units, "
            f"{sample['norm']} norm, " + (f"dropout {dropout:g}" if dropout else "no dropout"))


def _build_network(module: nn.Module, sample: Dict[str, Any], in_channels: int, out_channels: int,
                   num_res_units: int) -> None:
    depth, width = int(sample["depth"]), int(sample["width"])
    module.depth = depth
    module.unet = UNet(
        spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
        channels=tuple(width * 2 ** i for i in range(depth + 1)), strides=(2,) * depth,
        num_res_units=num_res_units if sample["unit"] == "residual" else 0,
        norm=str(sample["norm"]), dropout=float(sample["dropout"]))


def _network_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` images -> ``(N, out_channels, H, W)`` logits, for any ``H, W >= 1``."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    multiple = 2 ** module.depth
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    y = module.unet(x)
    if pad_h or pad_w:
        y = y[:, :, :h, :w]
    return y


def _check_args(spatial_dims: int, in_channels: int, out_channels: int, image_size: Optional[int],
                params: Dict[str, Any]) -> None:
    check_spatial_dims("unet", spatial_dims)
    check_image_size("unet", image_size)
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"unet: {key}: expected an int >= 1, got {value!r}")
    UNetParams(**params)    # the same messages for direct Python use as for a config


def _label_values(depths: Sequence[int], widths: Sequence[int], units: Sequence[str], norms: Sequence[str],
                  dropouts: Sequence[float]) -> Dict[str, List[Any]]:
    return {"depth": [int(d) for d in depths], "width": [int(w) for w in widths], "unit": [str(u) for u in units],
            "norm": [str(n) for n in norms], "dropout": [float(p) for p in dropouts]}


class UNetNet(nn.Module):
    """A frozen U-Net of the ``unet`` space: a plain ``nn.Module`` without NNI mutables.

    Build it with ``UNetSpace(...).freeze(sample)``. ``arch`` holds the (canonical) architecture dict.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 image_size: Optional[int] = None, depths: Sequence[int] = (3, 4, 5),
                 widths: Sequence[int] = (8, 16, 32), units: Sequence[str] = UNITS, norms: Sequence[str] = NORMS,
                 dropouts: Sequence[float] = (0.0, 0.1, 0.2), num_res_units: int = 2,
                 num_classes: Optional[int] = None):
        super().__init__()
        out_channels = resolve_out_channels("unet", out_channels, num_classes, warn=False)
        sample = current_model()
        if sample is None:
            raise RuntimeError("UNetNet must be built by UNetSpace(...).freeze(sample) "
                               "(or inside nni.nas.space.model_context(sample))")
        missing = [k for k in LABELS if k not in sample]
        if missing:
            raise ValueError(f"architecture dict: missing label(s) {', '.join(missing)}")
        values = _label_values(depths, widths, units, norms, dropouts)
        self.arch: Dict[str, Any] = {k: next((v for v in values[k] if v == sample[k]), sample[k]) for k in LABELS}
        self.in_channels, self.out_channels = in_channels, out_channels
        _build_network(self, self.arch, in_channels, out_channels, num_res_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` images -> ``(N, out_channels, H, W)`` logits."""
        return _network_forward(self, x)

    def describe(self) -> str:
        return describe_arch(self.arch)


class UNetSpace(ModelSpace, SearchSpace):
    """U-Net space over MONAI's ``UNet``: depth, width, unit type, normalisation, dropout. See the module doc.

    Args:
        spatial_dims: 2 (2-D images only).
        in_channels: image channels.
        out_channels: logits per pixel, one per class (background included).
        image_size: input height (= width) used by :meth:`is_valid`; None: unknown (every sample is valid).
        depths, widths, units, norms, dropouts: candidate values of the labels (see :class:`UNetParams`).
        num_res_units: sub-units of a residual unit.
        num_classes: deprecated name of ``out_channels``.

    The unfrozen space's forward is NNI's dry run (the first value of every label); it is not a supernet.
    """

    name = "unet"
    Params = UNetParams
    tasks = ("segmentation",)

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 image_size: Optional[int] = None, depths: Sequence[int] = (3, 4, 5),
                 widths: Sequence[int] = (8, 16, 32), units: Sequence[str] = UNITS, norms: Sequence[str] = NORMS,
                 dropouts: Sequence[float] = (0.0, 0.1, 0.2), num_res_units: int = 2,
                 num_classes: Optional[int] = None):
        super().__init__()
        out_channels = resolve_out_channels("unet", out_channels, num_classes)
        _check_args(spatial_dims, in_channels, out_channels, image_size,
                    dict(depths=list(depths), widths=list(widths), units=list(units), norms=list(norms),
                         dropouts=list(dropouts), num_res_units=num_res_units))
        self.spatial_dims, self.image_size = spatial_dims, image_size
        self.in_channels, self.out_channels, self.num_res_units = in_channels, out_channels, num_res_units
        self._label_values = _label_values(depths, widths, units, norms, dropouts)
        for label, values in self._label_values.items():
            self.add_mutable(nni.choice(label, values))
        # Dry-run network (first value of every label), so the space itself has a working forward.
        _build_network(self, {k: v[0] for k, v in self._label_values.items()}, in_channels, out_channels,
                       num_res_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _network_forward(self, x)

    @classmethod
    def create_fixed_module(cls, sample: Dict[str, Any], *args: Any, **kwargs: Any) -> UNetNet:  # type: ignore[override]
        """Called by NNI instead of ``__init__`` inside ``model_context(sample)``: build the frozen network."""
        with model_context(sample):
            return UNetNet(*args, **kwargs)

    def freeze(self, sample: Dict[str, Any]) -> UNetNet:  # type: ignore[override]
        """Validate ``sample`` (``SampleValidationError`` if invalid) and build a fresh :class:`UNetNet`."""
        self.validate(sample)
        return self.create_fixed_module(sample, **self.args)

    def label_values(self) -> Dict[str, List[Any]]:
        """``{label: candidate values}`` in ``simplify()`` order (a copy)."""
        return {k: list(v) for k, v in self._label_values.items()}

    def is_valid(self, sample: Dict[str, Any], input_size: Optional[int] = None) -> Tuple[bool, str]:
        """``(False, reason)`` when the bottleneck would be smaller than 2x2 pixels (see the module doc).

        The size checked is ``input_size`` if given, else the constructor's ``image_size``; with neither, every
        sample is valid: ``(True, "")``.
        """
        size = self.image_size if input_size is None else input_size
        if size is None:
            return True, ""
        depth = int(sample["depth"])
        bottom = bottleneck_size(size, depth)
        if bottom >= 2:
            return True, ""
        return False, (f"feature map shrinks to {bottom} px at the bottleneck of a depth-{depth} U-Net "
                       f"(input {size} px; needs at least {2 ** depth + 1} px)")

    def describe(self, sample: Dict[str, Any]) -> str:
        """``U-Net depth 4, width 16, residual units, batch norm, dropout 0.1``."""
        return describe_arch(sample)

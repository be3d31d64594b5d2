"""``scam_unet``: the NAS-SCAM search space, a U-Net with a searched spatial + channel attention module after every
down and up block, as an NNI 3.0 ``ModelSpace``.

Liu, Wang, Zhang, Wang and Qi, "NAS-SCAM", MICCAI 2020, LNCS 12261, pp. 263-272 (authors' code
``ZuhaoLiu/NAS-SCAM`` @ 9793d30). Backbone: :class:`~.attention_unet.AttentionUNet` (MONAI BasicUNet blocks, root
width ``r``, 4 down + 4 up). Attention: one :class:`~.attention_cells.SCAM` (NAS-SAM + NAS-CAM, ``parallel`` or
``serial``) at each of the 8 positions ``down1`` .. ``down4``, ``up1`` .. ``up4``.

Labels (stable public API; architecture JSON keys on them), each an ``nni.mutable.Categorical`` of op names
--------------------------------------------------------------------------------------------------------------
``<module>/sam/node<i>_in<j>`` and ``<module>/cam/node<i>_in<j>`` for every module and the 6 edges of each cell
(i = 1..3, j < i): 8 x 12 = 96 labels. **Every module instance has its own α set** ("synchronous" search of all 8
modules at once, as in the authors' code). With ``share_alpha: true`` every module uses the labels of one module
named ``shared`` (12 labels): one α set for all SAMs and one for all CAMs, for comparison.

Every sample gives a working network (``none`` edges are dropped, see :mod:`.attention_cells`), so the canonical
form and the genetic operators are the generic ones of :class:`~mednas_nni.contracts.SearchSpace` and
:meth:`SCAMUNetSpace.is_valid` accepts everything.

The unfrozen space is the supernet that NNI's DARTS relaxes (the ``scam`` strategy); its own forward is NNI's dry
run (first candidate, ``none``, everywhere: every attention map is 0). ``space.freeze(sample)`` builds a
:class:`SCAMUNetNet`, a plain ``nn.Module`` exportable to ONNX.
"""
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
from nni.mutable import label_scope
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import current_model, model_context
from pydantic import Field, field_validator, model_validator
from torch import nn

from mednas_nni.contracts import PluginParams, SearchSpace

from ._common import check_image_size, check_spatial_dims, resolve_out_channels
from .attention_cells import CAM_OPS, COMBINATIONS, NONE, SAM_OPS, SCAM, cell_edges, edge_label
from .attention_unet import MODULE_NAMES, AttentionUNet

__all__ = ["SCAMUNetParams", "SCAMUNetSpace", "SCAMUNetNet", "SHARED_SCOPE", "arch_labels", "describe_arch",
           "module_scopes", "OP_SHORT"]

_logger = logging.getLogger(__name__)

SHARED_SCOPE = "shared"
"""The label scope of every module when ``share_alpha`` is on."""
OP_SHORT = {NONE: "-", "conv1": "1", "conv3": "3", "conv5": "5", "conv9": "9", "conv15": "15", "dil3": "d3",
            "dil5": "d5"}
"""Short op names for :func:`describe_arch`."""


class SCAMUNetParams(PluginParams):
    """Config ``params`` of the ``scam_unet`` space (``in_channels`` / ``out_channels`` come from the data set)."""

    root_width: int = Field(16, ge=4, le=256, description="Channels of the first U-Net level (the authors' "
                                                           "FeatureRoot 16); a multiple of norm_groups.")
    combination: str = Field("parallel", description="parallel: max(SAM(x), CAM(x)) (the authors' default); "
                                                     "serial: CAM(SAM(x)).")
    share_alpha: bool = Field(False, description="One α set shared by all 8 modules instead of one per module.")
    sam_ops: List[str] = Field(default_factory=lambda: list(SAM_OPS), min_length=1)
    cam_ops: List[str] = Field(default_factory=lambda: list(CAM_OPS), min_length=1)
    hidden_channels: int = Field(32, ge=1, le=256, description="Channels of the attention cells' hidden nodes "
                                                                "(the authors' 32; fewer for CPU budgets).")
    norm_groups: int = Field(4, ge=1, description="GroupNorm groups in the double convolutions (the authors' 4).")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout in the double convolutions (the authors' 0.2).")

    @field_validator("combination")
    @classmethod
    def _combination(cls, v: str) -> str:
        if v not in COMBINATIONS:
            raise ValueError(f"one of {', '.join(COMBINATIONS)}, got {v!r}")
        return v

    @field_validator("sam_ops", "cam_ops")
    @classmethod
    def _ops(cls, v: List[str], info: Any) -> List[str]:
        table = SAM_OPS if info.field_name == "sam_ops" else CAM_OPS
        if any(o not in table for o in v) or len(set(v)) != len(v):
            raise ValueError(f"distinct names among {', '.join(table)}, got {v}")
        return [o for o in table if o in v]          # table order: stable label values

    @model_validator(mode="after")
    def _groups_divide_width(self) -> "SCAMUNetParams":
        if self.root_width % self.norm_groups:
            raise ValueError(f"root_width: expected a multiple of norm_groups={self.norm_groups}, got "
                             f"{self.root_width}")
        return self


def module_scopes(share_alpha: bool) -> List[str]:
    """The label scopes that exist: the 8 module names, or ``["shared"]``."""
    return [SHARED_SCOPE] if share_alpha else list(MODULE_NAMES)


def arch_labels(share_alpha: bool = False) -> List[str]:
    """Every label in ``simplify()`` order: per scope, the 6 SAM edges then the 6 CAM edges."""
    return [f"{scope}/{kind}/{edge_label(i, j)}" for scope in module_scopes(share_alpha) for kind in ("sam", "cam")
            for i, j in cell_edges()]


def describe_arch(sample: Dict[str, Any]) -> str:
    """One line: per scope ``down1 S[1|-3|d3 5 -] C[...]`` (edges of node 1 | node 2 | node 3; ``-`` = none)."""
    scopes: Dict[str, Dict[str, List[str]]] = {}
    for label, value in sample.items():
        scope, _, rest = label.partition("/")
        kind = rest.partition("/")[0]
        scopes.setdefault(scope, {}).setdefault(kind, []).append(OP_SHORT.get(str(value), str(value)))
    parts = []
    for scope, kinds in scopes.items():
        cells = []
        for kind in ("sam", "cam"):
            ops = kinds.get(kind, [])
            groups, k = [], 0
            for n in range(1, 4):
                groups.append(" ".join(ops[k:k + n]))
                k += n
            cells.append(f"{kind[0].upper()}[{'|'.join(groups)}]")
        parts.append(f"{scope} {' '.join(cells)}")
    return "; ".join(parts)


def _check_args(spatial_dims: int, in_channels: int, out_channels: int, image_size: Optional[int],
                params: Dict[str, Any]) -> None:
    check_spatial_dims("scam_unet", spatial_dims)
    check_image_size("scam_unet", image_size)
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"scam_unet: {key}: expected an int >= 1, got {value!r}")
    SCAMUNetParams(**params)


def _build_network(module: nn.Module, in_channels: int, out_channels: int, root_width: int, combination: str,
                   share_alpha: bool, sam_ops: List[str], cam_ops: List[str], hidden_channels: int,
                   norm_groups: int, dropout: float) -> None:
    def attention(name: str, channels: int) -> nn.Module:
        with label_scope(SHARED_SCOPE if share_alpha else name):
            return SCAM(channels, combination, sam_ops, cam_ops, hidden_channels)

    module.in_channels, module.out_channels = in_channels, out_channels
    module.unet = AttentionUNet(in_channels, out_channels, root_width, attention, norm_groups, dropout)


class SCAMUNetNet(nn.Module):
    """A derived NAS-SCAM U-Net: a plain ``nn.Module`` without NNI mutables; ``none`` edges are absent.

    Build it with ``SCAMUNetSpace(...).freeze(sample)``. ``arch`` holds the architecture dict.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 image_size: Optional[int] = None, root_width: int = 16, combination: str = "parallel",
                 share_alpha: bool = False, sam_ops: Optional[List[str]] = None,
                 cam_ops: Optional[List[str]] = None, hidden_channels: int = 32, norm_groups: int = 4,
                 dropout: float = 0.2, num_classes: Optional[int] = None):
        super().__init__()
        out_channels = resolve_out_channels("scam_unet", out_channels, num_classes, warn=False)
        sample = current_model()
        if sample is None:
            raise RuntimeError("SCAMUNetNet must be built by SCAMUNetSpace(...).freeze(sample) "
                               "(or inside nni.nas.space.model_context(sample))")
        labels = arch_labels(share_alpha)
        missing = [k for k in labels if k not in sample]
        if missing:
            raise ValueError(f"architecture dict: missing {len(missing)} label(s), first {missing[0]}")
        self.arch: Dict[str, Any] = {k: sample[k] for k in labels}
        _build_network(self, in_channels, out_channels, root_width, combination, share_alpha,
                       list(sam_ops or SAM_OPS), list(cam_ops or CAM_OPS), hidden_channels, norm_groups, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` images -> ``(N, out_channels, H, W)`` logits."""
        return self.unet(x)

    def describe(self) -> str:
        return describe_arch(self.arch)


class SCAMUNetSpace(ModelSpace, SearchSpace):
    """NAS-SCAM: U-Net (MONAI blocks) with a searched spatial + channel attention module after every block.

    Args:
        spatial_dims: 2 (2-D images only).
        in_channels: image channels.
        out_channels: logits per pixel, one per class (background included).
        image_size: the data set's input size (unused: any size works).
        root_width, combination, share_alpha, sam_ops, cam_ops, hidden_channels, norm_groups, dropout: see
            :class:`SCAMUNetParams`.
        num_classes: deprecated name of ``out_channels``.
    """

    name = "scam_unet"
    Params = SCAMUNetParams
    tasks = ("segmentation",)

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 image_size: Optional[int] = None, root_width: int = 16, combination: str = "parallel",
                 share_alpha: bool = False, sam_ops: Optional[List[str]] = None,
                 cam_ops: Optional[List[str]] = None, hidden_channels: int = 32, norm_groups: int = 4,
                 dropout: float = 0.2, num_classes: Optional[int] = None):
        super().__init__()
        out_channels = resolve_out_channels("scam_unet", out_channels, num_classes)
        params = dict(root_width=root_width, combination=combination, share_alpha=share_alpha,
                      sam_ops=list(sam_ops or SAM_OPS), cam_ops=list(cam_ops or CAM_OPS),
                      hidden_channels=hidden_channels, norm_groups=norm_groups, dropout=dropout)
        _check_args(spatial_dims, in_channels, out_channels, image_size, params)
        p = SCAMUNetParams(**params)
        self.spatial_dims, self.image_size, self.share_alpha = spatial_dims, image_size, share_alpha
        self.combination, self.root_width = combination, root_width
        _build_network(self, in_channels, out_channels, root_width, combination, share_alpha, p.sam_ops,
                       p.cam_ops, hidden_channels, norm_groups, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)

    @classmethod
    def create_fixed_module(cls, sample: Dict[str, Any], *args: Any, **kwargs: Any) -> SCAMUNetNet:  # type: ignore[override]
        """Called by NNI instead of ``__init__`` inside ``model_context(sample)``: build the derived network."""
        with model_context(sample):
            return SCAMUNetNet(*args, **kwargs)

    def freeze(self, sample: Dict[str, Any]) -> SCAMUNetNet:  # type: ignore[override]
        """Validate ``sample`` (``SampleValidationError`` if invalid) and build a fresh :class:`SCAMUNetNet`."""
        self.validate(sample)
        return self.create_fixed_module(sample, **self.args)

    def labels(self) -> List[str]:
        """The labels of this space in ``simplify()`` order."""
        return arch_labels(self.share_alpha)

    def alpha_sets(self) -> Dict[str, List[str]]:
        """``{"<scope>/sam": [labels], "<scope>/cam": [labels]}``: the labels of each independent α set."""
        out: Dict[str, List[str]] = {}
        for label in self.labels():
            scope, kind, _ = label.split("/")
            out.setdefault(f"{scope}/{kind}", []).append(label)
        return out

    def is_valid(self, sample: Dict[str, Any]) -> Tuple[bool, str]:
        """Every sample is valid (``none`` edges are dropped; any input size is padded to a multiple of 16)."""
        return True, ""

    def describe(self, sample: Dict[str, Any]) -> str:
        """One line per :func:`describe_arch`."""
        return describe_arch(sample)

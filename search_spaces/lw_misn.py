"""The Auto-LW-MISN search space: a U-shaped supernet of DARTS-style cells over 8 lightweight ops (NNI ModelSpace).

Zhang, Zhong and Mao, "Auto-LW-MISN: automatic construction of lightweight medical image segmentation networks",
*Computer Science* (计算机科学) 49(10):183-190, 2022, doi:10.11896/jsjkx.210800052 (§2.1 Fig. 1, §2.2 Fig. 2).

Cell (Fig. 1)
-------------
A DAG with two input nodes (the outputs of the previous two blocks, each mapped to the cell's ``C`` channels by a
ReLU + 1x1 conv + BN, resampled to the cell's resolution first when needed) and ``nodes`` (4) intermediate nodes;
node ``j`` is the sum over every earlier node ``i`` of ``O^(i,j)(x_i)`` (eq. 3), each edge an NNI ``LayerChoice`` over
the 8 ops of :mod:`.lw_ops` (identity, 3x3 separable, 3x3 dilated grouped, ghost, selective-kernel, 3x3 shuffle
group, 3x3 max-pool, zero). The cell output is the concatenation of the intermediate nodes (``nodes * C``
channels), as in DARTS. Every op but identity and zero is followed by MONAI's ``DropPath`` (drop-path; its
probability is set by the one-shot engine during the search and by ``drop_path_prob`` in the derived network).

Supernet (Fig. 2)
-----------------
A stem (MONAI ``Convolution`` 3x3 + BN to ``channels``), then ``encoder_blocks`` cells each followed by a 2x2 max-pool,
``middle_blocks`` cells at the bottom, and ``decoder_blocks`` (= ``encoder_blocks``, the paper's symmetric U) cells,
each after a transposed conv x2 (MONAI ``UpSample(mode="deconv")``) whose output is concatenated with the encoder
cell output at that scale (lateral connection). Every block but the first takes the outputs of the previous two
blocks. A cell at level ``l`` (``l`` poolings deep) has ``channels * 2**l`` channels. The head is a 1x1 MONAI
``Convolution`` to ``out_channels`` logits; the task applies its activation (softmax over 2 channels for binary
segmentation, equivalent to the paper's sigmoid of one logit). Inputs of any size work: they are padded (edge
replication) to a multiple of ``2**encoder_blocks`` and the logits cropped back. Paper settings: 2/3/2 blocks
(DSB 2018 cells, the default), 3/3/3 (CHAOS liver CT), 3/2/3 (PROMISE12 prostate MR).

Labels (stable public API)
--------------------------
``share_cells: true`` (default; the paper searches one block type, "N identical blocks", eq. 10-11): one genotype
shared by every block, labels ``cell/node{j}/edge{i}``; ``share_cells: false``: one per block,
``enc{k}/node{j}/edge{i}``, ``mid{k}/...``, ``dec{k}/...``. ``j`` = 0..nodes-1 is the intermediate node, ``i`` its
predecessor in DARTS genotype numbering (0 = the block before the previous one, 1 = the previous block, 2 + m =
intermediate node m). Values: :data:`~.lw_ops.OP_NAMES`.

``space.freeze(sample)`` builds the derived network, a plain ``nn.Module`` (:class:`LWMISNNet`: fresh weights, only
the chosen op per edge; ``zero`` edges stay as a zero op). Derivation (:meth:`LWMISNSpace.derive`): the DARTS rule,
kept by the paper ("keep the two strongest ops per intermediate node"): per node, the two incoming edges whose
strongest non-zero op has the highest probability keep
that op; every other edge becomes ``zero``. Costs (:meth:`LWMISNSpace.op_costs`): per label and op, the params and
FLOPs (multiply-accumulates) of the op summed over every block that uses the label, at that block's channels and
resolution for ``image_size`` (or ``cost_image_size``; 256 px when neither is known): eq. 5-11's ``P(o)``, ``F(o)``.
The stem, input maps, up-convs and head are not searched and not in ``E[·]``.
"""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers import DropPath
from nni.mutable import label_scope
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.space import current_model, model_context
from pydantic import Field, ValidationError, field_validator, model_validator
from torch import nn

from mednas_nni.contracts import PluginParams, SearchSpace
from mednas_nni.errors import ConfigError

from ._common import check_image_size, check_spatial_dims
from .lw_ops import OP_NAMES, build_op, op_cost

__all__ = ["LWMISNParams", "LWMISNSpace", "LWMISNNet", "LWCell", "block_names", "edge_label", "derive_top2", "SHORT"]

SHORT = {"identity": "id", "sep_conv_3x3": "sep", "dil_conv_3x3": "dil", "ghost_conv": "ghost", "sk_conv": "sk",
         "shuffle_conv_3x3": "shuffle", "max_pool_3x3": "pool", "zero": "zero"}
"""Short op names (describe strings, cell.png)."""
DEFAULT_COST_SIZE = 256


class LWMISNParams(PluginParams):
    """Config ``params`` of the ``lw_misn`` space (defaults: the paper's DSB 2018 supernet, 2/3/2 blocks)."""

    encoder_blocks: int = Field(2, ge=1, le=5)
    middle_blocks: int = Field(3, ge=1, le=6)
    decoder_blocks: int = Field(2, ge=1, le=5)         # = encoder_blocks (the paper's symmetric U)
    channels: int = Field(16, ge=4, le=256)            # cell channels at full resolution (doubled per level)
    nodes: int = Field(4, ge=2, le=6)                  # intermediate nodes per cell (the paper: 4)
    ops: List[str] = Field(default_factory=lambda: list(OP_NAMES), min_length=2)   # candidate ops of every edge
    share_cells: bool = True                           # one genotype for every block (the paper) or one per block
    drop_path_prob: float = Field(0.0, ge=0, lt=1)     # drop-path of the derived network (the paper retrains at 0.15)
    cost_image_size: Optional[int] = Field(None, ge=8)  # image size of op_costs; None: image_size (256 if unknown)

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: int) -> int:
        if v % 4:
            raise ValueError(f"a multiple of 4 (ghost halves, shuffle groups 4), got {v}")
        return v

    @field_validator("ops")
    @classmethod
    def _ops(cls, v: List[str]) -> List[str]:
        bad = [o for o in v if o not in OP_NAMES]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"distinct values among {', '.join(OP_NAMES)}, got {v}")
        if all(o == "zero" for o in v):
            raise ValueError(f"at least one op other than zero, got {v}")
        return v

    @model_validator(mode="after")
    def _symmetric(self) -> "LWMISNParams":
        if self.decoder_blocks != self.encoder_blocks:
            raise ValueError(f"decoder_blocks equal to encoder_blocks (one transposed conv per pooling), got "
                             f"encoder_blocks={self.encoder_blocks}, decoder_blocks={self.decoder_blocks}")
        return self


def block_names(encoder_blocks: int, middle_blocks: int, decoder_blocks: int) -> List[Tuple[str, int]]:
    """``[(name, level), ...]`` of the blocks in order: ``enc0`` (level 0) ... ``mid0`` (level E) ... ``dec{D-1}``."""
    e = encoder_blocks
    return ([(f"enc{k}", k) for k in range(e)] + [(f"mid{k}", e) for k in range(middle_blocks)]
            + [(f"dec{k}", e - 1 - k) for k in range(decoder_blocks)])


def edge_label(scope: str, node: int, edge: int) -> str:
    """``<scope>/node{node}/edge{edge}``."""
    return f"{scope}/node{node}/edge{edge}"


def derive_top2(probs: Dict[str, Dict[Any, float]], scopes: Sequence[str], nodes: int, keep: int = 2) -> Dict[str, str]:
    """The DARTS derivation: per intermediate node keep the ``keep`` incoming edges whose best non-zero op is the most
    probable, with that op; every other edge of the node becomes ``zero``."""
    sample: Dict[str, str] = {}
    for scope in scopes:
        for j in range(nodes):
            edges = []
            for i in range(j + 2):
                dist = {str(v): float(p) for v, p in probs[edge_label(scope, j, i)].items()}
                best = max((v for v in dist if v != "zero"), key=lambda v: dist[v], default="zero")
                edges.append((dist.get(best, 0.0), -i, i, best))
            kept = {i for _, _, i, _ in sorted(edges, reverse=True)[:keep]}
            for _, _, i, best in edges:
                sample[edge_label(scope, j, i)] = best if i in kept else "zero"
    return sample


def _relu_conv_bn(c_in: int, c_out: int) -> nn.Module:
    """ReLU, then MONAI ``Convolution`` 1x1 + BN (DARTS' ReLUConvBN preprocessing)."""
    return nn.Sequential(nn.ReLU(), Convolution(2, c_in, c_out, kernel_size=1, act=None, norm="batch", bias=False))


class _Resample(nn.Module):
    """A feature map from level ``src`` to level ``dst`` (max-pool down, nearest up), then ReLU-conv1x1-BN."""

    def __init__(self, c_in: int, c_out: int, src: int, dst: int):
        super().__init__()
        f = 2 ** abs(dst - src)
        self.resize = (nn.MaxPool2d(f) if dst > src else nn.Upsample(scale_factor=f, mode="nearest")) \
            if dst != src else nn.Identity()
        self.proj = _relu_conv_bn(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.resize(x))


def _edge(op_name: str, channels: int, drop_path_prob: float) -> nn.Module:
    op = build_op(op_name, channels)
    if op_name in ("identity", "zero"):
        return op
    return nn.Sequential(op, DropPath(drop_path_prob))


class LWCell(nn.Module):
    """One Auto-LW-MISN cell: two inputs, ``nodes`` intermediate nodes, every edge a ``LayerChoice`` of ``ops``;
    output ``nodes * channels`` channels (concatenation)."""

    def __init__(self, c_pp: int, c_p: int, channels: int, level_pp: int, level: int, scope: str, nodes: int,
                 ops: Sequence[str], drop_path_prob: float):
        super().__init__()
        self.nodes = nodes
        self.pre0 = _Resample(c_pp, channels, level_pp, level)
        self.pre1 = _relu_conv_bn(c_p, channels)
        self.edges = nn.ModuleList()
        frozen = current_model()              # inside model_context(sample): build the chosen op only
        with label_scope(scope):              # NNI labels may not contain "/": scopes build cell/node0/edge1
            for j in range(nodes):
                with label_scope(f"node{j}"):
                    self.edges.append(nn.ModuleList([
                        _edge(str(frozen[edge_label(scope, j, i)]), channels, drop_path_prob) if frozen is not None
                        else LayerChoice({name: _edge(name, channels, drop_path_prob) for name in ops},
                                         label=f"edge{i}")
                        for i in range(j + 2)]))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node_edges in self.edges:
            states.append(sum(edge(states[i]) for i, edge in enumerate(node_edges)))
        return torch.cat(states[2:], dim=1)


def _build_network(m: nn.Module, in_channels: int, out_channels: int, p: LWMISNParams) -> None:
    """Stem, cells, up-convs and head of the U (a supernet, or under ``model_context(sample)`` one network)."""
    m.p = p
    m.blocks_spec = block_names(p.encoder_blocks, p.middle_blocks, p.decoder_blocks)
    m.scopes = ["cell"] if p.share_cells else [n for n, _ in m.blocks_spec]
    c0 = p.channels
    m.stem = Convolution(2, in_channels, c0, kernel_size=3, act=None, norm="batch", bias=False)
    m.cells = nn.ModuleList()
    m.ups = nn.ModuleDict()
    # (channels, level) of every state: index 0 is the stem, then one per block
    states: List[Tuple[int, int]] = [(c0, 0)]
    skips: Dict[int, int] = {}
    for b, (block, level) in enumerate(m.blocks_spec):
        c = p.channels * 2 ** level
        c_pp, level_pp = states[b - 1] if b >= 1 else states[0]
        c_p, level_p = states[b]
        if block.startswith("dec"):
            m.ups[block] = UpSample(2, c_p, c, scale_factor=2, mode="deconv")
            c_p = c + skips[level]
        scope = "cell" if p.share_cells else block
        m.cells.append(LWCell(c_pp, c_p, c, level_pp, level, scope, p.nodes, p.ops, p.drop_path_prob))
        states.append((p.nodes * c, level))
        if block.startswith("enc"):
            skips[level] = p.nodes * c
    m.head = Convolution(2, states[-1][0], out_channels, kernel_size=1, conv_only=True, bias=True)


def _network_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, in_channels, H, W)`` images -> ``(N, out_channels, H, W)`` logits, for any ``H, W >= 1``."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    multiple = 2 ** m.p.encoder_blocks
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    stem = m.stem(x)
    outs: List[torch.Tensor] = [stem]
    skips: Dict[int, torch.Tensor] = {}
    for b, ((block, level), cell) in enumerate(zip(m.blocks_spec, m.cells)):
        s0 = outs[b - 1] if b >= 1 else outs[0]
        s1 = outs[b]
        if block.startswith("dec"):
            s1 = torch.cat([m.ups[block](s1), skips[level]], dim=1)
        elif b >= 1 and m.blocks_spec[b - 1][0].startswith("enc"):
            s1 = F.max_pool2d(s1, 2)          # the 2x2 max-pool after every encoder block
        out = cell(s0, s1)
        if block.startswith("enc"):
            skips[level] = out
        outs.append(out)
    y = m.head(outs[-1])
    if pad_h or pad_w:
        y = y[:, :, :h, :w]
    return y


class LWMISNNet(nn.Module):
    """A derived ``lw_misn`` network (``LWMISNSpace(...).freeze(sample)``): a plain ``nn.Module`` without NNI
    mutables; ``arch`` holds the sample."""

    def __init__(self, sample: Dict[str, Any], in_channels: int, out_channels: int, p: LWMISNParams):
        super().__init__()
        self.arch = dict(sample)
        self.in_channels, self.out_channels = in_channels, out_channels
        with model_context(sample):
            _build_network(self, in_channels, out_channels, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` images -> ``(N, out_channels, H, W)`` logits."""
        return _network_forward(self, x)


class LWMISNSpace(ModelSpace, SearchSpace):
    """Auto-LW-MISN: U-shaped supernet of lightweight DARTS cells for segmentation (see the module doc).

    Args:
        spatial_dims: 2 (2-D images only).
        in_channels, out_channels: image channels; logits per pixel (classes, background included).
        image_size: input height (= width); the bottom of the U must keep at least 2x2 px.
        encoder_blocks, middle_blocks, decoder_blocks, channels, nodes, ops, share_cells, drop_path_prob,
            cost_image_size: see :class:`LWMISNParams`.

    Raises:
        ConfigError: a block configuration whose feature map vanishes for ``image_size``, or bad parameters.
    """

    name = "lw_misn"
    Params = LWMISNParams
    tasks = ("segmentation",)

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 image_size: Optional[int] = None, encoder_blocks: int = 2, middle_blocks: int = 3,
                 decoder_blocks: int = 2, channels: int = 16, nodes: int = 4, ops: Sequence[str] = OP_NAMES,
                 share_cells: bool = True, drop_path_prob: float = 0.0, cost_image_size: Optional[int] = None):
        super().__init__()
        check_spatial_dims("lw_misn", spatial_dims)
        check_image_size("lw_misn", image_size)
        try:
            p = LWMISNParams(encoder_blocks=encoder_blocks, middle_blocks=middle_blocks, decoder_blocks=decoder_blocks,
                             channels=channels, nodes=nodes, ops=list(ops), share_cells=share_cells,
                             drop_path_prob=drop_path_prob, cost_image_size=cost_image_size)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "params"
            msg = err["msg"]
            msg = "expected " + msg.removeprefix("Value error, ") if msg.startswith("Value error, ") else msg
            raise ConfigError(f"space lw_misn: {where}: {msg}") from None
        if image_size is not None and math.ceil(image_size / 2 ** encoder_blocks) < 2:
            most = int(math.log2(max(image_size, 2))) - 1
            raise ConfigError(f"space lw_misn: encoder_blocks: expected at most {most} "
                              f"for {image_size} px images (the bottom of the U keeps >= 2x2 px after 2x2 max-pools), "
                              f"got {encoder_blocks}")
        self.p = p
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        _build_network(self, in_channels, out_channels, p)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` images -> ``(N, out_channels, H, W)`` logits, for any ``H, W >= 1``."""
        return _network_forward(self, x)

    def freeze(self, sample: Dict[str, Any]) -> "LWMISNNet":  # type: ignore[override]
        """Validate ``sample`` (``SampleValidationError`` if invalid) and build :class:`LWMISNNet`, the network of
        that architecture: a plain ``nn.Module``, fresh weights, only the chosen op on every edge. (NNI's default
        freeze deep-copies the supernet's chosen modules one by one, which takes seconds for this space.)"""
        self.validate(sample)
        return LWMISNNet(sample, self.in_channels, self.out_channels, self.p)

    # ------------------------------------------------------------------ hooks of the space contract
    def label_values(self) -> Dict[str, List[Any]]:
        """``{label: ops}`` in ``simplify()`` order."""
        return {edge_label(s, j, i): list(self.p.ops) for s in self.scopes for j in range(self.p.nodes)
                for i in range(j + 2)}

    def derive(self, probs: Dict[str, Dict[Any, float]]) -> Dict[str, str]:
        """The DARTS derivation of a relaxed architecture (:func:`derive_top2`): two inputs per node."""
        return derive_top2(probs, self.scopes, self.p.nodes)

    def alpha_group(self, label: str) -> str:
        """The ``alpha.png`` panel of ``label``: one per intermediate node (shared cells) or per block."""
        scope, node, _ = label.split("/")
        return f"{scope}/{node}" if self.p.share_cells else scope

    def cost_size(self) -> int:
        """Image size of :meth:`op_costs` (padded to a multiple of ``2**encoder_blocks``)."""
        size = self.p.cost_image_size or self.image_size or DEFAULT_COST_SIZE
        multiple = 2 ** self.p.encoder_blocks
        return int(math.ceil(size / multiple) * multiple)

    def op_costs(self) -> Dict[str, Dict[Any, Dict[str, float]]]:
        """``{label: {op: {"params", "flops"}}}``, summed over the blocks that use the label (module doc)."""
        size = self.cost_size()
        out: Dict[str, Dict[Any, Dict[str, float]]] = {}
        for block, level in self.blocks_spec:
            scope = "cell" if self.p.share_cells else block
            c, hw = self.p.channels * 2 ** level, size // 2 ** level
            for j in range(self.p.nodes):
                for i in range(j + 2):
                    costs = out.setdefault(edge_label(scope, j, i), {})
                    for op in self.p.ops:
                        n, f = op_cost(op, c, hw)
                        acc = costs.setdefault(op, {"params": 0.0, "flops": 0.0})
                        acc["params"] += n
                        acc["flops"] += f
        return out

    def kept_edges(self, sample: Dict[str, Any]) -> Dict[str, List[Tuple[int, int, str]]]:
        """``{scope: [(node, input, op), ...]}`` of the non-zero edges of ``sample``."""
        return {s: [(j, i, str(sample[edge_label(s, j, i)])) for j in range(self.p.nodes) for i in range(j + 2)
                    if sample.get(edge_label(s, j, i)) != "zero"] for s in self.scopes}

    def describe(self, sample: Dict[str, Any]) -> str:
        """``cell: n0=sep(1)+ghost(0); n1=...`` (inputs in DARTS numbering: 0, 1 = the two input blocks, 2+m =
        node m)."""
        parts = []
        for scope, edges in self.kept_edges(sample).items():
            nodes = []
            for j in range(self.p.nodes):
                ins = [f"{SHORT.get(op, op)}({i})" for jj, i, op in edges if jj == j]
                nodes.append(f"n{j}=" + ("+".join(ins) if ins else "0"))
            parts.append(f"{scope}: " + "; ".join(nodes))
        return " | ".join(parts)

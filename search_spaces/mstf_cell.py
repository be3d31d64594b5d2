"""The MSTF-NAS (MedNAS) cell search space as an NNI 3.0 ``ModelSpace``.

Method: Wang et al., "MedNAS: Multiscale Training-Free Neural Architecture Search for Medical Image Analysis",
IEEE Transactions on Evolutionary Computation 28(3):668-681, 2024, doi:10.1109/TEVC.2024.3352641.
No official code exists. The exact genotype follows the third-party reproduction described in the project's
METHODS.md section A4 (B blocks, each a normal cell of N nodes x (op, input) plus a multi-scale reduction cell
with 4 pooling genes: 14 genes per block and 42 in all for the defaults). Where the paper's choice is unknown it
is ours: the stem (3x3 conv + BN + ReLU, ``channels`` wide instead of the reproduction's 128), the pooling
padding (every branch gives ``ceil(H/2)``), the order of the label values, and the supernet's forward.

Network
-------
stem (3x3 conv ``in_channels -> C``, BN, ReLU), then for b = 0..B-1 a *normal cell* at ``C_b = channels * 2**b``
followed by a *reduction cell* ``C_b -> 2 C_b`` (stride 2), then the global average (``x.mean((2, 3))``) and a linear
layer to ``out_channels`` logits (one per class). Every image size works (a pooling branch maps ``H >= 1`` to
``ceil(H/2) >= 1``), but a *dead* sample is invalid: one whose normal cell outputs a constant because every loose
end is a ``zero`` op or reads only ``zero`` nodes (:func:`~.mstf_genotype.dead_cells`). Its logits do not depend on
the image, so :meth:`~MSTFCellSpace.is_valid` rejects it and no strategy builds, scores or trains it (about 15 %
of uniform random samples of the default space).

* Normal cell with N nodes. Node i (i = 1..N) applies ONE op from :data:`~.ops.OPS` to ONE input chosen from
  {0 = the cell input, 1..i-1 = earlier nodes}. The cell output is the mean of the outputs of the nodes that no
  later node uses as its input (the reproduction's rule). Before freezing, the inputs are undecided and the
  supernet averages all node outputs.
* Reduction cell: 4 branches, each a pooling type from :data:`~.ops.POOLS` (avg or max, kernel 2/3/4, stride 2,
  output ``ceil(H/2)``) followed by a 1x1 conv ``C -> C/4`` + BN; the 4 results are concatenated (C channels) and
  a 1x1 conv + BN + ReLU maps them to 2C.

Labels (stable public API; architecture JSON keys on them)
-----------------------------------------------------------
Blocks ``b`` and reduction branches ``k`` are 0-based (``b`` = position in ``model.blocks``, ``k`` = position in
``block.reduce.branches``). Nodes ``i`` are 1-based, because index 0 is the cell input: node ``i`` is exactly the
value other nodes give in their ``input`` label to read it.

* ``block{b}/normal/node{i}/op``    -- values :data:`~.ops.OP_NAMES` (8 names, ``'zero'`` .. ``'conv_7x1_1x7'``)
* ``block{b}/normal/node{i}/input`` -- values ``[0, 1, ..., i-1]`` (``block{b}/normal/node1/input`` is always 0)
* ``block{b}/reduce/branch{k}``     -- k = 0..3, values :data:`~.ops.POOL_NAMES`
  (``avg_2, avg_3, avg_4, max_2, max_3, max_4``)

:func:`arch_labels` lists them in ``simplify()`` order (per block: node1 op, node1 input, ..., branch0..3).
Every mutable of ``space.simplify()`` is an ``nni.mutable.Categorical``, so an architecture can be encoded as one
integer per label (an index into ``.values``). The default space (3 blocks x 5 nodes) has 42 labels and
``(8**5 * 5! * 6**4) ** 3`` ~ 1.3e29 architectures (:func:`space_size`).

Every label is independent of the others (any value of any label gives a network that runs), so the generic
operators of :class:`~mednas_nni.contracts.SearchSpace` (one-point crossover over the label order, per-label
mutation) and its canonical form (each value mapped to the label's own candidate object) are exact for this space.

Freezing
--------
``space.freeze(sample)`` validates the sample (raising ``nni.mutable.SampleValidationError`` if a label is missing
or a value is out of range) and builds a fresh :class:`MSTFCellNet`: a plain ``nn.Module`` with newly initialised
weights and no NNI mutable inside, which can be trained, ``state_dict``-saved and exported to ONNX. NNI's
"simplified" execution format re-creates the space under ``nni.nas.space.model_context(sample)``; that also
returns an :class:`MSTFCellNet` (through :meth:`MSTFCellSpace.create_fixed_module`). To reload a saved model:
``MSTFCellSpace(**same_kwargs).freeze(sample).load_state_dict(sd)``.

The input choice of a node is a :class:`NodeInputChoice`: a small ``MutableModule`` that registers
``nni.choice(label, list(range(i)))`` with ``add_mutable`` (a ``Categorical``; NNI's ``InputChoice`` would give a
``CategoricalMultiple``) and freezes to a plain :class:`ChosenInput`. The op choice is an NNI ``LayerChoice``.
This space is meant for multi-trial strategies (sample -> freeze -> train or score); NNI's one-shot strategies
(DARTS, ENAS, ...) do not know :class:`NodeInputChoice` and would reject it as a dangling mutable.
"""
import logging
from typing import Any, Dict, List, Optional, Tuple

import nni
import torch
from nni.mutable import Categorical, ensure_frozen, label_scope
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableModule
from nni.nas.space import current_model, model_context
from pydantic import Field
from torch import nn

from mednas_nni.contracts import PluginParams, SearchSpace

from ._common import check_image_size, check_spatial_dims, resolve_out_channels
from .mstf_genotype import NUM_BRANCHES, arch_labels, dead_cells, describe_arch, describe_short, space_size
from .ops import OP_NAMES, OPS, POOL_NAMES, POOLS

__all__ = [
    "MSTFCellParams", "MSTFCellSpace", "MSTFCellNet",
    "NormalCell", "ReductionCell", "MSTFBlock", "Node", "NodeInputChoice", "ChosenInput",
    "arch_labels", "describe_arch", "describe_short", "space_size", "NUM_BRANCHES",
]

_logger = logging.getLogger(__name__)


class MSTFCellParams(PluginParams):
    """Config ``params`` of the ``mstf_cell`` search space (``in_channels``/``out_channels`` come from the data)."""

    num_blocks: int = Field(3, ge=1, description="Blocks (normal cell + reduction cell); the width doubles per block.")
    num_nodes: int = Field(5, ge=1, description="Nodes per normal cell.")
    channels: int = Field(16, ge=4, multiple_of=4,
                          description="Width of the stem and the first block (a multiple of 4: 4 pooling branches).")


def _check_args(in_channels: int, out_channels: int, num_blocks: int, num_nodes: int, channels: int) -> None:
    for key, value, low in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                            ("num_blocks", num_blocks, 1), ("num_nodes", num_nodes, 1), ("channels", channels, 4)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key} must be an int >= {low}, got {value!r}")
    if channels % 4:
        raise ValueError(f"channels must be a multiple of 4 (4 reduction branches of C/4 each), got {channels}")


# --------------------------------------------------------------------------------------------------------------
# Input choice of a node: a Categorical, frozen to a plain module
# --------------------------------------------------------------------------------------------------------------

class ChosenInput(nn.Module):
    """Frozen input choice: returns ``states[index]`` (0 = cell input, i = output of node i)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = int(index)

    def forward(self, states: List[torch.Tensor]) -> torch.Tensor:
        return states[self.index]

    def extra_repr(self) -> str:
        return f"index={self.index}"


class NodeInputChoice(MutableModule):
    """Choose exactly one of ``n_candidates`` inputs; its mutable is ``Categorical(list(range(n)), label)``.

    Must be created inside the ``__init__`` of a ``ModelSpace`` (as NNI's own choices are). Inside
    ``model_context(sample)`` it is never instantiated: :meth:`create_fixed_module` returns a :class:`ChosenInput`.
    Before freezing, ``forward`` reads the dry-run (default) candidate, i.e. input 0.
    """

    def __init__(self, n_candidates: int, *, label: str):
        super().__init__()
        self.n_candidates = int(n_candidates)
        self.choice: Categorical = self.add_mutable(self._inner_choice(self.n_candidates, label))
        self._dry_run_index: int = int(ensure_frozen(self.choice))

    @staticmethod
    def _inner_choice(n_candidates: int, label: str) -> Categorical:
        return nni.choice(label, list(range(n_candidates)))

    @classmethod
    def create_fixed_module(cls, sample: Dict[str, Any], n_candidates: int, *, label: str) -> ChosenInput:  # type: ignore[override]
        # Created under the caller's label_scope, so the label resolves to the same full name as in the space.
        return ChosenInput(cls._inner_choice(int(n_candidates), label).freeze(sample))

    @torch.jit.unused
    @property
    def label(self) -> str:
        return self.choice.label

    def freeze(self, sample: Dict[str, Any]) -> ChosenInput:
        self.validate(sample)
        return ChosenInput(self.choice.freeze(sample))

    def forward(self, states: List[torch.Tensor]) -> torch.Tensor:
        return states[self._dry_run_index]

    def extra_repr(self) -> str:
        return f"n_candidates={self.n_candidates}, label={self.label!r}"


# --------------------------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------------------------

class Node(nn.Module):
    """One node of a normal cell: ``op(input(states))``. ``op`` is registered before ``input`` (label order)."""

    def __init__(self, op: nn.Module, input_choice: nn.Module):
        super().__init__()
        self.op = op
        self.input = input_choice

    @property
    def input_index(self) -> Optional[int]:
        """The chosen input index once frozen; ``None`` while the input is still a choice (supernet)."""
        return self.input.index if isinstance(self.input, ChosenInput) else None

    def forward(self, states: List[torch.Tensor]) -> torch.Tensor:
        return self.op(self.input(states))


class NormalCell(nn.Module):
    """DARTS-like normal cell with ``num_nodes`` nodes at ``channels`` channels (shape-preserving).

    Build it inside a ``label_scope`` (e.g. ``block0`` / ``normal``); node ``i`` gets the labels ``node{i}/op`` and
    ``node{i}/input`` relative to that scope. Output: the mean of the nodes no other node uses as input
    (:meth:`loose_ends`); for an unfrozen cell, the mean of all nodes.
    """

    def __init__(self, channels: int, num_nodes: int):
        super().__init__()
        self.channels, self.num_nodes = int(channels), int(num_nodes)
        nodes = []
        for i in range(1, self.num_nodes + 1):
            with label_scope(f"node{i}"):
                op = LayerChoice({name: OPS[name](self.channels) for name in OP_NAMES}, label="op")
                input_choice = NodeInputChoice(i, label="input")
            nodes.append(Node(op, input_choice))
        self.nodes = nn.ModuleList(nodes)

    def loose_ends(self) -> List[int]:
        """Node indices (1-based) whose output no node uses as input: the nodes averaged into the output.

        Computed from the current submodules, so it is right for whatever way the cell was frozen.
        """
        used = {node.input_index for node in self.nodes if node.input_index is not None}
        return [i for i in range(1, self.num_nodes + 1) if i not in used]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for node in self.nodes:
            states.append(node(states))
        loose = self.loose_ends()  # never empty: the last node is never an input
        if len(loose) == 1:
            return states[loose[0]]
        return torch.stack([states[i] for i in loose], dim=0).mean(dim=0)


class ReductionCell(nn.Module):
    """Multi-scale reduction cell ``C -> 2C``, stride 2, output size ``ceil(H/2)``.

    Build it inside a ``label_scope`` (e.g. ``block0`` / ``reduce``); branch ``k`` gets the label ``branch{k}``.
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels % NUM_BRANCHES:
            raise ValueError(f"channels must be a multiple of {NUM_BRANCHES}, got {channels}")
        self.channels = int(channels)
        quarter = self.channels // NUM_BRANCHES
        self.branches = nn.ModuleList([
            nn.Sequential(
                LayerChoice({name: POOLS[name]() for name in POOL_NAMES}, label=f"branch{k}"),
                nn.Conv2d(self.channels, quarter, kernel_size=1, bias=False),
                nn.BatchNorm2d(quarter),
            )
            for k in range(NUM_BRANCHES)
        ])
        self.fuse = nn.Sequential(
            nn.Conv2d(quarter * NUM_BRANCHES, 2 * self.channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(2 * self.channels),
            nn.ReLU(inplace=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


class MSTFBlock(nn.Module):
    """Normal cell at ``channels`` followed by a reduction cell to ``2 * channels``; labels under ``block{index}``."""

    def __init__(self, index: int, channels: int, num_nodes: int):
        super().__init__()
        with label_scope(f"block{index}"):
            with label_scope("normal"):
                self.normal = NormalCell(channels, num_nodes)
            with label_scope("reduce"):
                self.reduce = ReductionCell(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.normal(x))


def _build_network(module: nn.Module, in_channels: int, out_channels: int, num_blocks: int, num_nodes: int,
                   channels: int) -> None:
    """Build stem, blocks and classifier on ``module`` (shared by the space and the frozen network)."""
    _check_args(in_channels, out_channels, num_blocks, num_nodes, channels)
    module.in_channels, module.out_channels = in_channels, out_channels
    module.num_classes = out_channels     # the pre-Core-v2 name, still read by older callers
    module.num_blocks, module.num_nodes, module.channels = num_blocks, num_nodes, channels
    module.stem = nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=False),
    )
    module.blocks = nn.ModuleList([MSTFBlock(b, channels * 2 ** b, num_nodes) for b in range(num_blocks)])
    module.classifier = nn.Linear(channels * 2 ** num_blocks, out_channels)


def _network_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = module.stem(x)
    for block in module.blocks:
        x = block(x)
    return module.classifier(x.mean((2, 3)))


class MSTFCellNet(nn.Module):
    """A frozen MSTF-NAS network: a plain ``nn.Module`` without NNI mutables.

    Do not construct it directly: use ``MSTFCellSpace(...).freeze(sample)``. (It must be built inside
    ``nni.nas.space.model_context(sample)``.) ``arch`` holds the architecture dict it was built from.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 image_size: Optional[int] = None, num_blocks: int = 3, num_nodes: int = 5, channels: int = 16,
                 num_classes: Optional[int] = None):
        super().__init__()
        out_channels = resolve_out_channels("mstf_cell", out_channels, num_classes, warn=False)
        sample = current_model()
        if sample is None:
            raise RuntimeError("MSTFCellNet must be built by MSTFCellSpace(...).freeze(sample) "
                               "(or inside nni.nas.space.model_context(sample))")
        _build_network(self, in_channels, out_channels, num_blocks, num_nodes, channels)
        self.arch: Dict[str, Any] = {label: sample[label] for label in arch_labels(num_blocks, num_nodes)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _network_forward(self, x)

    def describe(self) -> str:
        """Readable multi-line text of this network's architecture (see :func:`describe_arch`)."""
        return describe_arch(self.arch)


class MSTFCellSpace(ModelSpace, SearchSpace):
    """MSTF-NAS search space: B x (normal cell of N nodes + multi-scale reduction cell). See the module docstring.

    Args:
        spatial_dims: 2 (2-D images only).
        in_channels: image channels.
        out_channels: logits, one per class.
        image_size: the data set's input size (unused: every sample runs at every size).
        num_blocks, num_nodes, channels: see :class:`MSTFCellParams`.
        num_classes: deprecated name of ``out_channels``.

    ``space.freeze(sample)`` returns a fresh :class:`MSTFCellNet`; ``space.simplify()`` holds only ``Categorical``
    mutables labelled as documented above. The forward of the unfrozen space is NNI's dry run (first op and input 0
    everywhere, all nodes averaged); it is not a trained supernet.
    """

    name = "mstf_cell"
    Params = MSTFCellParams
    tasks = ("classification",)

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 image_size: Optional[int] = None, num_blocks: int = 3, num_nodes: int = 5, channels: int = 16,
                 num_classes: Optional[int] = None):
        super().__init__()
        out_channels = resolve_out_channels("mstf_cell", out_channels, num_classes)
        check_spatial_dims("mstf_cell", spatial_dims)
        check_image_size("mstf_cell", image_size)
        self.spatial_dims, self.image_size = spatial_dims, image_size
        _build_network(self, in_channels, out_channels, num_blocks, num_nodes, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _network_forward(self, x)

    @classmethod
    def create_fixed_module(cls, sample: Dict[str, Any], *args: Any, **kwargs: Any) -> MSTFCellNet:  # type: ignore[override]
        """Called by NNI instead of ``__init__`` inside ``model_context(sample)``: build the frozen network."""
        with model_context(sample):
            return MSTFCellNet(*args, **kwargs)

    def freeze(self, sample: Dict[str, Any]) -> MSTFCellNet:  # type: ignore[override]
        """Validate ``sample`` (``SampleValidationError`` if invalid) and build a fresh :class:`MSTFCellNet`."""
        self.validate(sample)
        _logger.debug("freezing %s with %d labels", type(self).__name__, len(sample))
        return self.create_fixed_module(sample, **self.args)

    def labels(self) -> List[str]:
        """The architecture labels of this space, in ``simplify()`` order."""
        return arch_labels(self.num_blocks, self.num_nodes)

    def size(self) -> int:
        """Number of distinct architectures (samples) in this space."""
        return space_size(self.num_blocks, self.num_nodes)

    def is_valid(self, sample: Dict[str, Any]) -> Tuple[bool, str]:
        """``(False, reason)`` for a dead sample (a normal cell whose output is constant, see the module docstring)."""
        try:
            dead = dead_cells(sample, self.num_blocks, self.num_nodes)
        except (KeyError, TypeError, ValueError) as e:
            return False, f"not a sample of this space ({type(e).__name__}: {e})"
        if dead:
            return False, (f"dead cell: the normal cell of block{dead[0]} outputs a constant (every output node is "
                           "'zero' or reads only 'zero' nodes), so the logits do not depend on the image")
        return True, ""

    def describe(self, sample: Dict[str, Any]) -> str:
        """One short line (see :func:`describe_short`); :func:`describe_arch` gives the multi-line text."""
        return describe_short(sample)

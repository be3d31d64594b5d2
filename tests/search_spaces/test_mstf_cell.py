"""Tests of the MSTF-NAS search space (mednas_nni.search_spaces.mstf_cell / .ops): labels, freezing, shapes, GA."""
from __future__ import annotations

import io
import math
import random
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import nn

from nni.mutable import Categorical, Mutable, SampleValidationError
from nni.nas.nn.pytorch import MutableModule
from nni.nas.space import RawFormatModelSpace, SimplifiedModelSpace, model_context

from mednas_nni.search_spaces.mstf_cell import (
    MSTFCellNet,
    MSTFCellParams,
    MSTFCellSpace,
    arch_labels,
    describe_arch,
    describe_short,
    space_size,
)
from mednas_nni.search_spaces.ops import OP_NAMES, OPS, POOL_NAMES, POOLS, HalvingPool2d

SMALL = dict(out_channels=3, num_blocks=2, num_nodes=3, channels=8)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # These nets are tiny: intra-op threads only add overhead, and on a busy 2-core machine they made the
    # forward passes ~50x slower. Restore the setting for the other test modules.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _space(in_channels: int = 1, **kw) -> MSTFCellSpace:
    return MSTFCellSpace(in_channels=in_channels, **{**SMALL, **kw})


SPACE_1 = _space(1)
SPACE_3 = _space(3)
SIMPLE = SPACE_1.simplify()


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _assert_plain(model: nn.Module) -> None:
    """No NNI mutable module and no NNI Mutable attribute anywhere, root included."""
    for name, module in model.named_modules():
        assert not isinstance(module, (Mutable, MutableModule)), f"{name or '<root>'} is {type(module).__name__}"
        for attr, value in vars(module).items():
            assert not isinstance(value, Mutable), f"{name}.{attr} is a Mutable"


def _sample(**overrides) -> dict:
    """A valid sample of SPACE_1: sep_conv_3x3, input 0, avg_3 everywhere, then the overrides."""
    s = {}
    for label in SIMPLE:
        s[label] = "sep_conv_3x3" if label.endswith("/op") else 0 if label.endswith("/input") else "avg_3"
    s.update({k.replace("__", "/"): v for k, v in overrides.items()})
    return s


# ---------------------------------------------------------------------------------------------------------- labels

def test_label_set_is_pinned():
    expected = set()
    for b in range(2):
        for i in (1, 2, 3):
            expected |= {f"block{b}/normal/node{i}/op", f"block{b}/normal/node{i}/input"}
        expected |= {f"block{b}/reduce/branch{k}" for k in range(4)}
    assert set(SIMPLE) == expected
    assert len(SIMPLE) == 2 * (3 * 2 + 4) == 20
    assert list(SIMPLE) == arch_labels(2, 3) == SPACE_1.labels()   # documented simplify() order


def test_every_mutable_is_categorical_with_documented_values():
    for label, mutable in SIMPLE.items():
        assert type(mutable) is Categorical, (label, type(mutable))
        assert mutable.label == label
        if label.endswith("/op"):
            assert list(mutable.values) == OP_NAMES
        elif label.endswith("/input"):
            i = int(label.split("/node")[1].split("/")[0])
            assert list(mutable.values) == list(range(i))
        else:
            assert list(mutable.values) == POOL_NAMES == ["avg_2", "avg_3", "avg_4", "max_2", "max_3", "max_4"]


def test_default_space_has_42_labels_and_documented_size():
    space = MSTFCellSpace()
    assert len(space.simplify()) == 42
    assert space.size() == space_size(3, 5) == (8 ** 5 * math.factorial(5) * 6 ** 4) ** 3
    assert MSTFCellSpace.name == "mstf_cell"
    assert MSTFCellSpace.Params is MSTFCellParams


def test_ops_are_shape_preserving():
    x = torch.randn(2, 8, 9, 7)
    assert list(OPS) == OP_NAMES and len(OP_NAMES) == 8
    for name, make in OPS.items():
        assert make(8)(x).shape == x.shape, name
    assert torch.count_nonzero(OPS["zero"](8)(x)) == 0


# ------------------------------------------------------------------------------------------- hypothesis: freeze all

SAMPLES = st.fixed_dictionaries({label: st.sampled_from(list(m.values)) for label, m in SIMPLE.items()})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=SAMPLES)
def test_every_sampled_arch_freezes_runs_and_is_plain(sample):
    for space, x in ((SPACE_1, torch.randn(2, 1, 28, 28)), (SPACE_3, torch.randn(2, 3, 64, 64))):
        model = space.freeze(sample)
        assert isinstance(model, MSTFCellNet)
        _assert_plain(model)
        assert model.arch == sample
        assert _n_params(model) <= _n_params(space)
        model.eval()
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, SMALL["out_channels"])
        assert torch.isfinite(y).all()


def test_nni_execution_formats_give_the_plain_network():
    sample = _sample()
    for fmt in (RawFormatModelSpace, SimplifiedModelSpace):
        model = fmt.from_model(SPACE_1).freeze(sample).executable_model()
        assert isinstance(model, MSTFCellNet)
        _assert_plain(model)
    with model_context(sample):                     # what NNI's "simplified" format does in a trial
        model = MSTFCellSpace(in_channels=1, **SMALL)
    assert isinstance(model, MSTFCellNet) and model.arch == sample


def test_random_sample_is_frozen_plain_network():
    model = SPACE_1.random()
    assert isinstance(model, MSTFCellNet)
    assert SPACE_1.contains(model.arch)


def test_state_dict_round_trip_and_onnx_export():
    sample = _sample(block0__normal__node2__op="dil_conv_5x5", block0__normal__node2__input=1,
                     block1__reduce__branch2="max_4")
    a, b = SPACE_1.freeze(sample).eval(), SPACE_1.freeze(sample).eval()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    ort = pytest.importorskip("onnxruntime")
    onnx_buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(a, (x,), onnx_buf, input_names=["x"], dynamo=False)
    out = ort.InferenceSession(onnx_buf.getvalue()).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), a(x), atol=1e-5)


# ------------------------------------------------------------------------------------------------ reduction cell

@pytest.mark.parametrize("name", POOL_NAMES)
def test_every_pool_gives_ceil_half(name):
    pool = POOLS[name]()
    for h in (1, 2, 3, 7, 14, 28, 64):
        x = torch.randn(1, 4, h, h)
        assert pool(x).shape == (1, 4, math.ceil(h / 2), math.ceil(h / 2)), (name, h)
    assert pool(torch.randn(1, 4, 7, 2)).shape == (1, 4, 4, 1)        # non-square


@pytest.mark.parametrize("name", POOL_NAMES)
def test_padding_never_counts_as_data(name):
    # A constant image must pool to the same constant: avg ignores the zero padding, max never picks -inf.
    for h in (1, 2, 3, 7):
        y = POOLS[name]()(torch.full((1, 2, h, h), -3.0))
        assert torch.allclose(y, torch.full_like(y, -3.0)), (name, h)
    assert HalvingPool2d("max", 2)(torch.tensor([[[[1.0, 5.0, 2.0]]]])).flatten().tolist() == [5.0, 2.0]
    assert HalvingPool2d("avg", 3)(torch.tensor([[[[1.0, 5.0, 3.0]]]])).flatten().tolist() == [3.0, 4.0]


def test_reduction_cell_shapes_in_the_network():
    model = SPACE_1.freeze(_sample(block0__reduce__branch0="avg_2", block0__reduce__branch1="max_4"))
    x = model.stem(torch.randn(2, 1, 7, 7))
    y = model.blocks[0](x)
    assert y.shape == (2, 16, 4, 4)                  # C -> 2C, ceil(7/2)
    assert model.blocks[1](y).shape == (2, 32, 2, 2)


# ---------------------------------------------------------------------------------------- unused-node averaging

def _node_outputs(cell, x):
    outs = {}
    hooks = [node.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o))
             for k, node in enumerate(cell.nodes, start=1)]
    try:
        with torch.no_grad():
            y = cell(x)
    finally:
        for h in hooks:
            h.remove()
    return y, outs


def test_cell_output_is_mean_of_unused_nodes():
    # node2 reads node1, node3 reads the cell input: loose ends = {2, 3}.
    sample = _sample(block0__normal__node2__input=1, block0__normal__node3__input=0,
                     block0__normal__node3__op="dil_conv_3x3")
    cell = SPACE_1.freeze(sample).blocks[0].normal.eval()
    assert cell.loose_ends() == [2, 3]
    x = torch.randn(2, 8, 14, 14)
    y, outs = _node_outputs(cell, x)
    assert torch.allclose(y, (outs[2] + outs[3]) / 2, atol=1e-6)
    assert not torch.allclose(y, outs[3])


def test_cell_output_is_the_last_node_alone_on_a_chain():
    # node2 uses node1 and node3 uses node2: only node3 is unused, so the cell output IS node3's output.
    sample = _sample(block0__normal__node2__input=1, block0__normal__node3__input=2)
    model = SPACE_1.freeze(sample).eval()
    cell = model.blocks[0].normal
    assert cell.loose_ends() == [3]
    x = torch.randn(2, 8, 14, 14)
    y, outs = _node_outputs(cell, x)
    assert torch.equal(y, outs[3])
    # and node3 really computed op(node2): chain is input -> node1 -> node2 -> node3
    with torch.no_grad():
        n1 = cell.nodes[0].op(x)
        n2 = cell.nodes[1].op(n1)
        assert torch.allclose(y, cell.nodes[2].op(n2), atol=1e-6)


def test_two_node_cell_node2_uses_node1():
    space = _space(1, num_nodes=2)
    sample = {label: m.values[0] for label, m in space.simplify().items()}
    sample.update({"block0/normal/node1/op": "sep_conv_5x5", "block0/normal/node2/op": "conv_7x1_1x7",
                   "block0/normal/node2/input": 1})
    cell = space.freeze(sample).blocks[0].normal.eval()
    x = torch.randn(1, 8, 9, 9)
    y, outs = _node_outputs(cell, x)
    assert torch.equal(y, outs[2])


def test_supernet_averages_all_nodes():
    cell = SPACE_1.blocks[0].normal
    assert cell.loose_ends() == [1, 2, 3]
    with torch.no_grad():
        assert SPACE_1(torch.randn(2, 1, 28, 28)).shape == (2, 3)


# ------------------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("label, value", [
    ("block0/normal/node2/input", 2),          # node2 may only read 0 or 1
    ("block1/normal/node3/input", -1),
    ("block0/normal/node1/op", "max_pool_3x3"),
    ("block1/reduce/branch3", "avg_5"),
])
def test_freeze_rejects_out_of_range_values(label, value):
    sample = _sample()
    sample[label] = value
    with pytest.raises(SampleValidationError):
        SPACE_1.freeze(sample)
    assert not SPACE_1.contains(sample)


def test_freeze_rejects_missing_label():
    sample = _sample()
    del sample["block1/reduce/branch0"]
    with pytest.raises(SampleValidationError):
        SPACE_1.freeze(sample)


def test_params_validation():
    assert MSTFCellParams().model_dump() == {"num_blocks": 3, "num_nodes": 5, "channels": 16}
    for bad in ({"channels": 6}, {"num_blocks": 0}, {"num_nodes": 0}, {"channels": 0}, {"depth": 3}):
        with pytest.raises(ValidationError):
            MSTFCellParams(**bad)
    with pytest.raises(ValueError):
        MSTFCellSpace(channels=6)


def test_net_needs_a_sample():
    with pytest.raises(RuntimeError):
        MSTFCellNet()


# --------------------------------------------------------------------------------------------------- describe

def test_describe():
    sample = _sample(block0__normal__node2__input=1, block0__normal__node3__op="identity",
                     block1__reduce__branch0="max_2")
    text = describe_arch(sample)
    assert text == SPACE_1.freeze(sample).describe()
    lines = text.splitlines()
    assert lines[0] == "block0" and "block1" in lines
    assert "node1 = sep_conv_3x3(input)" in lines[1]
    assert "node2 = sep_conv_3x3(node1)" in lines[2]
    assert "node3 = identity(input)" in lines[3]
    assert lines[4].strip() == "output = mean(node2, node3)"
    assert lines[5].strip() == "reduce: avg_3 | avg_3 | avg_3 | avg_3 -> concat -> 1x1 conv (x2 channels)"
    assert "reduce: max_2 | avg_3 | avg_3 | avg_3" in text
    short = SPACE_1.describe(sample)
    assert short == describe_short(sample) and "\n" not in short
    assert short.startswith("block0: node1=sep_conv_3x3(in) node2=sep_conv_3x3(node1) node3=identity(in) | ")
    assert "; block1: " in short and short.endswith("| max_2 avg_3 avg_3 avg_3")


# ------------------------------------------------------------------------------------------- contract (Core v2)

def test_constructor_contract():
    space = MSTFCellSpace(spatial_dims=2, in_channels=3, out_channels=4, image_size=28, **{
        k: v for k, v in SMALL.items() if k != "out_channels"})
    assert space.out_channels == space.num_classes == 4 and space.image_size == 28
    assert space.tasks == ("classification",)
    with pytest.raises(ValueError, match=r"mstf_cell: spatial_dims: expected 2 .*got 3"):
        MSTFCellSpace(spatial_dims=3)
    with pytest.raises(ValueError, match="image_size"):
        MSTFCellSpace(image_size=0)
    with pytest.warns(DeprecationWarning, match="num_classes"):
        old = MSTFCellSpace(in_channels=1, num_classes=5, num_blocks=1, num_nodes=2, channels=4)
    model = old.freeze({k: m.values[0] for k, m in old.simplify().items()})
    assert model.out_channels == 5 and model(torch.randn(1, 1, 8, 8)).shape == (1, 5)


def test_a_live_sample_is_valid_for_every_size():
    sample = _sample()
    assert SPACE_1.is_valid(sample) == (True, "")
    assert MSTFCellSpace(image_size=1, **SMALL).is_valid(sample) == (True, "")
    with torch.no_grad():
        assert SPACE_1.freeze(sample).eval()(torch.randn(1, 1, 1, 1)).shape == (1, 3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=SAMPLES, b=SAMPLES, seed=st.integers(0, 2 ** 32 - 1), prob=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_generic_ga_operators_give_canonical_samples_of_the_space(a, b, seed, prob):
    """The mixin's one-point crossover and per-label mutation: children are in the space and canonical."""
    rng = random.Random(seed)
    c1, c2 = SPACE_1.crossover(a, b, rng)
    m = SPACE_1.mutate(c1, prob, rng)
    for child in (c1, c2, m):
        assert list(child) == list(SIMPLE)                            # every label, in simplify() order
        assert SPACE_1.contains(child) and SPACE_1.canonicalize(child) == child
    # one cut: each label of a child comes from one parent, and the pair together keeps every gene
    assert all({c1[k], c2[k]} == {a[k], b[k]} for k in SIMPLE)
    assert SPACE_1.mutate(a, 0.0, rng) == a
    if prob == 1.0:
        assert all(m[k] != c1[k] for k in SIMPLE if len(SIMPLE[k].values) > 1)

"""The ``lw_misn`` space (Auto-LW-MISN): ops and their costs against the paper's Table 1, shapes for every block
configuration, labels, the DARTS derivation (two inputs per node), one-line errors."""
from __future__ import annotations

import functools
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mednas_nni.errors import ConfigError
from mednas_nni.search_spaces.lw_misn import LWMISNSpace, derive_top2, edge_label
from mednas_nni.search_spaces.lw_ops import OP_NAMES, build_op, op_cost

# Table 1 (32 channels, 32x32, stride 1): params in k, FLOPs in M (multiply-accumulates)
TABLE1 = {"sep_conv_3x3": (2.81, 2.68), "dil_conv_3x3": (1.41, 1.34), "ghost_conv": (0.74, 0.67),
          "sk_conv": (2.44, 0.65), "shuffle_conv_3x3": (0.30, 0.20)}


@pytest.mark.parametrize("op", OP_NAMES)
def test_op_costs_match_table1_at_32_channels_32px(op):
    params, flops = op_cost(op, 32, 32)
    if op not in TABLE1:                                  # identity, max-pool, zero: "—" in Table 1
        assert (params, flops) == (0, 0)
        return
    p_k, f_m = TABLE1[op]
    assert params / 1e3 == pytest.approx(p_k, rel=0.08)   # BN counting / SK's fc width differ (lw_ops doc table)
    assert flops / 1e6 == pytest.approx(f_m, rel=0.10)    # SK: the paper also counts its attention products
    if op != "sk_conv":
        assert flops / 1e6 == pytest.approx(f_m, abs=0.01)   # the same multiply-accumulates as the paper
    # the paper's mean over the parametric ops is 1.54 k / 1.11 M; ours
    mean_p = sum(op_cost(o, 32, 32)[0] for o in TABLE1) / len(TABLE1) / 1e3
    assert mean_p == pytest.approx(1.54, rel=0.05)


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("channels", [4, 8, 12, 32])
def test_every_op_keeps_shape_at_stride_1(op, channels):
    x = torch.randn(2, channels, 9, 14)
    assert build_op(op, channels)(x).shape == x.shape


def test_cost_counts_agree_with_the_module():
    for op in OP_NAMES:
        m = build_op(op, 16)
        assert op_cost(op, 16, 8)[0] == sum(p.numel() for p in m.parameters())


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(enc=st.integers(1, 3), mid=st.integers(1, 3), share=st.booleans(), extra=st.integers(0, 13),
       seed=st.integers(0, 99))
def test_supernet_and_frozen_output_size_equals_input_size_for_every_block_config(enc, mid, share, extra, seed):
    size = 2 ** (enc + 1) + extra                      # any size whose U bottom keeps >= 2 px
    torch.manual_seed(seed)
    space = LWMISNSpace(in_channels=3, out_channels=2, image_size=size, encoder_blocks=enc, middle_blocks=mid,
                        decoder_blocks=enc, channels=4, share_cells=share)
    x = torch.randn(2, 3, size, size + 3)
    assert space(x).shape == (2, 2, size, size + 3)
    rng = random.Random(seed)
    sample = {k: rng.choice(v) for k, v in space.label_values().items()}
    net = space.freeze(sample)
    assert net(x).shape == (2, 2, size, size + 3)
    n_cells = 1 if share else 2 * enc + mid
    assert len(space.label_values()) == n_cells * (2 + 3 + 4 + 5)      # 14 edges per cell (2 inputs, 4 nodes)


def test_labels_are_the_simplify_labels_and_costs_cover_them():
    space = LWMISNSpace(image_size=64, channels=8)
    assert list(space.label_values()) == list(space.simplify())
    assert list(space.simplify())[:3] == ["cell/node0/edge0", "cell/node0/edge1", "cell/node1/edge0"]
    costs = space.op_costs()
    assert set(costs) == set(space.label_values())
    # a shared label costs the sum over the 7 blocks (2/3/2) at their own widths and resolutions
    per_block = sum(op_cost("sep_conv_3x3", 8 * 2 ** lvl, 64 // 2 ** lvl)[0] for lvl in (0, 1, 2, 2, 2, 1, 0))
    assert costs["cell/node2/edge3"]["sep_conv_3x3"]["params"] == per_block
    unshared = LWMISNSpace(image_size=64, channels=8, share_cells=False).op_costs()
    assert sum(c["sep_conv_3x3"]["flops"] for k, c in unshared.items() if k.endswith("node1/edge2")) == \
        costs["cell/node1/edge2"]["sep_conv_3x3"]["flops"]


@functools.lru_cache(maxsize=None)
def _small_space(share: bool) -> LWMISNSpace:
    return LWMISNSpace(image_size=32, channels=4, encoder_blocks=1, middle_blocks=1, decoder_blocks=1,
                       share_cells=share)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.booleans())
def test_derivation_keeps_exactly_two_inputs_per_node(seed, share):
    space = _small_space(share)
    g = torch.Generator().manual_seed(seed)
    probs = {k: dict(zip(v, torch.softmax(3 * torch.randn(len(v), generator=g), 0).tolist()))
             for k, v in space.label_values().items()}
    sample = space.derive(probs)
    assert set(sample) == set(space.label_values())
    for scope in space.scopes:
        for j in range(4):
            ops = [sample[edge_label(scope, j, i)] for i in range(j + 2)]
            assert sum(op != "zero" for op in ops) == 2
            for i, op in enumerate(ops):       # a kept edge has its strongest non-zero op
                if op != "zero":
                    dist = probs[edge_label(scope, j, i)]
                    assert dist[op] == max(p for v, p in dist.items() if v != "zero")
    if seed % 5 == 0:                          # a few derived networks are built and run
        assert space.freeze(sample)(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_derivation_ranks_edges_by_their_best_non_zero_op():
    probs = {edge_label("cell", 0, 0): {"sep_conv_3x3": 0.2, "zero": 0.8},
             edge_label("cell", 0, 1): {"sep_conv_3x3": 0.6, "zero": 0.4}}
    for i in range(3):
        probs[edge_label("cell", 1, i)] = {"sep_conv_3x3": [0.5, 0.1, 0.3][i], "zero": [0.5, 0.9, 0.7][i]}
    s = derive_top2(probs, ["cell"], nodes=2)
    assert s == {"cell/node0/edge0": "sep_conv_3x3", "cell/node0/edge1": "sep_conv_3x3",
                 "cell/node1/edge0": "sep_conv_3x3", "cell/node1/edge1": "zero", "cell/node1/edge2": "sep_conv_3x3"}


def test_derived_network_is_lighter_than_the_supernet_and_describes_itself():
    space = LWMISNSpace(image_size=32, channels=8)
    probs = {k: {v: (0.9 if v == "sep_conv_3x3" else 0.1 / 7) for v in vs} for k, vs in space.label_values().items()}
    sample = space.derive(probs)
    net = space.freeze(sample)
    n_net, n_super = sum(p.numel() for p in net.parameters()), sum(p.numel() for p in space.parameters())
    assert n_net < n_super / 3
    assert space.describe(sample).startswith("cell: n0=sep(0)+sep(1); n1=")
    assert not any(isinstance(m, torch.nn.Module) and type(m).__name__ == "LayerChoice" for m in net.modules())


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=16, encoder_blocks=4, decoder_blocks=4), r"encoder_blocks: expected at most 3 for 16 px"),
    (dict(image_size=64, channels=6), r"channels: expected a multiple of 4"),
    (dict(image_size=64, decoder_blocks=3), r"params: expected decoder_blocks equal to encoder_blocks"),
    (dict(image_size=64, ops=["zero", "zero"]), r"ops: expected distinct values"),
])
def test_bad_configurations_are_one_line_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match) as e:
        LWMISNSpace(**kwargs)
    assert "\n" not in str(e.value)

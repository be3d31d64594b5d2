"""NAS-SCAM space (``scam_unet``) and its attention cells: shapes and ranges of every op and map, one α set per
cell (or two shared ones), ``none`` edges absent from derived networks, parallel vs serial combination."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nni.mutable import label_scope
from nni.nas.space import model_context
from nni.nas.strategy import DARTS

from mednas_nni.search_spaces.attention_cells import (CAM_OPS, HIDDEN_CHANNELS, NONE, SAM_OPS, SCAM, AttentionCell,
                                                      ChannelAttention, SpatialAttention, _candidates, cell_edges,
                                                      edge_label)
from mednas_nni.search_spaces.scam_unet import SCAMUNetParams, SCAMUNetSpace, arch_labels

EDGES = [edge_label(i, j) for i, j in cell_edges()]
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _frozen_scam(sam: dict[str, str], cam: dict[str, str], channels: int, combination: str = "parallel") -> SCAM:
    sample = {f"m/sam/{k}": v for k, v in sam.items()} | {f"m/cam/{k}": v for k, v in cam.items()}
    with model_context(sample), label_scope("m"):
        return SCAM(channels, combination)


@pytest.mark.parametrize("kind,ops", [("sam", SAM_OPS), ("cam", CAM_OPS)])
@SLOW
@given(b=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(1, 19), w=st.integers(1, 19),
       out=st.sampled_from([1, HIDDEN_CHANNELS]))
def test_every_op_keeps_the_maps_shape(kind, ops, b, c, h, w, out):
    dims = 2 if kind == "sam" else 1
    x = torch.randn(b, c, h, w) if dims == 2 else torch.randn(b, c, h * w)
    for name, op in _candidates(ops, dims, c, out, torch.nn.Sigmoid).items():
        y = op.eval()(x)
        assert y.shape == (b, out, *x.shape[2:]), name
        if name == NONE:
            assert not y.any()


@SLOW
@given(seed=st.integers(0, 2 ** 31 - 1), b=st.integers(1, 3), c=st.integers(1, 24), h=st.integers(2, 17),
       w=st.integers(2, 17), train=st.booleans())
def test_sam_and_cam_maps_have_their_shapes_and_lie_in_unit_interval(seed, b, c, h, w, train):
    rng = random.Random(seed)
    sam = {e: rng.choice(list(SAM_OPS)) for e in EDGES}
    cam = {e: rng.choice(list(CAM_OPS)) for e in EDGES}
    torch.manual_seed(seed)
    module = _frozen_scam(sam, cam, c).train(train)
    x = 10 * torch.randn(b, c, h, w)
    if train and b * c == 1:
        return      # BatchNorm1d (CAM) cannot train on one value per channel
    with torch.no_grad():
        ms, mc = module.sam.attention_map(x), module.cam.attention_map(x)
        y = module(x)
    assert ms.shape == (b, 1, h, w) and mc.shape == (b, c, 1, 1) and y.shape == x.shape
    assert ms.min() >= 0 and ms.max() <= 1 and mc.min() >= 0 and mc.max() <= 1
    # an edge into the last node contributes at most 1/3 of the map (sigmoid / 3)
    live = sum(sam[edge_label(3, j)] != NONE for j in range(3))
    assert ms.max() <= live / 3 + 1e-6


@pytest.mark.parametrize("share", [False, True])
def test_one_alpha_set_per_cell_or_two_when_shared(share):
    space = SCAMUNetSpace(in_channels=1, out_channels=2, root_width=4, share_alpha=share)
    supernet = DARTS().mutate_model(space)
    mixed = [m for m in supernet.modules() if hasattr(m, "_arch_alpha")]
    assert len(mixed) == 8 * 2 * len(EDGES)                  # every edge of every cell is relaxed
    by_set: dict[str, set[int]] = {}
    for m in mixed:
        scope, kind, _ = m.label.split("/")
        by_set.setdefault(f"{scope}/{kind}", set()).add(id(m._arch_alpha))
    assert all(len(ids) == len(EDGES) for ids in by_set.values())     # one α vector per edge within a set
    all_ids = set().union(*by_set.values())
    assert len(by_set) == (2 if share else 2 * 8)               # independent α sets = 2 x module instances
    assert len(all_ids) == len(by_set) * len(EDGES)              # no α shared between sets
    assert set(space.alpha_sets()) == set(by_set)
    sam_alpha = {m.label: m._arch_alpha.shape[0] for m in mixed}
    assert all(n == len(SAM_OPS if "/sam/" in k else CAM_OPS) for k, n in sam_alpha.items())


def test_labels_are_scoped_per_module_and_shared_on_request():
    assert list(SCAMUNetSpace(in_channels=1, out_channels=2, root_width=4).simplify()) == arch_labels(False)
    shared = SCAMUNetSpace(in_channels=1, out_channels=2, root_width=4, share_alpha=True)
    assert list(shared.simplify()) == arch_labels(True) and len(arch_labels(True)) == 12
    assert arch_labels(False)[:2] == ["down1/sam/node1_in0", "down1/sam/node2_in0"] and len(arch_labels()) == 96


def test_a_derived_none_edge_is_absent_from_the_network():
    space = SCAMUNetSpace(in_channels=3, out_channels=3, root_width=4)
    full = {k: "conv3" for k in space.labels()}
    dropped = dict(full, **{"down2/sam/node3_in1": NONE, "up4/cam/node2_in0": NONE, "down2/sam/node1_in0": NONE})
    net_full, net_drop = space.freeze(full), space.freeze(dropped)
    sam_cell = net_drop.unet.attention["down2"].sam.cell
    assert "node3_in1" not in sam_cell.ops and "node1_in0" not in sam_cell.ops and "node2_in0" in sam_cell.ops
    assert sam_cell.edges[EDGES.index("node3_in1")] is None
    assert "node2_in0" not in net_drop.unet.attention["up4"].cam.cell.ops
    names = [n for n, _ in net_drop.named_modules()]
    assert not any("node3_in1" in n for n in names if n.startswith("unet.attention.down2.sam"))
    n_full = sum(p.numel() for p in net_full.parameters())
    n_drop = sum(p.numel() for p in net_drop.parameters())
    assert n_drop < n_full
    y = net_drop.eval()(torch.randn(2, 3, 24, 24))
    assert y.shape == (2, 3, 24, 24) and torch.isfinite(y).all()


def _constant_cell_(cell: AttentionCell, bias: float) -> None:
    """Make the only live edge (node3_in0, conv1) output ``sigmoid(bias)`` everywhere (eval-mode BN = identity)."""
    op = cell.ops["node3_in0"]
    conv, bn = op[0], op[1]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(bias)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        bn.weight.fill_(1.0)
        bn.bias.zero_()


@pytest.mark.parametrize("combination", ["parallel", "serial"])
def test_serial_and_parallel_compute_what_they_claim(combination):
    only = {e: (("conv1" if e == "node3_in0" else NONE)) for e in EDGES}
    module = _frozen_scam(only, only, channels=2, combination=combination).eval()
    _constant_cell_(module.sam.cell, 0.0)                       # SAM map = sigmoid(0) / 3 = 1/6
    _constant_cell_(module.cam.cell, 2.0)                       # CAM map = sigmoid(2) / 3
    a, b = 1 / 6, float(torch.sigmoid(torch.tensor(2.0))) / 3
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]], [[-1.0, 4.0], [0.0, -3.0]]]])
    with torch.no_grad():
        y = module(x)
    if combination == "parallel":       # max(SAM(x), CAM(x)) element-wise: the larger factor for x > 0
        expected = torch.where(x > 0, x * max(a, b), x * min(a, b))
    else:                               # CAM(SAM(x)) = x * a * b
        expected = x * a * b
    torch.testing.assert_close(y, expected)
    if combination == "parallel":
        assert not torch.allclose(y, x * a * b)


def test_supernet_relaxes_and_runs_and_params_are_validated():
    space = SCAMUNetSpace(in_channels=1, out_channels=2, root_width=4, sam_ops=["none", "conv3"],
                          cam_ops=["conv3", "none"])
    assert space.label_values()["down1/cam/node1_in0"] == ["none", "conv3"]          # table order
    supernet = DARTS().mutate_model(space)
    y = supernet(torch.randn(2, 1, 20, 20))
    y.sum().backward()
    alphas = [m._arch_alpha for m in supernet.modules() if hasattr(m, "_arch_alpha")]
    assert all(a.grad is not None for a in alphas[:4])
    with pytest.raises(ValueError, match="root_width"):
        SCAMUNetParams(root_width=10, norm_groups=4)
    with pytest.raises(ValueError, match="distinct names"):
        SCAMUNetParams(sam_ops=["conv7"])
    with pytest.raises(ValueError, match="combination"):
        SCAMUNetParams(combination="both")


def test_spatial_and_channel_attention_multiply_their_maps():
    only = {e: "conv3" for e in EDGES}
    with model_context({f"s/sam/{e}": v for e, v in only.items()}), label_scope("s"):
        sam = SpatialAttention(3).eval()
    with model_context({f"c/cam/{e}": v for e, v in only.items()}), label_scope("c"):
        cam = ChannelAttention().eval()
    x = torch.randn(2, 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(sam(x), x * sam.attention_map(x))
        torch.testing.assert_close(cam(x), x * cam.attention_map(x))


@pytest.mark.parametrize("kind", ["none", "se", "cbam"])
def test_fixed_attention_peers_share_the_backbone(kind):
    from mednas_nni.search_spaces.attention_fixed import CBAM, fixed_attention
    from mednas_nni.search_spaces.attention_unet import MODULE_NAMES, AttentionUNet

    net = AttentionUNet(3, 3, 4, fixed_attention(kind)).eval()
    plain = AttentionUNet(3, 3, 4, None)
    assert list(net.attention) == list(MODULE_NAMES)
    assert (sum(p.numel() for p in net.parameters()) > sum(p.numel() for p in plain.parameters())) == (kind != "none")
    assert net(torch.randn(2, 3, 21, 18)).shape == (2, 3, 21, 18)
    x = torch.randn(2, 6, 5, 5)
    y = CBAM(6, reduction=4)(x)
    assert y.shape == x.shape and (y.abs() <= x.abs() + 1e-6).all()      # two sigmoid gates in (0, 1)

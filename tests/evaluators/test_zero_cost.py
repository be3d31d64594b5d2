"""Tests of mednas_nni.evaluators.zero_cost against hand-computed values and the reference definitions."""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mednas_nni.errors import MedNASError
from mednas_nni.evaluators.zero_cost import (
    JACOB_COV_K,
    PROXIES,
    ProxyError,
    compute_proxies,
    flops,
    grad_norm,
    jacob_cov,
    log_synflow,
    num_params,
    snip,
    synflow,
)

ALL = ["jacob_cov", "synflow", "log_synflow", "grad_norm", "snip", "params", "flops"]


def _conv_net(bn: bool = True, dropout: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4, 3)]
    return nn.Sequential(*layers)


def _batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (n, 1), generator=g)  # MedMNIST-style (N, 1) labels
    return x, y


class _ZeroNet(nn.Module):
    """Every op is 'zero': the logits are the classifier bias whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)) * 0)


class _ConstantNet(nn.Module):
    """Output not connected to the input or any parameter (no autograd graph at all)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3, device=x.device)


# ------------------------------------------------------------------------------------------ synflow
def test_synflow_single_linear_is_sum_abs_weights():
    layer = nn.Linear(5, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0, 3.0],
                                         [-1.5, 2.5, -0.25, 4.0, -1.0],
                                         [0.75, 0.0, -3.5, 1.0, 2.0]]))
    expected = 1 + 2 + 0.5 + 0 + 3 + 1.5 + 2.5 + 0.25 + 4 + 1 + 0.75 + 0 + 3.5 + 1 + 2
    assert synflow(layer, torch.randn(7, 5)) == pytest.approx(expected, rel=1e-12)


def test_synflow_two_layer_linear_is_twice_the_flow():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 4, bias=False), nn.ReLU(), nn.Linear(4, 3, bias=False))
    w1 = net[0].weight.detach().double().numpy()
    w2 = net[2].weight.detach().double().numpy()
    assert (w1 < 0).any() and (w2 < 0).any()
    # R = 1ᵀ|W2||W1|1; dR/dW1 = (|W2|ᵀ1) 1ᵀ and dR/dW2 = 1 (|W1|1)ᵀ, so each layer contributes R.
    flow = float(np.ones(3) @ np.abs(w2) @ np.abs(w1) @ np.ones(6))
    per_w1 = np.abs(np.abs(w1) * np.outer(np.abs(w2).T @ np.ones(3), np.ones(6))).sum()
    per_w2 = np.abs(np.abs(w2) * np.outer(np.ones(3), np.abs(w1) @ np.ones(6))).sum()
    assert per_w1 == pytest.approx(flow) and per_w2 == pytest.approx(flow)
    assert synflow(net, torch.randn(2, 6)) == pytest.approx(2 * flow, rel=1e-12)


def test_synflow_and_log_synflow_use_only_sample_shape():
    torch.manual_seed(2)
    net = _conv_net()
    a = synflow(net, torch.randn(5, 1, 8, 8))
    b = synflow(net, torch.zeros(1, 1, 8, 8))
    assert a == b > 0
    assert log_synflow(net, torch.randn(3, 1, 8, 8)) == pytest.approx(math.log(a), rel=1e-12)


def test_synflow_ignores_batchnorm():
    torch.manual_seed(3)
    with_bn = _conv_net(bn=True)
    without_bn = _conv_net(bn=False)
    convs_linears = [m for m in with_bn if isinstance(m, (nn.Conv2d, nn.Linear))]
    targets = [m for m in without_bn if isinstance(m, (nn.Conv2d, nn.Linear))]
    for src, dst in zip(convs_linears, targets, strict=True):
        dst.load_state_dict(src.state_dict())
    with torch.no_grad():  # BN that would clearly change the flow if it were applied
        for m in with_bn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(-3.0)
                m.bias.fill_(2.0)
                m.running_mean.fill_(0.5)
                m.running_var.fill_(4.0)
    x = torch.randn(2, 1, 8, 8)
    for mode in (True, False):
        with_bn.train(mode)
        assert synflow(with_bn, x) == synflow(without_bn, x)
    # Sanity check that the BN above is not a no-op on the all-ones input in eval mode.
    with_bn.eval()
    assert not torch.allclose(with_bn(torch.ones(1, 1, 8, 8)), without_bn.eval()(torch.ones(1, 1, 8, 8)))


def test_synflow_counts_conv3d_weights():
    net = nn.Sequential(nn.Conv3d(2, 3, 1, bias=False), nn.Flatten())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, -0.5], [-3.0, 1.5]]).reshape(3, 2, 1, 1, 1))
    voxels = 2 * 3 * 4
    # Every output voxel of channel o is Σ_c |W[o, c]|, so dR/dW[o, c] = voxels and the score is voxels·Σ|W|.
    expected = voxels * (1 + 2 + 0.5 + 0.5 + 3 + 1.5)
    assert synflow(net, torch.randn(2, 2, 2, 3, 4)) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------- jacob_cov
def test_jacob_cov_identical_jacobian_rows_closed_form():
    torch.manual_seed(4)
    n, d = 5, 7
    net = nn.Linear(d, 3)  # J = 1ᵀW for every sample: C is all ones, eigenvalues {n, 0, ..., 0}
    k = JACOB_COV_K
    expected = -((math.log(n + k) + 1 / (n + k)) + (n - 1) * (math.log(k) + 1 / k))
    x = torch.randn(n, d)
    assert jacob_cov(net, x) == pytest.approx(expected, rel=1e-7)
    assert not x.requires_grad and x.grad is None


def test_jacob_cov_differs_for_distinct_jacobians():
    torch.manual_seed(5)
    x, y = _batch()
    value = compute_proxies(_conv_net(), x, y, ["jacob_cov"])["jacob_cov"]
    n = x.shape[0]
    k = JACOB_COV_K
    worst = -((math.log(n + k) + 1 / (n + k)) + (n - 1) * (math.log(k) + 1 / k))
    assert math.isfinite(value) and value > worst  # decorrelated Jacobians score higher


def test_jacob_cov_constant_jacobian_rows_is_nan_and_proxy_error():
    net = nn.Linear(6, 3)
    with torch.no_grad():
        net.weight.fill_(1.0)  # J row = column sums = 3 for every input dim: zero variance -> NaN
    x = torch.randn(4, 6)
    assert math.isnan(jacob_cov(net, x))
    with pytest.raises(ProxyError, match=r"^proxy jacob_cov is not finite \(nan\) for this architecture$"):
        compute_proxies(net, x, torch.zeros(4, 1, dtype=torch.long), ["jacob_cov"])


# -------------------------------------------------------------------------------- grad_norm / snip
def _tiny_linear_case():
    net = nn.Linear(3, 2)
    w = np.array([[0.5, -1.0, 2.0], [-0.25, 0.75, -1.5]])
    b = np.array([0.1, -0.2])
    with torch.no_grad():
        net.weight.copy_(torch.tensor(w))
        net.bias.copy_(torch.tensor(b))
    x = np.array([[1.0, 2.0, -1.0], [0.0, -1.0, 0.5], [2.0, 0.5, 0.25], [-1.0, 1.0, 1.0]])
    t = np.array([[0], [1], [1], [0]])
    # Mean cross-entropy: dL/dW = (softmax(xWᵀ + b) - onehot(t))ᵀ x / N.
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(2)[t[:, 0]]
    grad_w = (p - onehot).T @ x / len(x)
    inputs = torch.tensor(x, dtype=torch.float32)
    targets = torch.tensor(t, dtype=torch.long)
    return net, inputs, targets, w, grad_w


def test_grad_norm_hand_computed():
    net, x, y, _, grad_w = _tiny_linear_case()
    expected = float(np.linalg.norm(grad_w))
    assert grad_norm(net, x, y) == pytest.approx(expected, rel=1e-5)
    assert grad_norm(net, x, y.reshape(-1)) == pytest.approx(expected, rel=1e-5)
    doubled = grad_norm(net, x, y, loss_fn=lambda out, tgt: 2 * F.cross_entropy(out, tgt))
    assert doubled == pytest.approx(2 * expected, rel=1e-5)


def test_snip_hand_computed():
    net, x, y, w, grad_w = _tiny_linear_case()
    expected = float(np.abs(w * grad_w).sum())
    assert snip(net, x, y) == pytest.approx(expected, rel=1e-5)
    net.weight.requires_grad_(False)  # the reference's fresh mask parameter scores frozen weights too
    assert snip(net, x, y) == pytest.approx(expected, rel=1e-5)
    assert not net.weight.requires_grad


def _reference_snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The reference's weight-mask formulation (Conv2d/Linear only), for comparison."""
    import copy

    net = copy.deepcopy(net)

    def conv_fwd(self, inp):
        return F.conv2d(inp, self.weight * self.weight_mask, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def lin_fwd(self, inp):
        return F.linear(inp, self.weight * self.weight_mask, self.bias)

    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in layers:
        m.weight_mask = nn.Parameter(torch.ones_like(m.weight))
        m.weight.requires_grad = False
        m.forward = types.MethodType(conv_fwd if isinstance(m, nn.Conv2d) else lin_fwd, m)
    F.cross_entropy(net(x), y.reshape(-1)).backward()
    total = 0.0
    for m in layers:
        total = total + torch.sum(torch.abs(m.weight_mask.grad))
    return total.item()


def test_snip_matches_reference_mask_formulation():
    torch.manual_seed(6)
    net = _conv_net()
    x, y = _batch()
    assert snip(net, x, y) == pytest.approx(_reference_snip(net, x, y), rel=1e-6)


def test_grad_norm_and_snip_count_conv3d():
    class Head(nn.Module):
        def forward(self, v):
            return v.mean((2, 3, 4))  # parameter-free: every score comes from the Conv3d

    net = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), Head())
    x = torch.randn(4, 1, 4, 4, 4)
    y = torch.tensor([[0], [1], [2], [1]])
    assert grad_norm(net, x, y) > 0
    assert snip(net, x, y) > 0


# ------------------------------------------------------------------------------------ params/flops
def test_params_counts_trainable_only():
    net = _conv_net()
    assert num_params(net) == sum(p.numel() for p in net.parameters())
    net[0].weight.requires_grad_(False)
    assert num_params(net) == sum(p.numel() for p in net.parameters()) - net[0].weight.numel()


def test_flops_conv_and_linear_are_two_times_macs_per_sample():
    # torch's FlopCounterMode counts 2 FLOPs per multiply-accumulate and ignores the bias add.
    assert flops(nn.Conv2d(1, 4, 3, padding=1), torch.randn(3, 1, 8, 8)) == 2 * 4 * 1 * 9 * 64
    assert flops(nn.Linear(10, 3), torch.randn(5, 10)) == 2 * 10 * 3
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.MaxPool2d(2),
                        nn.Upsample(scale_factor=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2), nn.BatchNorm1d(2))
    assert net.training
    assert flops(net, torch.randn(4, 1, 8, 8)) == 2 * 4 * 9 * 64 + 2 * 4 * 2
    assert net.training


# -------------------------------------------------------------------------------- compute_proxies
def test_compute_proxies_leaves_original_untouched():
    torch.manual_seed(7)
    net = _conv_net()
    net[0].bias.requires_grad_(False)
    x, y = _batch()
    for training in (True, False):
        net.train(training)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        flags = {k: p.requires_grad for k, p in net.named_parameters()}
        assert (before["0.weight"] < 0).any()
        x_before = x.clone()
        values = compute_proxies(net, x, y, ALL)
        assert list(values) == ALL
        assert all(math.isfinite(v) for v in values.values())
        after = net.state_dict()
        assert before.keys() == after.keys()
        for k in before:
            assert before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]), k
        assert {k: p.requires_grad for k, p in net.named_parameters()} == flags
        assert all(p.grad is None for p in net.parameters())
        assert all(m.training == training for m in net.modules())
        assert torch.equal(x, x_before) and not x.requires_grad


def test_compute_proxies_unknown_name_lists_known():
    net = _conv_net()
    x, y = _batch()
    with pytest.raises(ValueError) as info:
        compute_proxies(net, x, y, ["synflow", "snipp"])
    message = str(info.value)
    assert "snipp" in message and "did you mean 'snip'" in message
    for name in ALL:
        assert name in message
    assert set(PROXIES) == set(ALL)


@pytest.mark.parametrize("net_cls", [_ZeroNet, _ConstantNet])
def test_compute_proxies_degenerate_net_raises_proxy_error(net_cls):
    net = net_cls()
    x, y = _batch()
    for names in (["jacob_cov"], ["log_synflow"], ALL):
        with pytest.raises(ProxyError) as info:
            compute_proxies(net, x, y, names)
        assert isinstance(info.value, MedNASError) and info.value.exit_code == 1
        assert "is not finite" in str(info.value)
    # Proxies that stay finite on such a net are plain zeros, not crashes.
    assert compute_proxies(net, x, y, ["synflow", "grad_norm", "snip"]) == {
        "synflow": 0.0, "grad_norm": 0.0, "snip": 0.0}


def test_compute_proxies_deterministic_and_grad_mode_independent():
    torch.manual_seed(8)
    net = _conv_net(dropout=0.3)
    x, y = _batch(seed=3)
    torch.manual_seed(123)
    first = compute_proxies(net, x, y, ALL)
    torch.manual_seed(123)
    second = compute_proxies(net, x, y, ALL)
    assert first == second
    torch.manual_seed(123)
    with torch.no_grad():  # a caller inside no_grad still gets real gradients
        third = compute_proxies(net, x, y, ALL)
    assert third == first
    assert compute_proxies(net, x, y, "params") == {"params": first["params"]}

"""The zero-cost proxies themselves (see :mod:`mednas_nni.evaluators.zero_cost` for the references, the registry
and the deliberate differences from the reference implementation, pinned at SamsungLabs/zero-cost-nas a43bfbc).

Every proxy is ``fn(net, inputs, targets=None, loss_fn=None) -> float`` and works on its own deep copy of ``net``.
"""
from __future__ import annotations

import copy
import logging
import math
import types
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["SCORED_LAYERS", "JACOB_COV_K", "jacob_cov", "synflow", "log_synflow", "grad_norm", "snip", "num_params",
           "flops"]

_logger = logging.getLogger(__name__)

#: Layer types whose ``weight`` the per-weight proxies sum over (reference: Conv2d and Linear only).
SCORED_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

#: The constant ``k`` of the reference ``jacob_cov.eval_score``.
JACOB_COV_K = 1e-5

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------------
# helpers (reference: predictive.copynet / p_utils.get_layer_metric_array / predictive.sum_arr)
# --------------------------------------------------------------------------------------------------
def _identity_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:  # reference: ``no_op``
    return x


def _copy_net(net: nn.Module, device: torch.device, *, bn: bool) -> nn.Module:
    """Deep copy of ``net`` on ``device``, gradients cleared; BatchNorm bypassed when ``bn`` is False.

    Like the reference ``copynet`` the copy keeps the original's train/eval mode, and ``bn=False``
    replaces the BatchNorm layers' ``forward`` with the identity.
    """
    model = copy.deepcopy(net).to(device)
    if not bn:
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.forward = types.MethodType(_identity_forward, module)  # type: ignore[method-assign]
    model.zero_grad(set_to_none=True)
    return model


def _scored_layers(net: nn.Module) -> Iterator[nn.Module]:
    for module in net.modules():
        if isinstance(module, SCORED_LAYERS) and isinstance(getattr(module, "weight", None), torch.Tensor):
            yield module


def _sum_arr(arr: list[torch.Tensor]) -> float:
    """Reference ``sum_arr``: per-layer ``torch.sum`` added in layer order, then ``.item()``."""
    total: float | torch.Tensor = 0.0
    for tensor in arr:
        total = total + torch.sum(tensor)
    return float(total.item()) if isinstance(total, torch.Tensor) else float(total)


def _prepare_inputs(inputs: torch.Tensor) -> torch.Tensor:
    # A plain copy: usable by autograd even if the caller made ``inputs`` under inference_mode.
    return inputs.detach().clone()


def _prepare_targets(targets: torch.Tensor, device: torch.device) -> torch.Tensor:
    targets = targets.detach().to(device)
    if targets.ndim == 2 and targets.shape[1] == 1:  # MedMNIST labels come as (N, 1)
        targets = targets.reshape(-1)
    return targets


def _loss_backward(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None,
                   loss_fn: LossFn | None) -> None:
    if targets is None:
        raise ValueError("this proxy needs targets (a batch of labels); got None")
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    x = _prepare_inputs(inputs)
    with torch.enable_grad():
        outputs = model(x)
        loss = loss_fn(outputs, _prepare_targets(targets, x.device))
        if loss.requires_grad:
            loss.backward()
        else:
            _logger.debug("loss does not depend on any parameter; all gradients are zero")


# --------------------------------------------------------------------------------------------------
# proxies
# --------------------------------------------------------------------------------------------------
def _jacob_cov_score(jacobs: np.ndarray) -> float:
    """Reference ``jacob_cov.eval_score``; NaN where numpy fails (the reference also returns NaN)."""
    k = JACOB_COV_K
    with np.errstate(all="ignore"):
        try:
            corrs = np.corrcoef(jacobs)
            eigvals, _ = np.linalg.eig(corrs)
        except (ValueError, ArithmeticError) as err:  # np.linalg.LinAlgError subclasses ValueError
            _logger.debug("jacob_cov: %s: %s", type(err).__name__, err)
            return math.nan
        # eig of the symmetric correlation matrix may come back complex with ~0 imaginary parts.
        eigvals = np.real(eigvals)
        score = -np.sum(np.log(eigvals + k) + 1.0 / (eigvals + k))
    return float(score)


def jacob_cov(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None,
              loss_fn: LossFn | None = None) -> float:
    """Jacobian-covariance score (Mellor et al. 2021); higher is better.

    Reference: ``foresight/pruners/measures/jacob_cov.py`` (``bn=True``: BatchNorm kept; the copy keeps
    the caller's train/eval mode). ``y = net(x)`` is back-propagated with ``ones_like(y)``, the input
    gradient is reshaped to ``J`` of shape ``(N, D)``, ``C = corrcoef(J)`` and, with the eigenvalues
    ``v`` of ``C`` (real parts) and ``k = 1e-5``, the score is ``-Σ (log(v + k) + 1/(v + k))``.

    Args:
        net: The classifier (not modified).
        inputs: A batch ``(N, C, *spatial)``; needs ``N >= 2``.
        targets: Unused (registry signature).
        loss_fn: Unused (registry signature).

    Returns:
        The score, or NaN when the correlation matrix is undefined (for example constant Jacobian rows).
    """
    model = _copy_net(net, inputs.device, bn=True)
    x = _prepare_inputs(inputs).requires_grad_(True)
    with torch.enable_grad():
        y = model(x)
        if y.requires_grad:
            y.backward(torch.ones_like(y))
    if x.grad is None:
        _logger.debug("jacob_cov: output does not depend on the input; Jacobian is zero")
        jacobs = np.zeros((x.shape[0], int(np.prod(x.shape[1:]))), dtype=np.float32)
    else:
        jacobs = x.grad.detach().reshape(x.shape[0], -1).cpu().numpy()
    return _jacob_cov_score(jacobs)


def synflow(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None,
            loss_fn: LossFn | None = None) -> float:
    """Synaptic-flow score (Tanaka et al. 2020) summed over all scored weights.

    Reference: ``foresight/pruners/measures/synflow.py`` (measure ``synflow``, ``bn=False``: every
    BatchNorm's ``forward`` is the identity). On the copy the sign of every ``state_dict`` tensor is
    recorded and the tensor replaced by its absolute value, the network is cast to ``float64``, one
    all-ones input of shape ``(1, *inputs.shape[1:])`` is fed through, ``R = Σ outputs`` is
    back-propagated and the score is ``Σ |θ ⊙ ∂R/∂θ|``; the signs are then restored on the copy.

    Args:
        net: The classifier (not modified).
        inputs: Only its per-sample shape and its device are used.
        targets: Unused (registry signature).
        loss_fn: Unused (registry signature).

    Returns:
        The score (0 when no scored weight receives a gradient; ``inf`` when float64 overflows).
    """
    model = _copy_net(net, inputs.device, bn=False)
    with torch.no_grad():
        state = model.state_dict()
        # Record every sign before any abs_(): tied tensors appear under several names.
        signs = {name: torch.sign(t) for name, t in state.items() if t.dtype != torch.bool}
        for name in signs:
            state[name].abs_()
    model.double()
    ones = torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=inputs.device)
    with torch.enable_grad():
        output = model(ones)
        if output.requires_grad:
            torch.sum(output).backward()
        else:
            _logger.debug("synflow: output does not depend on any parameter; score is 0")
    arr = [
        torch.abs(layer.weight * layer.weight.grad) if layer.weight.grad is not None
        else torch.zeros_like(layer.weight)
        for layer in _scored_layers(model)
    ]
    with torch.no_grad():  # reference ``nonlinearize`` (on the copy; the original was never touched)
        for name, t in model.state_dict().items():
            if name in signs and "weight_mask" not in name:
                t.mul_(signs[name].to(t.dtype))
    return _sum_arr(arr)


def log_synflow(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None,
                loss_fn: LossFn | None = None) -> float:
    """Natural log of :func:`synflow` (``-inf`` for a zero score, NaN for NaN).

    Args:
        net: The classifier (not modified).
        inputs: Only its per-sample shape and its device are used.
        targets: Unused (registry signature).
        loss_fn: Unused (registry signature).

    Returns:
        ``math.log(synflow)``; ``-inf`` when synflow is 0 (``math.log`` itself would raise).
    """
    value = synflow(net, inputs)
    if value > 0:
        return math.log(value)
    if value == 0:
        return -math.inf
    return math.nan


def grad_norm(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
              loss_fn: LossFn | None = None) -> float:
    """Sum over scored layers of the Euclidean norm of ``∂L/∂W`` (Abdelfattah et al. 2021).

    Reference: ``foresight/pruners/measures/grad_norm.py`` (``bn=True``; the copy keeps the caller's
    train/eval mode). A layer whose weight gets no gradient (frozen or unused) contributes 0.

    Args:
        net: The classifier (not modified).
        inputs: A batch ``(N, C, *spatial)``.
        targets: Labels ``(N,)`` or ``(N, 1)`` (flattened).
        loss_fn: ``loss_fn(logits, targets)``; default :func:`torch.nn.functional.cross_entropy`.

    Returns:
        The summed gradient norm.
    """
    model = _copy_net(net, inputs.device, bn=True)
    _loss_backward(model, inputs, targets, loss_fn)
    arr = [
        layer.weight.grad.norm() if layer.weight.grad is not None else torch.zeros_like(layer.weight)
        for layer in _scored_layers(model)
    ]
    return _sum_arr(arr)


def snip(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
         loss_fn: LossFn | None = None) -> float:
    """SNIP connection sensitivity ``Σ |θ ⊙ ∂L/∂θ|`` over scored weights (Lee et al. 2019).

    Reference: ``foresight/pruners/measures/snip.py`` (``bn=True``), which back-propagates into a
    ``weight_mask`` of ones and takes ``|∂L/∂mask|``. That equals ``|θ ⊙ ∂L/∂θ|`` exactly, which is
    computed here from the weights' own gradients (scored weights are made trainable on the copy,
    as the reference's fresh mask parameters always are).

    Args:
        net: The classifier (not modified).
        inputs: A batch ``(N, C, *spatial)``.
        targets: Labels ``(N,)`` or ``(N, 1)`` (flattened).
        loss_fn: ``loss_fn(logits, targets)``; default :func:`torch.nn.functional.cross_entropy`.

    Returns:
        The summed saliency.
    """
    model = _copy_net(net, inputs.device, bn=True)
    layers = list(_scored_layers(model))
    for layer in layers:
        layer.weight.requires_grad_(True)
    _loss_backward(model, inputs, targets, loss_fn)
    arr = [
        torch.abs(layer.weight.grad * layer.weight) if layer.weight.grad is not None
        else torch.zeros_like(layer.weight)
        for layer in layers
    ]
    return _sum_arr(arr)


def num_params(net: nn.Module, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
               loss_fn: LossFn | None = None) -> float:
    """Number of trainable parameters (reference ``p_utils.count_parameters``).

    Args:
        net: The network (not modified).
        inputs: Unused (registry signature).
        targets: Unused (registry signature).
        loss_fn: Unused (registry signature).

    Returns:
        ``Σ p.numel()`` over parameters with ``requires_grad``, shared parameters counted once.
    """
    return float(sum(p.numel() for p in net.parameters() if p.requires_grad))


def flops(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None,
          loss_fn: LossFn | None = None) -> float:
    """FLOPs of one forward pass of a single sample, counted by :class:`torch.utils.flop_counter.FlopCounterMode`.

    Uses torch's convention **FLOPs = 2 × MACs** for convolutions and matrix products (a
    ``Conv2d(1, 4, 3, padding=1)`` on ``1×8×8`` counts ``2·4·1·9·64 = 4608``); bias additions,
    normalisation, activations and pooling are not counted. The sample ``inputs[:1]`` is run through an
    eval-mode copy under ``no_grad`` (eval mode so that BatchNorm accepts a single sample).

    torch's counter is used rather than NNI's ``FlopsProfiler`` because the latter has no formula for
    pooling/upsampling modules and leaves its hooks attached when it fails (see the project's NNI
    notes), while the torch counter intercepts aten ops and so works on any module.

    Args:
        net: The classifier (not modified).
        inputs: A batch; only its first sample is used.
        targets: Unused (registry signature).
        loss_fn: Unused (registry signature).

    Returns:
        The FLOP count of one sample.
    """
    model = _copy_net(net, inputs.device, bn=True).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(_prepare_inputs(inputs[:1]))
    return float(counter.get_total_flops())

"""Zero-cost (training-free) proxies for scoring candidate architectures.

Every proxy works on any :class:`torch.nn.Module` classifier mapping a batch ``(N, C, *spatial)`` to
logits ``(N, K)``, on whatever device the inputs live on, and never touches the caller's network: each
proxy runs on its own :func:`copy.deepcopy` (weights, BatchNorm statistics, ``requires_grad`` flags,
``.grad`` and train/eval mode of the original are left exactly as they were).

The definitions follow the reference implementation of

    M. S. Abdelfattah, A. Mehrotra, Ł. Dudziak, N. D. Lane. "Zero-Cost Proxies for Lightweight NAS".
    ICLR 2021. https://github.com/SamsungLabs/zero-cost-nas (pinned at commit a43bfbc), files
    ``foresight/pruners/predictive.py`` (driver, ``copynet``, ``sum_arr``),
    ``foresight/pruners/p_utils.py`` (``get_layer_metric_array``, ``count_parameters``) and
    ``foresight/pruners/measures/{jacob_cov,synflow,grad_norm,snip}.py``.

Proxies (registry :data:`PROXIES`):

* ``jacob_cov`` -- Mellor et al., "Neural Architecture Search without Training", ICML 2021 (the
  Jacobian-covariance score of the first arXiv version, as used by Abdelfattah et al.).
* ``synflow`` / ``log_synflow`` -- Tanaka et al., "Pruning neural networks without any data by
  iteratively conserving synaptic flow", NeurIPS 2020.
* ``grad_norm`` -- sum of per-layer gradient norms (Abdelfattah et al. 2021).
* ``snip`` -- Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019.
* ``params`` -- number of trainable parameters; ``flops`` -- FLOPs of one forward pass of one sample.

Per-weight proxies are summed over the ``weight`` of every layer of the types in :data:`SCORED_LAYERS`.
Differences from the reference, all deliberate:

* the reference visits only ``nn.Conv2d`` and ``nn.Linear``; here ``nn.Conv1d`` and ``nn.Conv3d`` are
  scored too (3-D medical volumes), and for ``synflow`` every BatchNorm (``BatchNorm1d/2d/3d``,
  ``SyncBatchNorm``) is bypassed, not only ``BatchNorm1d/2d``;
* ``snip`` computes ``|θ ⊙ ∂L/∂θ|`` from the weights' own gradients instead of patching ``forward``
  with ``weight * weight_mask``; with a mask of ones the two are the same floating-point numbers
  (``∂L/∂mask = ∂L/∂(θ·1) · θ``), and this form works for any layer type;
* a network whose output (or loss) does not depend on the input/weights at all gets zero gradients
  instead of the ``RuntimeError`` the reference raises in ``backward()``;
* targets of shape ``(N, 1)`` (MedMNIST) are flattened to ``(N,)`` before the loss.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from mednas_nni.errors import MedNASError, did_you_mean

from .zero_cost_proxies import (JACOB_COV_K, SCORED_LAYERS, LossFn, flops, grad_norm, jacob_cov, log_synflow,
                                num_params, snip, synflow)

__all__ = [
    "PROXIES",
    "SCORED_LAYERS",
    "JACOB_COV_K",
    "ProxyError",
    "jacob_cov",
    "synflow",
    "log_synflow",
    "grad_norm",
    "snip",
    "num_params",
    "flops",
    "compute_proxies",
]

_logger = logging.getLogger(__name__)


class ProxyError(MedNASError):
    """A zero-cost proxy is NaN or infinite for an architecture (for example an all-``zero`` cell).

    The search records the architecture as failed with this message instead of crashing.
    """

    exit_code = 1


#: Registry name -> proxy. Every entry can be called as ``fn(net, inputs, targets, loss_fn=loss_fn)``.
PROXIES: dict[str, Callable[..., float]] = {
    "jacob_cov": jacob_cov,
    "synflow": synflow,
    "log_synflow": log_synflow,
    "grad_norm": grad_norm,
    "snip": snip,
    "params": num_params,
    "flops": flops,
}


def compute_proxies(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, names: Sequence[str],
                    loss_fn: LossFn | None = None) -> dict[str, float]:
    """Compute the requested proxies, each on its own deep copy of ``net`` (reference ``find_measures``).

    Args:
        net: The classifier (not modified).
        inputs: A batch ``(N, C, *spatial)`` on the device to compute on.
        targets: Its labels, ``(N,)`` or ``(N, 1)``.
        names: Registry names (see :data:`PROXIES`), computed in this order; duplicates computed once.
        loss_fn: ``loss_fn(logits, targets)`` for ``grad_norm``/``snip``; default cross-entropy.

    Returns:
        ``{name: value}`` in the order of ``names``.

    Raises:
        ValueError: A name is not in :data:`PROXIES`.
        ProxyError: A value is NaN or infinite (a numerically degenerate architecture).
    """
    if isinstance(names, str):
        names = [names]
    unknown = [name for name in names if name not in PROXIES]
    if unknown:
        raise ValueError(
            f"unknown zero-cost proxy {unknown[0]!r}; known: {', '.join(PROXIES)}"
            f"{did_you_mean(unknown[0], PROXIES)}"
        )
    values: dict[str, float] = {}
    for name in names:
        if name in values:
            continue
        start = time.perf_counter()
        value = float(PROXIES[name](net, inputs, targets, loss_fn=loss_fn))
        _logger.debug("proxy %s = %r (%.3f s)", name, value, time.perf_counter() - start)
        if not math.isfinite(value):
            raise ProxyError(f"proxy {name} is not finite ({value}) for this architecture")
        values[name] = value
    return values

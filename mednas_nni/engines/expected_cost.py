"""Expected parameters and FLOPs of a relaxed (one-shot) network, differentiable w.r.t. the architecture
probabilities: the cost term of complexity-constrained DARTS (Auto-LW-MISN)."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["ExpectedCost"]


class ExpectedCost:
    """E[params] and E[FLOPs] of a relaxed network under ``probs`` (Auto-LW-MISN eq. 5-6 and 8-11).

    Built from the space's cost hook ``op_costs() -> {label: {value: {"params": n, "flops": f}}}`` (a label's cost
    is already summed over every module that shares it). ``self(probs)`` is differentiable w.r.t. the probabilities:
    ``E = Σ_label Σ_value p(value) · cost(value)``. ``p0``/``f0`` are the expectations under the uniform distribution
    (the untrained supernet): the normalisers of the cc_darts penalty, so that ``E/P0`` is 1 at the start.
    """

    def __init__(self, op_costs: dict[str, dict[Any, dict[str, float]]], label_values: dict[str, list[Any]]):
        self.values = {k: list(label_values[k]) for k in op_costs if k in label_values}
        missing = [k for k in op_costs if k not in label_values]
        if missing:
            raise ValueError(f"op_costs: labels {missing} are not labels of the space")
        self.params = {k: torch.tensor([float(op_costs[k].get(v, {}).get("params", 0.0)) for v in vs],
                                       dtype=torch.float64) for k, vs in self.values.items()}
        self.flops = {k: torch.tensor([float(op_costs[k].get(v, {}).get("flops", 0.0)) for v in vs],
                                      dtype=torch.float64) for k, vs in self.values.items()}
        uniform = {k: torch.full((len(vs),), 1.0 / len(vs), dtype=torch.float64) for k, vs in self.values.items()}
        e = self(uniform)
        self.p0, self.f0 = max(float(e["params"]), 1.0), max(float(e["flops"]), 1.0)

    @classmethod
    def from_space(cls, space: Any) -> ExpectedCost | None:
        """From ``space.op_costs()``; None when the space does not know its costs."""
        costs = space.op_costs() if hasattr(space, "op_costs") else None
        if not costs:
            return None
        return cls(costs, {k: list(v) for k, v in space.label_values().items()})

    def __call__(self, probs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"params": E, "flops": E}`` (scalar tensors, float32 on the probabilities' device)."""
        ref = next(iter(probs.values())) if probs else torch.zeros(())
        out = {}
        for name, table in (("params", self.params), ("flops", self.flops)):
            terms = [(probs[k].to(torch.float64) * c.to(probs[k].device)).sum() for k, c in table.items() if k in probs]
            total = torch.stack(terms).sum() if terms else torch.zeros((), dtype=torch.float64, device=ref.device)
            out[name] = total.to(ref.dtype if ref.is_floating_point() else torch.float32)
        return out

    def of_sample(self, sample: dict[str, Any]) -> dict[str, float]:
        """Params and FLOPs of the searched edges of one architecture (one-hot probabilities)."""
        onehot = {k: torch.tensor([1.0 if v == sample.get(k) else 0.0 for v in vs], dtype=torch.float64)
                  for k, vs in self.values.items()}
        return {k: float(v) for k, v in self(onehot).items()}

"""The search-space contract: an NNI ``ModelSpace`` plus the hooks every strategy honours.

A search space is an ``nni.nas.nn.pytorch.ModelSpace`` subclass that also inherits :class:`SearchSpace`. The core
builds it as ``Cls(spatial_dims=..., in_channels=..., out_channels=..., image_size=..., **params)`` (MONAI argument
vocabulary; ``image_size`` is the data set's input size, for spaces whose validity depends on it) and only ever
freezes it with samples that went through :meth:`SearchSpace.canonicalize`; every hash, cache and record of the
core is of the canonical sample. Labels of ``simplify()`` are public, stable API (architecture JSON keys on them).

Hooks (all optional, defaults below): :meth:`canonicalize`, :meth:`is_valid`, :meth:`describe` and
:meth:`op_costs` (per-choice parameter/FLOP costs for cost-aware strategies). ``tasks`` says which task kinds the
space can build networks for; the core refuses any other with one line.
"""
from __future__ import annotations

from typing import Any, ClassVar

from .params import NoParams, PluginParams

__all__ = ["SearchSpace", "label_values"]


def label_values(model_space: Any) -> dict[str, list[Any]]:
    """``{label: values}`` of every ``Categorical`` of ``model_space.simplify()`` (others raise a TypeError)."""
    from nni.mutable import Categorical

    out: dict[str, list[Any]] = {}
    for label, mutable in model_space.simplify().items():
        if not isinstance(mutable, Categorical):
            raise TypeError(f"search space label '{label}' is a {type(mutable).__name__}; mednas strategies encode "
                            "architectures as one categorical choice per label")
        out[label] = list(mutable.values)
    return out


class SearchSpace:
    """Mixin for an NNI ``ModelSpace``: the plugin metadata and the hooks (defaults shown).

    Example::

        class MySpace(ModelSpace, SearchSpace):
            name = "my_space"
            Params = MyParams
            tasks = ("classification",)

            def __init__(self, spatial_dims=2, in_channels=1, out_channels=2, image_size=None, width=16): ...
    """

    name: ClassVar[str]
    Params: ClassVar[type[PluginParams]] = NoParams
    #: task kinds (task plugin names) this space can build networks for
    tasks: ClassVar[tuple[str, ...]] = ("classification",)

    def label_values(self) -> dict[str, list[Any]]:
        """``{label: candidate values}`` (categorical labels only)."""
        return label_values(self)

    def canonicalize(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The canonical form of ``sample``: equal networks give equal dicts (and equal hashes).

        Default: each value replaced by the equal candidate object of its label (a JSON round trip through NNI's
        manager turns ``0.0`` into ``0``), keys in label order. Spaces with inactive genes reset them here.
        """
        values = self.label_values()
        out = {k: next((v for v in values[k] if v == sample[k]), sample[k]) for k in values if k in sample}
        out.update({k: v for k, v in sample.items() if k not in values})
        return out

    def is_valid(self, sample: dict[str, Any]) -> tuple[bool, str]:
        """``(ok, reason)``: False for samples whose network cannot run (never trained, recorded ``invalid``)."""
        return True, ""

    def active_part(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The labels of ``sample`` that shape the network (shown as a trial's parameters). Default: all of them;
        spaces with inactive genes leave those out."""
        return dict(sample)

    def describe(self, sample: dict[str, Any]) -> str:
        """A short human string for ``sample`` (shown in logs, the web UI and the model card)."""
        return ", ".join(f"{k}={v}" for k, v in sample.items())

    # ------------------------------------------------------------------ genetic operators (used by GA strategies)
    def crossover(self, a: dict[str, Any], b: dict[str, Any], rng: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Two canonical children of ``a`` and ``b`` (``rng``: a ``random.Random``).

        Default: one-point crossover over the label order (cut in ``1 .. n_labels - 1``). Spaces whose labels have
        structure (layers, cells) override this so that children stay meaningful.
        """
        keys = list(self.label_values())
        if len(keys) < 2:
            return dict(a), dict(b)
        c = rng.randint(1, len(keys) - 1)
        first, second = set(keys[:c]), set(keys[c:])
        child1 = {k: (a[k] if k in first else b[k]) for k in keys if k in first | second}
        child2 = {k: (b[k] if k in first else a[k]) for k in keys if k in first | second}
        return self.canonicalize(child1), self.canonicalize(child2)

    def mutate(self, sample: dict[str, Any], prob: float, rng: Any) -> dict[str, Any]:
        """Each label redrawn (to a different value) with probability ``prob``; returns a canonical sample."""
        out = dict(sample)
        for k, values in self.label_values().items():
            if rng.random() < prob:
                others = [v for v in values if v != sample[k]]
                out[k] = rng.choice(others) if others else sample[k]
        return self.canonicalize(out)

    def op_costs(self) -> dict[str, dict[Any, dict[str, float]]] | None:
        """``{label: {value: {"params": n, "flops": f}}}`` per choice, for cost-aware strategies; None if unknown."""
        return None

"""Categorical variation operators for integer-coded architectures (one category index per search-space label).

The labels of a search space are categories (an op name, an input node, a pooling type): their indices have no
order, so real-coded operators with rounding (SBX, polynomial mutation) barely move them. Measured on the 42-gene
``mstf_cell`` space with SBX (eta 15) + PM (eta 20): about 8 % of children had a gene changed by mutation and 0.3 %
of genes matched neither parent. These operators act on categories:

* :class:`CategoricalSampling` -- a uniform category per gene, redrawing samples the space rejects
  (``space.is_valid``: dead cells) or that were met before;
* crossover -- pymoo's own :class:`~pymoo.operators.crossover.ux.UniformCrossover` or
  :class:`~pymoo.operators.crossover.pntx.SinglePointCrossover` over the genes (:func:`make_crossover`);
* :class:`RandomResetMutation` -- each gene, with probability ``prob_var`` (default ``1 / n_genes``), is reset to
  another category drawn uniformly (pymoo's ``ChoiceRandomMutation`` may redraw the same category, and needs
  pymoo ``Choice`` variables rather than integer bounds);
* :class:`ArchiveDuplicateElimination` -- drops a child met before (scored, failed or pruned: by the canonical hash
  of its sample, so two codes of the same network count as one) or invalid, so pymoo mates again instead;
* :class:`TrackedMating` -- pymoo's mating that also counts, in :class:`VariationStats`, how many children differ
  from both of their parents and how many genes match neither parent.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mating import Mating
from pymoo.core.mutation import Mutation
from pymoo.core.sampling import Sampling

__all__ = ["VariationStats", "Archive", "CategoricalSampling", "RandomResetMutation", "ArchiveDuplicateElimination",
           "TrackedMating", "make_crossover", "CROSSOVERS"]


@dataclass
class VariationStats:
    """Counts of what the variation operators did (persisted with the strategy's state)."""

    children: int = 0                 # made by crossover + mutation
    differ_from_both: int = 0         # children equal to neither parent
    genes: int = 0                    # genes of those children
    novel_genes: int = 0              # genes matching neither parent (only mutation makes these)
    mutated_children: int = 0         # children with at least one gene reset by mutation
    duplicates_dropped: int = 0       # children or samples met before (or twice in one batch), mated again
    invalid_dropped: int = 0          # children or samples the space rejects (dead cells), mated again

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        d["differ_from_both_fraction"] = self.differ_from_both / self.children if self.children else None
        d["novel_gene_fraction"] = self.novel_genes / self.genes if self.genes else None
        d["mutated_fraction"] = self.mutated_children / self.children if self.children else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VariationStats:
        return cls(**{f.name: int(d.get(f.name, 0)) for f in fields(cls)})


class Archive:
    """What the search has met: canonical hashes of every architecture scored, failed or pruned.

    Args:
        decode: integer code (one row) -> ``(canonical sample, hash)``.
        is_valid: canonical sample -> ``(ok, reason)`` (the space's ``is_valid``).
        reject: ``(sample, reason)`` -> None; records a pruned sample (the core's ``reject`` hook).
        stats: the counters to update.
    """

    def __init__(self, decode: Callable[[np.ndarray], tuple[dict[str, Any], str]],
                 is_valid: Callable[[dict[str, Any]], tuple[bool, str]],
                 reject: Callable[[dict[str, Any], str], None] | None, stats: VariationStats):
        self.decode, self.is_valid, self.reject, self.stats = decode, is_valid, reject, stats
        self.seen: set[str] = set()

    def admit(self, x: np.ndarray, batch: set[str]) -> bool:
        """True (and ``batch`` gets its hash) if ``x`` is new and valid; a new invalid one is recorded and seen."""
        sample, h = self.decode(x)
        if h in self.seen or h in batch:
            self.stats.duplicates_dropped += 1
            return False
        ok, why = self.is_valid(sample)
        if not ok:
            self.stats.invalid_dropped += 1
            self.seen.add(h)
            if self.reject is not None:
                self.reject(sample, why)
            return False
        batch.add(h)
        return True


class CategoricalSampling(Sampling):
    """A uniform category per gene; samples met before or rejected by the space are redrawn (up to 100 tries per
    wanted sample, so a tiny space ends with fewer)."""

    def __init__(self, archive: Archive):
        super().__init__()
        self.archive = archive

    def _do(self, problem: Any, n_samples: int, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
        xu = np.asarray(problem.xu, dtype=int)
        rows: list[np.ndarray] = []
        batch: set[str] = set()
        for _ in range(100 * n_samples):
            if len(rows) == n_samples:
                break
            x = random_state.integers(0, xu + 1)
            if self.archive.admit(x, batch):
                rows.append(x)
        return np.array(rows, dtype=int).reshape(len(rows), problem.n_var)


class RandomResetMutation(Mutation):
    """Each gene, with probability ``prob_var`` (None: ``1 / n_genes``), is reset to one of its *other* categories,
    uniformly (``(x + U{1..n-1}) mod n``). Genes with one category are never changed."""

    def __init__(self, prob_var: float | None = None, **kwargs: Any):
        super().__init__(prob=1.0, prob_var=prob_var, **kwargs)

    def _do(self, problem: Any, X: np.ndarray, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
        X = np.asarray(X).round().astype(int)
        n_cat = np.asarray(problem.xu, dtype=int) + 1
        rate = float(self.prob_var.value) if self.prob_var is not None else 1.0 / problem.n_var
        mask = (random_state.random(X.shape) < rate) & (n_cat > 1)[None, :]
        shift = random_state.integers(1, np.maximum(n_cat, 2)[None, :].repeat(len(X), 0))
        return np.where(mask, (X + shift) % n_cat[None, :], X)


CROSSOVERS = ("uniform", "one_point")


def make_crossover(kind: str, prob: float) -> Any:
    """pymoo's uniform or one-point crossover over the genes (integer codes are copied, never mixed)."""
    if kind == "uniform":
        from pymoo.operators.crossover.ux import UniformCrossover

        return UniformCrossover(prob=prob)
    if kind == "one_point":
        from pymoo.operators.crossover.pntx import SinglePointCrossover

        return SinglePointCrossover(prob=prob)
    raise ValueError(f"crossover: expected one of {', '.join(CROSSOVERS)}, got {kind!r}")


class ArchiveDuplicateElimination(DuplicateElimination):
    """pymoo duplicate elimination by canonical hash, against the archive, the other populations pymoo passes (the
    current population and the offspring already kept) and the batch itself; invalid children are dropped too."""

    def __init__(self, archive: Archive):
        super().__init__()
        self.archive = archive

    def do(self, pop: Any, *args: Any, return_indices: bool = False, to_itself: bool = True) -> Any:
        batch = {self.archive.decode(ind.X)[1] for other in args if other is not None for ind in other}
        keep = [i for i, ind in enumerate(pop) if self.archive.admit(np.asarray(ind.X), batch)]
        out = pop[keep]
        if return_indices:
            return out, keep, [i for i in range(len(pop)) if i not in set(keep)]
        return out


class TrackedMating(Mating):
    """pymoo's selection -> crossover -> mutation, counting per child whether it differs from both parents."""

    def __init__(self, selection: Any, crossover: Any, mutation: Any, stats: VariationStats, **kwargs: Any):
        super().__init__(selection, crossover, mutation, **kwargs)
        self.stats = stats

    def _do(self, problem: Any, pop: Any, n_offsprings: int, parents: Any = None, random_state: Any = None,
            **kwargs: Any) -> Any:
        if parents is None:
            n_matings = math.ceil(n_offsprings / self.crossover.n_offsprings)
            parents = self.selection(problem, pop, n_matings, n_parents=self.crossover.n_parents,
                                     random_state=random_state, **kwargs)
        PX = np.array([[np.asarray(ind.X) for ind in mating] for mating in parents], dtype=float)  # (m, p, n)
        off = self.crossover(problem, parents, random_state=random_state, **kwargs)
        crossed = np.asarray(off.get("X"), dtype=float).copy()
        off = self.mutation(problem, off, random_state=random_state, **kwargs)
        X = np.asarray(off.get("X"), dtype=float)
        # crossover output row r = o * n_matings + m (pymoo's layout): its parents are PX[r % n_matings]
        par = PX[np.arange(len(X)) % len(PX)]
        same_as = X[:, None, :] == par                                   # (children, parents, genes)
        self.stats.children += len(X)
        self.stats.differ_from_both += int((~same_as.all(axis=2)).all(axis=1).sum())
        self.stats.genes += X.size
        self.stats.novel_genes += int((~same_as.any(axis=1)).sum())
        self.stats.mutated_children += int((X != crossed).any(axis=1).sum())
        return off

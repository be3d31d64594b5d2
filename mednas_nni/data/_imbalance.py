"""Class imbalance, handled by the data set so that a search's trials and the finalists' retraining see the same
thing (both train on ``dataset("train")`` with ``task.loss(dataset)``): oversampling of the training split or
inverse-frequency class weights for the loss (``imbalance: oversample | weighted_loss | none`` in the data
config of ``mhsma`` and ``medmnist``)."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["IMBALANCE", "oversample_indices", "Indexed", "inverse_frequency_weights"]

#: the values of a data plugin's ``imbalance`` parameter
IMBALANCE = ("oversample", "weighted_loss", "none")


def oversample_indices(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices that make every class as frequent as the largest one (all originals kept, minority repeated).

    Each minority class is tiled ``floor(n_max / n_c)`` times, and the remainder is a seeded sample without
    replacement; the result is shuffled with the same seed.
    """
    y = np.asarray(y).reshape(-1)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    n_max = int(counts.max())
    out = []
    for c, n in zip(classes, counts):
        idx = np.flatnonzero(y == c)
        reps, rest = divmod(n_max, int(n))
        out.append(np.tile(idx, reps))
        if rest:
            out.append(rng.choice(idx, size=rest, replace=False))
    full = np.concatenate(out)
    rng.shuffle(full)
    return full


class Indexed(torch.utils.data.Dataset):
    """A view of a data set through a fixed index list (used for oversampling)."""

    def __init__(self, base: torch.utils.data.Dataset, indices: np.ndarray):
        self.base, self.indices = base, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[int(self.indices[i])]


def inverse_frequency_weights(y: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights of labels ``y``, normalised to mean 1 (a class absent from ``y`` counts 1)."""
    counts = np.bincount(np.asarray(y).reshape(-1), minlength=num_classes).astype(np.float64)
    w = counts.sum() / (len(counts) * np.maximum(counts, 1.0))
    return torch.as_tensor(w / w.mean(), dtype=torch.float32)

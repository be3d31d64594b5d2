"""The class-balanced batch sampler of NAS-SCAM's code, for segmentation masks.

The authors' loader (``ZuhaoLiu/NAS-SCAM`` @ 9793d30, ``train_functions.yield_data``) keeps one list of patches per
nucleus class and fills every batch with one patch of each class (in a random order), walking each list cyclically,
so rare classes (macrophages, neutrophils) appear in every batch. Here a "patch of class c" is a training image
whose mask contains class ``c`` (c >= 1): batch slot ``k`` takes the next image of class ``classes[k mod n]``, the
classes shuffled for each batch, each class's images reshuffled whenever its list is used up. Images whose mask
holds background only are never drawn (the authors' lists hold none either). An epoch has ``ceil(N / batch_size)``
batches, like a plain shuffled loader over the same ``N`` images.

Hand-written because neither PyTorch nor MONAI has a per-class round-robin batch sampler for multi-label (mask)
samples: ``WeightedRandomSampler`` balances single labels in expectation only, and MONAI's
``RandCropByLabelClassesd`` balances crops inside one image, not the images of a batch.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["ClassBalancedBatchSampler", "classes_present"]


def classes_present(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N, num_classes)`` bool: which classes each ``(N, H, W)`` class-index mask contains."""
    flat = np.asarray(masks).reshape(len(masks), -1)
    return np.stack([(flat == c).any(axis=1) for c in range(num_classes)], axis=1)


class ClassBalancedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of image indices with every foreground class in turn (see the module doc).

    Args:
        present: ``(N, K)`` bool, :func:`classes_present` of the training masks.
        batch_size: images per batch.
        seed: the shuffles are drawn from ``seed`` and the epoch number (:meth:`set_epoch`; advanced after every
            full iteration otherwise), so a resumed epoch draws the same batches.

    Raises:
        ValueError: no image contains any foreground class.
    """

    def __init__(self, present: np.ndarray, batch_size: int, seed: int = 0):
        present = np.asarray(present, dtype=bool)
        if present.ndim != 2 or batch_size < 1:
            raise ValueError(f"class-balanced sampler: expected an (N, K) table and batch_size >= 1, got shape "
                             f"{present.shape} and batch_size {batch_size}")
        self.by_class = {c: np.flatnonzero(present[:, c]) for c in range(1, present.shape[1])}
        self.by_class = {c: idx for c, idx in self.by_class.items() if len(idx)}
        if not self.by_class:
            raise ValueError("class-balanced sampler: expected at least one training mask with a foreground class, "
                             "got background-only masks")
        self.n, self.batch_size, self.seed, self.epoch = len(present), int(batch_size), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        classes = sorted(self.by_class)
        queues = {c: list(rng.permutation(self.by_class[c])) for c in classes}
        for _ in range(len(self)):
            order = [classes[i] for i in rng.permutation(len(classes))]
            batch = []
            for k in range(self.batch_size):
                c = order[k % len(order)]
                if not queues[c]:
                    queues[c] = list(rng.permutation(self.by_class[c]))
                batch.append(int(queues[c].pop()))
            yield batch
        self.epoch += 1

"""Seeded weights of frozen networks, pinned to the values the spaces gave before Core v2 (commit e4255b2).

The golden search results (tests/golden) depend on the module construction order and weight initialisation of the
spaces: building a space consumes the torch RNG (its dry-run network), and so does every ``freeze``. These numbers
were recorded with the pre-refactor code; a change here means a change of seeded search results.
"""
from __future__ import annotations

import random

import pytest
import torch

from mednas_nni.search_spaces.genas_cnn import GeNASCNNSpace
from mednas_nni.search_spaces.mstf_cell import MSTFCellSpace


def _abs_sum(model: torch.nn.Module) -> float:
    return sum(p.double().abs().sum().item() for p in model.parameters())


def test_genas_cnn_seeded_weights_and_output_are_unchanged() -> None:
    torch.manual_seed(0)
    space = GeNASCNNSpace(in_channels=1, out_channels=2, image_size=64, max_depth=3, filters=[4, 8])
    sample = space.random_sample(random.Random(3))
    assert sample == {"depth": 2, "layer0/filters": 4, "layer0/kernel": 7, "layer0/stride": 2, "layer0/pool": "none",
                      "layer1/filters": 4, "layer1/kernel": 1, "layer1/stride": 2, "layer1/pool": "none",
                      "layer2/filters": 4, "layer2/kernel": 3, "layer2/stride": 1, "layer2/pool": "none",
                      "head/dropout": 0.5}
    model = space.freeze(sample)
    assert _abs_sum(model) == pytest.approx(28.986914299894124, rel=1e-12)
    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert model.eval()(x).double().sum().item() == pytest.approx(-0.6543251872062683, rel=1e-6)


def test_mstf_cell_seeded_weights_are_unchanged() -> None:
    torch.manual_seed(1)
    space = MSTFCellSpace(in_channels=1, out_channels=2, num_blocks=2, num_nodes=3, channels=8)
    rng = random.Random(5)
    sample = {k: rng.choice(m.values) for k, m in space.simplify().items()}
    assert _abs_sum(space.freeze(sample)) == pytest.approx(843.3894849160415, rel=1e-12)

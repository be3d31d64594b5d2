"""Shared fixtures: real data sets from ../shared/data (skip when absent, fail in CI), a toy NNI space."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDNAS_SHARED_DATA", REPO.parent / "shared" / "data"))


def require_data(*parts: str) -> Path:
    """Path of a shared data set; skip if absent, but fail when MEDNAS_REQUIRE_DATA=1 (CI)."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        msg = f"shared data set {p} not found"
        if os.environ.get("MEDNAS_REQUIRE_DATA") == "1":
            pytest.fail(msg + " (MEDNAS_REQUIRE_DATA=1: CI must have it)")
        pytest.skip(msg)
    return p


@pytest.fixture
def medmnist_root() -> Path:
    return require_data("medmnist")


@pytest.fixture(autouse=True)
def _isolate_nni(tmp_path_factory, monkeypatch):
    # Never touch the user's NNI registry or experiment folder from tests.
    d = tmp_path_factory.getbasetemp() / "nni-config"
    d.mkdir(exist_ok=True)
    monkeypatch.setenv("NNI_CONFIG_DIR", str(d))


def make_toy_space():
    """A 3x3x2 = 18-architecture NNI space with Categorical labels only (for strategy tests)."""
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace
    from torch import nn

    from mednas_nni.contracts import SearchSpace

    class Zero(nn.Module):
        def forward(self, x):
            return x * 0.0

    class ToySpace(ModelSpace, SearchSpace):
        name = "toy"

        def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, image_size=None):
            super().__init__()
            self.stem = nn.Conv2d(in_channels, 4, 3, padding=1)
            self.op1 = LayerChoice({"conv1": nn.Conv2d(4, 4, 1), "conv3": nn.Conv2d(4, 4, 3, padding=1),
                                    "conv5": nn.Conv2d(4, 4, 5, padding=2)}, label="op1")
            self.op2 = LayerChoice({"conv1": nn.Conv2d(4, 4, 1), "conv3": nn.Conv2d(4, 4, 3, padding=1),
                                    "zero": Zero()}, label="op2")
            self.act = LayerChoice({"relu": nn.ReLU(), "tanh": nn.Tanh()}, label="act")
            self.head = nn.Linear(4, out_channels)

        def forward(self, x):
            x = self.act(self.op1(self.stem(x)))
            x = self.op2(x) + x
            return self.head(x.mean((2, 3)))

    return ToySpace

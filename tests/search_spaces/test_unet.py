"""The ``unet`` space (MONAI U-Net): labels, every sample builds and runs, any input size, validity, ONNX parity."""
from __future__ import annotations

import io
import random
import warnings

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nni.mutable import Categorical, Mutable, SampleValidationError
from nni.nas.nn.pytorch import MutableModule
from nni.nas.space import SimplifiedModelSpace
from pydantic import ValidationError
from torch import nn

from mednas_nni.search_spaces.unet import LABELS, UNetNet, UNetParams, UNetSpace, bottleneck_size, describe_arch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # A shared 2-core machine: intra-op threads only add contention. Restore the setting afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SPACES = {(c_in, c_out): UNetSpace(in_channels=c_in, out_channels=c_out, image_size=64)
          for c_in in (1, 3) for c_out in (2, 3)}
SPACE = SPACES[1, 2]
SAMPLES = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in SPACE.label_values().items()})


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _assert_plain(model: nn.Module) -> None:
    for name, module in model.named_modules():
        assert not isinstance(module, (Mutable, MutableModule)), f"{name or '<root>'} is {type(module).__name__}"


def test_labels_values_and_metadata() -> None:
    simple = SPACE.simplify()
    assert tuple(simple) == LABELS == ("depth", "width", "unit", "norm", "dropout")
    assert all(type(m) is Categorical for m in simple.values())
    assert SPACE.label_values() == {"depth": [3, 4, 5], "width": [8, 16, 32], "unit": ["conv", "residual"],
                                    "norm": ["batch", "instance"], "dropout": [0.0, 0.1, 0.2]}
    assert UNetSpace.name == "unet" and UNetSpace.tasks == ("segmentation",) and UNetSpace.Params is UNetParams
    restricted = UNetSpace(**UNetParams(depths=[3], widths=[4, 8], units=["residual"]).model_dump())
    assert restricted.label_values()["depth"] == [3] and restricted.label_values()["unit"] == ["residual"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=SAMPLES, c_in=st.sampled_from([1, 3]), c_out=st.sampled_from([2, 3]))
@example(sample={"depth": 5, "width": 32, "unit": "residual", "norm": "instance", "dropout": 0.2}, c_in=3, c_out=3)
def test_every_sample_builds_and_runs_at_64(sample, c_in, c_out) -> None:
    space = SPACES[c_in, c_out]
    assert space.is_valid(sample) == (True, "")          # 64 px: even depth 5 keeps a 2x2 bottleneck
    model = space.freeze(sample)
    assert isinstance(model, UNetNet) and model.arch == space.canonicalize(sample)
    _assert_plain(model)
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(1, c_in, 64, 64))
    assert y.shape == (1, c_out, 64, 64) and torch.isfinite(y).all()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=SAMPLES)
def test_parameter_count_grows_with_width(sample) -> None:
    with torch.device("meta"):                            # shapes only: no weight initialisation
        counts = [_n_params(SPACE.freeze({**sample, "width": w})) for w in (8, 16, 32)]
    assert counts[0] < counts[1] < counts[2]


@pytest.mark.parametrize("size", [(61, 50), (33, 64), (17, 17)])
def test_any_input_size_gives_logits_at_the_input_size(size) -> None:
    sample = {"depth": 4, "width": 8, "unit": "residual", "norm": "batch", "dropout": 0.0}
    model = SPACE.freeze(sample).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 1, *size))
    assert y.shape == (2, 2, *size)


def test_padding_does_not_change_divisible_inputs() -> None:
    """Replication padding then cropping: a divisible input goes through MONAI's UNet untouched."""
    model = SPACE.freeze({"depth": 3, "width": 8, "unit": "conv", "norm": "instance", "dropout": 0.0}).eval()
    x = torch.randn(1, 1, 40, 48)
    with torch.no_grad():
        assert torch.equal(model(x), model.unet(x))


def test_is_valid_rejects_a_bottleneck_below_two_pixels() -> None:
    sample = {"depth": 5, "width": 8, "unit": "conv", "norm": "instance", "dropout": 0.0}
    small = UNetSpace(image_size=28)
    assert bottleneck_size(28, 5) == 1 and bottleneck_size(28, 4) == 2 and bottleneck_size(33, 5) == 2
    ok, reason = small.is_valid(sample)
    assert not ok and reason == ("feature map shrinks to 1 px at the bottleneck of a depth-5 U-Net "
                                 "(input 28 px; needs at least 33 px)")
    assert small.is_valid({**sample, "depth": 4}) == (True, "")
    assert UNetSpace().is_valid(sample) == (True, "")       # image_size unknown
    assert small.is_valid(sample, 33) == (True, "")
    model = small.freeze({**sample, "depth": 4}).train()    # the smallest valid case trains (instance norm)
    model(torch.randn(2, 1, 28, 28)).mean().backward()


def test_canonical_describe_and_errors() -> None:
    sample = {"depth": 4, "width": 16, "unit": "residual", "norm": "batch", "dropout": 0.1}
    assert SPACE.describe(sample) == describe_arch(sample) == \
        "U-Net depth 4, width 16, residual units, batch norm, dropout 0.1"
    assert SPACE.describe({**sample, "unit": "conv", "dropout": 0.0}).endswith("conv units, batch norm, no dropout")
    canon = SPACE.canonicalize({**sample, "dropout": 0})    # NNI's manager turns 0.0 into 0
    assert isinstance(canon["dropout"], float) and SPACE.canonicalize(canon) == canon
    with pytest.raises(SampleValidationError):
        SPACE.freeze({**sample, "width": 12})
    with pytest.raises(ValueError, match=r"unet: spatial_dims: expected 2 .*got 3"):
        UNetSpace(spatial_dims=3)
    with pytest.raises(ValueError, match="unet: out_channels: expected an int >= 1, got 0"):
        UNetSpace(out_channels=0)
    for bad in ({"depths": [0, 3]}, {"widths": [8, 8]}, {"units": ["dense"]}, {"norms": ["group"]},
                {"dropouts": [1.0]}, {"depth": 3}):
        with pytest.raises(ValidationError):
            UNetParams(**bad)
    with pytest.raises(ValidationError, match="values among conv, residual"):
        UNetSpace(units=["dense"])
    with pytest.warns(DeprecationWarning, match="num_classes"):
        assert UNetSpace(num_classes=4).out_channels == 4
    with pytest.raises(RuntimeError, match="UNetSpace"):
        UNetNet()


def test_nni_simplified_format_rebuilds_the_frozen_network() -> None:
    space = SPACES[3, 3]
    sample = {"depth": 3, "width": 8, "unit": "residual", "norm": "instance", "dropout": 0.2}
    model = SimplifiedModelSpace.from_model(space, None).freeze(sample).executable_model()
    assert isinstance(model, UNetNet) and model.arch == sample and model.out_channels == 3


def test_onnx_export_matches_pytorch() -> None:
    ort = pytest.importorskip("onnxruntime")
    rng = random.Random(0)
    sample = {k: rng.choice(v) for k, v in SPACE.label_values().items()}
    sample.update(depth=4, width=8)                         # keep the export small; the other genes stay random
    model = SPACES[3, 2].freeze(sample).eval()
    x = torch.randn(2, 3, 60, 60)                           # not divisible by 16: the padding path is exported
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    xb = torch.randn(3, 3, 60, 60)
    out = sess.run(None, {"image": xb.numpy()})[0]
    with torch.no_grad():
        ref = model(xb).numpy()
    assert out.shape == (3, 2, 60, 60) and abs(out - ref).max() < 1e-4, (sample, abs(out - ref).max())

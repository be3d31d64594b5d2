"""The ``genas_cnn`` space: labels, Categorical-only, canonical hash, pruning exactly the broken chromosomes, ONNX,
the Core v2 constructor and the GA operators."""
from __future__ import annotations

import hashlib
import io
import json
import random
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nni.mutable import Categorical, Mutable, SampleValidationError
from nni.nas.space import SimplifiedModelSpace
from pydantic import ValidationError

from _genas_helpers import one_torch_thread  # noqa: F401 (autouse fixture)
from mednas_nni.contracts.search_space import label_values as categorical_space
from mednas_nni.search_spaces import genas_operators
from mednas_nni.search_spaces.genas_cnn import (GeNASCNN, GeNASCNNParams, GeNASCNNSpace, arch_labels,
                                                describe_arch, spatial_sizes)
from mednas_nni.search_spaces.genas_operators import mutate, one_point_crossover


def arch_hash(sample: dict) -> str:
    return hashlib.sha1(json.dumps(sample, sort_keys=True).encode()).hexdigest()


SPACE = GeNASCNNSpace(max_depth=5, filters=[2, 4], kernels=[1, 3, 5, 7], strides=[1, 2, 3], pools=["none", "max", "avg"],
                      dropouts=[0.0, 0.5])
SAME = GeNASCNNSpace(max_depth=5, filters=[2, 4], kernels=[1, 3, 5], strides=[1, 2, 3], pools=["none", "max"],
                     padding="same")


def _chromosome(space: GeNASCNNSpace):
    """Any sample of the space, inactive genes included (hypothesis strategy)."""
    return st.fixed_dictionaries({k: st.sampled_from(v) for k, v in space.label_values().items()})


def test_labels_and_only_categorical() -> None:
    simple = SPACE.simplify()
    assert list(simple) == arch_labels(5) == SPACE.labels()
    assert list(simple)[:5] == ["depth", "layer0/filters", "layer0/kernel", "layer0/stride", "layer0/pool"]
    assert all(isinstance(m, Categorical) for m in simple.values())
    vals = categorical_space(SPACE)          # the strategies' contract: raises on any non-Categorical
    assert vals["depth"] == [2, 3, 4, 5] and vals["layer4/pool"] == ["none", "max", "avg"]
    assert vals["head/dropout"] == [0.0, 0.5]


def test_frozen_model_is_plain_module_and_onnx_exportable() -> None:
    sample = {**{k: v[0] for k, v in SPACE.label_values().items()}, "depth": 3, "layer1/stride": 2,
              "layer1/pool": "max", "layer0/kernel": 5, "head/dropout": 0.5}
    model = SPACE.freeze(sample)
    assert isinstance(model, GeNASCNN) and not isinstance(model, Mutable)
    assert not any(isinstance(m, Mutable) for m in model.modules())
    assert len(model.features) == 3
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 2)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    import onnxruntime as ort

    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    xb = torch.randn(3, 1, 32, 32)
    out = sess.run(None, {"image": xb.numpy()})[0]
    assert abs(out - model(xb).detach().numpy()).max() < 1e-4


def test_simplified_format_rebuilds_the_frozen_network() -> None:
    sample = SPACE.random_sample(random.Random(3))
    model = SimplifiedModelSpace.from_model(SPACE, None).freeze(sample).executable_model()
    assert isinstance(model, GeNASCNN) and model.arch == SPACE.canonicalize(sample)


def test_bad_sample_and_params_are_rejected() -> None:
    sample = SPACE.random_sample(random.Random(0))
    with pytest.raises(SampleValidationError):
        SPACE.freeze({**sample, "layer0/kernel": 9})
    with pytest.raises(ValidationError, match="min_depth <= max_depth"):
        GeNASCNNParams(min_depth=5, max_depth=3)
    with pytest.raises(ValidationError, match="odd kernels"):
        GeNASCNNParams(padding="same", kernels=[2, 3])
    with pytest.raises(ValidationError, match="distinct values among"):
        GeNASCNNParams(pools=["none", "mean"])
    with pytest.raises(ValueError, match="min_depth <= max_depth"):
        GeNASCNNSpace(min_depth=4, max_depth=2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_chromosome(SPACE), noise=st.randoms(use_true_random=False))
def test_hash_is_canonical(a, noise) -> None:
    """Equal networks, equal hash: genes of layers beyond depth never matter; any active gene does."""
    b = dict(a)
    for k, v in SPACE.label_values().items():                  # scramble every inactive gene
        if k.startswith("layer") and int(k[5:k.index("/")]) >= a["depth"]:
            b[k] = noise.choice(v)
    ca, cb = SPACE.canonicalize(a), SPACE.canonicalize(b)
    assert ca == cb and arch_hash(ca) == arch_hash(cb)
    assert arch_hash(SPACE.canonicalize(dict(reversed(list(b.items()))))) == arch_hash(ca)   # key order
    assert SPACE.freeze(a).arch == ca == SPACE.canonicalize(ca)                            # idempotent
    c = dict(a)
    c["layer0/filters"] = 4 if a["layer0/filters"] == 2 else 2                              # an active gene
    assert arch_hash(SPACE.canonicalize(c)) != arch_hash(ca)


def test_json_round_trip_keeps_the_hash() -> None:
    """NNI's manager (JavaScript) turns 0.0 into 0; canonicalisation maps it back."""
    a = {**SPACE.random_sample(random.Random(1)), "head/dropout": 0.0}
    b = {**a, "head/dropout": 0}
    assert arch_hash(SPACE.canonicalize(a)) == arch_hash(SPACE.canonicalize(b))
    assert isinstance(SPACE.canonicalize(b)["head/dropout"], float)


def _forward_fails(space: GeNASCNNSpace, sample: dict, size: int) -> bool:
    model = space.freeze(sample).eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, 1, size, size))
        return False
    except RuntimeError:
        return True


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_chromosome(SPACE), size=st.integers(1, 40))
def test_pruning_catches_every_invalid_architecture(a, size) -> None:
    """is_valid is False <=> a spatial size <= 0 <=> the frozen model's forward pass fails."""
    sizes = SPACE.spatial_sizes(a, size)
    some_nonpositive = any(h <= 0 for h in sizes)
    ok, reason = SPACE.is_valid(a, size)
    assert ok == (not some_nonpositive) and (reason == "") == ok
    assert len(sizes) == a["depth"] or some_nonpositive
    assert ok == (not _forward_fails(SPACE, a, size))
    if not ok:
        assert reason == f"feature map shrinks to {sizes[-1]} px at layer {len(sizes) - 1} (sizes {sizes})"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_chromosome(SAME), size=st.integers(2, 40))
def test_same_padding_only_pooling_can_break(a, size) -> None:
    assert SAME.is_valid(a, size)[0] == (not _forward_fails(SAME, a, size))


def test_spatial_sizes_example_and_describe() -> None:
    s = {**{k: v[0] for k, v in SPACE.label_values().items()}, "depth": 3, "layer0/kernel": 5, "layer0/pool": "max",
         "layer1/kernel": 3, "layer1/stride": 2, "layer2/kernel": 7}
    # 64 -> conv5 60 -> pool 30 -> conv3/2 14 -> conv7 8
    assert spatial_sizes(s, 64) == [30, 14, 8]
    assert SPACE.is_valid(s, 64) == (True, "")                         # 16 -> 6 -> 2 -> conv7: -4
    assert SPACE.is_valid(s, 16) == (False, "feature map shrinks to -4 px at layer 2 (sizes [6, 2, -4])")
    assert SPACE.is_valid(s) == (True, "")                             # no image_size: every sample
    sized = GeNASCNNSpace(image_size=16, max_depth=5, filters=[2, 4], kernels=[1, 3, 5, 7], strides=[1, 2, 3],
                          pools=["none", "max", "avg"], dropouts=[0.0, 0.5])
    assert sized.is_valid(s) == SPACE.is_valid(s, 16) and sized.is_valid(s, 64) == (True, "")
    assert SPACE.spatial_sizes(s, 16) == [6, 2, -4]
    text = describe_arch(s)
    assert "layer0: conv 5x5 /1 -> 2, max-pool 2x2" in text and "layer3" not in text
    assert SPACE.describe(s) == "3 conv layers: 5x5/1->2 max-pool, 3x3/2->2, 7x7/1->2; dropout 0"
    assert SPACE.size() == 2 * sum((2 * 4 * 3 * 3) ** d for d in (2, 3, 4, 5))



# ------------------------------------------------------------------------------------------- contract (Core v2)

def test_constructor_contract() -> None:
    space = GeNASCNNSpace(spatial_dims=2, in_channels=3, out_channels=4, image_size=32, max_depth=3)
    assert space.out_channels == space.num_classes == 4 and space.image_size == 32
    assert space.tasks == ("classification",) and space.name == "genas_cnn"
    rng = random.Random(0)
    sample = next(s for s in iter(lambda: space.random_sample(rng), None) if space.is_valid(s)[0])
    model = space.freeze(sample)
    assert model.out_channels == 4 and model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    with pytest.raises(ValueError, match=r"genas_cnn: spatial_dims: expected 2 .*got 3"):
        GeNASCNNSpace(spatial_dims=3)
    with pytest.raises(ValueError, match="out_channels must be an int >= 1, got 0"):
        GeNASCNNSpace(out_channels=0)
    with pytest.raises(ValueError, match="image_size"):
        GeNASCNNSpace(image_size=-1)
    with pytest.warns(DeprecationWarning, match="num_classes"):
        old = GeNASCNNSpace(in_channels=1, num_classes=5, max_depth=2)
    assert old.out_channels == 5
    frozen = old.freeze(old.random_sample(random.Random(1)))
    assert frozen.classifier.out_features == 5
    simplified = SimplifiedModelSpace.from_model(old, None).freeze(frozen.arch).executable_model()
    assert simplified.classifier.out_features == 5


def test_label_values_is_the_contract_method() -> None:
    assert SPACE.label_values() == categorical_space(SPACE)
    values = SPACE.label_values()
    values["depth"].append(99)                          # a copy: the space is unchanged
    assert 99 not in SPACE.label_values()["depth"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_chromosome(SPACE), b=_chromosome(SPACE), seed=st.integers(0, 2 ** 32 - 1),
       prob=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_ga_operators_are_the_module_functions(a, b, seed, prob) -> None:
    """space.crossover/mutate == genas_operators on label_values(), with the same RNG calls; children canonical."""
    a, b = SPACE.canonicalize(a), SPACE.canonicalize(b)
    lv = SPACE.label_values()
    r1, r2 = random.Random(seed), random.Random(seed)
    c1, c2 = SPACE.crossover(a, b, r1)
    assert (c1, c2) == one_point_crossover(a, b, lv, r2)
    m = SPACE.mutate(c1, prob, r1)
    assert m == mutate(c1, lv, prob, r2)
    assert r1.getstate() == r2.getstate()
    for child in (c1, c2, m):
        assert SPACE.contains(child) and SPACE.canonicalize(child) == child
    for child in (c1, c2):
        assert min(a["depth"], b["depth"]) <= child["depth"] <= max(a["depth"], b["depth"])
    layers = genas_operators._get_layers
    _, genes = genas_operators._layer_keys(lv)
    if max(a["depth"], b["depth"]) >= 2:                 # children swap layer-list tails
        la, lb, l1, l2 = layers(a, genes), layers(b, genes), layers(c1, genes), layers(c2, genes)
        assert any(l1 == la[:c] + lb[c:] and l2 == lb[:c] + la[c:] for c in range(1, max(len(la), len(lb))))
    assert SPACE.mutate(a, 0.0, random.Random(seed)) == a

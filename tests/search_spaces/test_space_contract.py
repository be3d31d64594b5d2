"""Contract tests run on EVERY registered search space (entry points of ``mednas_nni.search_spaces``).

A third-party space that is installed is tested here too. What is checked is what the core and the strategies rely
on (:mod:`mednas_nni.contracts.search_space`): the constructor vocabulary, categorical labels, a canonical form
that is idempotent and inside the space, ``is_valid`` as ``(bool, str)``, a short ``describe``, frozen networks
without NNI mutables that run, and GA operators that return canonical samples.
"""
from __future__ import annotations

import functools
import inspect
import random
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nni.mutable import Mutable
from nni.nas.nn.pytorch import ModelSpace, MutableModule
from torch import nn

from mednas_nni.contracts import PluginParams, SearchSpace
from mednas_nni.contracts.search_space import label_values as categorical_label_values
from mednas_nni.registry import get_plugin, list_plugins

PLUGINS = list_plugins("search_spaces")
NAMES = [p.name for p in PLUGINS]

#: the core's constructor kwargs for a space, by the first task it supports (what a fitting data set would give)
TASK_KWARGS: dict[str, dict[str, Any]] = {
    "classification": dict(spatial_dims=2, in_channels=1, out_channels=2, image_size=28),
    "segmentation": dict(spatial_dims=2, in_channels=3, out_channels=2, image_size=64),
}
DEFAULT_KWARGS = dict(spatial_dims=2, in_channels=1, out_channels=2, image_size=32)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _kwargs(cls: Any) -> dict[str, Any]:
    return dict(TASK_KWARGS.get(cls.tasks[0], DEFAULT_KWARGS))


@functools.lru_cache(maxsize=None)
def _space(name: str) -> Any:
    """The space as the core builds it: core kwargs plus the defaults of its ``Params`` (validated)."""
    cls = get_plugin("search_spaces", name)
    params = cls.Params.model_validate({}).model_dump()
    return cls(**_kwargs(cls), **params)


def _samples(space: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({k: st.sampled_from(v) for k, v in space.label_values().items()})


def _valid_sample(space: Any, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    values = space.label_values()
    for _ in range(1000):
        sample = space.canonicalize({k: rng.choice(v) for k, v in values.items()})
        if space.is_valid(sample)[0]:
            return sample
    raise AssertionError(f"{space.name}: no valid sample in 1000 random draws")


@pytest.mark.parametrize("name", NAMES)
def test_plugin_loads_and_declares_its_metadata(name: str) -> None:
    info = next(p for p in PLUGINS if p.name == name)
    assert info.status == "ok", info.error
    cls = get_plugin("search_spaces", name)
    assert issubclass(cls, ModelSpace) and issubclass(cls, SearchSpace)
    assert cls.name == name
    assert issubclass(cls.Params, PluginParams) and cls.Params.model_config.get("extra") == "forbid"
    assert isinstance(cls.tasks, tuple) and cls.tasks and all(isinstance(t, str) for t in cls.tasks)
    # every config parameter is a constructor argument (the core builds Cls(**core_kwargs, **params))
    init = inspect.signature(getattr(cls, "_init_wrapped", None) or cls.__init__).parameters   # NNI wraps __init__
    for key in ("spatial_dims", "in_channels", "out_channels", "image_size", *cls.Params.model_fields):
        assert key in init, f"{name}: __init__ has no argument {key!r}"


@pytest.mark.parametrize("name", NAMES)
def test_labels_are_categorical(name: str) -> None:
    space = _space(name)
    values = space.label_values()
    assert values and values == categorical_label_values(space)     # TypeError if a label is not Categorical
    assert list(values) == list(space.simplify())
    assert all(isinstance(v, list) and v for v in values.values())


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_canonical_form_validity_and_describe(name: str, data: st.DataObject) -> None:
    space = _space(name)
    sample = data.draw(_samples(space))
    canon = space.canonicalize(sample)
    assert space.canonicalize(canon) == canon                        # idempotent
    assert space.canonicalize(dict(reversed(list(sample.items())))) == canon   # key order does not matter
    assert list(canon) == list(space.label_values()) and space.contains(canon)
    ok, reason = space.is_valid(canon)
    assert isinstance(ok, bool) and isinstance(reason, str)
    assert (reason == "") == ok, (ok, reason)
    text = space.describe(canon)
    assert isinstance(text, str) and text.strip() and "\n" not in text and len(text) <= 500, text


@pytest.mark.parametrize("name", NAMES)
def test_frozen_valid_sample_is_a_plain_module_that_runs(name: str) -> None:
    space = _space(name)
    kw = _kwargs(type(space))
    sample = _valid_sample(space)
    model = space.freeze(sample)
    assert isinstance(model, nn.Module) and not isinstance(model, (Mutable, MutableModule))
    for sub_name, module in model.named_modules():
        assert not isinstance(module, (Mutable, MutableModule)), f"{sub_name} is {type(module).__name__}"
        assert not any(isinstance(v, Mutable) for v in vars(module).values()), sub_name
    size = kw["image_size"]
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(2, kw["in_channels"], size, size))
    assert y.shape[:2] == (2, kw["out_channels"]) and torch.isfinite(y).all()
    if "segmentation" in space.tasks:
        assert y.shape[2:] == (size, size)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data(), seed=st.integers(0, 2 ** 32 - 1), prob=st.sampled_from([0.0, 0.2, 1.0]))
def test_ga_operators_return_canonical_samples(name: str, data: st.DataObject, seed: int, prob: float) -> None:
    space = _space(name)
    a = space.canonicalize(data.draw(_samples(space)))
    b = space.canonicalize(data.draw(_samples(space)))
    rng = random.Random(seed)
    c1, c2 = space.crossover(a, b, rng)
    children = [c1, c2, space.mutate(c1, prob, rng), space.mutate(a, prob, rng)]
    for child in children:
        assert space.contains(child), child
        assert space.canonicalize(child) == child
    assert space.mutate(a, 0.0, random.Random(seed)) == a
    r1, r2 = random.Random(seed), random.Random(seed)              # deterministic for a seeded rng
    assert space.crossover(a, b, r1) == space.crossover(a, b, r2) and space.mutate(a, prob, r1) == \
        space.mutate(a, prob, r2)

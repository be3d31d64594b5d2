"""mstf_cell's structural validity: a dead sample (a normal cell whose output is constant) is invalid, and is_valid
says True exactly when the built network's logits depend on the image."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mednas_nni.search_spaces.mstf_cell import MSTFCellSpace


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # tiny nets: intra-op threads only add overhead on a busy 2-core machine (restored for the other modules)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

TINY = MSTFCellSpace(in_channels=1, out_channels=2, num_blocks=1, num_nodes=3, channels=4)
TINY_LABELS = TINY.label_values()


def _output_depends_on_input(space: MSTFCellSpace, sample: dict) -> bool:
    torch.manual_seed(0)
    model = space.freeze(sample).eval()
    with torch.no_grad():
        a, b = model(torch.randn(3, 1, 8, 8)), model(torch.randn(3, 1, 8, 8))
    return not torch.allclose(a, b, atol=0.0, rtol=0.0)


def _tiny(ops, inputs, pools=("avg_2",) * 4) -> dict:
    s = {}
    for i, (op, j) in enumerate(zip(ops, inputs), start=1):
        s[f"block0/normal/node{i}/op"], s[f"block0/normal/node{i}/input"] = op, j
    s.update({f"block0/reduce/branch{k}": p for k, p in enumerate(pools)})
    return TINY.canonicalize(s)


def test_is_valid_iff_output_depends_on_input_for_every_wiring():
    """Every wiring of a 3-node cell (3! input choices) with 'zero' or a live op on each node (2**3): is_valid says
    True exactly when the built network's logits change with the image."""
    import itertools

    seen = {True: 0, False: 0}
    for inputs in itertools.product([0], [0, 1], [0, 1, 2]):
        for ops in itertools.product(["zero", "identity"], ["zero", "sep_conv_3x3"], ["zero", "dil_conv_3x3"]):
            sample = _tiny(ops, inputs)
            ok, reason = TINY.is_valid(sample)
            assert ok == _output_depends_on_input(TINY, sample), (ops, inputs, reason)
            assert ok or "dead cell" in reason
            seen[ok] += 1
    assert seen[True] and seen[False]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_is_valid_iff_output_depends_on_input(data):
    """Any op of the table on any wiring, with 'zero' drawn half the time so that dead cells are common."""
    sample = {}
    for label, values in TINY_LABELS.items():
        if label.endswith("/op"):
            sample[label] = data.draw(st.one_of(st.just("zero"), st.sampled_from(values)))
        else:
            sample[label] = data.draw(st.sampled_from(values))
    assert TINY.is_valid(sample)[0] == _output_depends_on_input(TINY, sample)


def test_dead_fraction_of_the_default_space_and_dead_cells_in_later_blocks():
    space = MSTFCellSpace()
    values, rng = space.label_values(), random.Random(0)
    draws = [{k: rng.choice(v) for k, v in values.items()} for _ in range(1000)]
    dead = [s for s in draws if not space.is_valid(s)[0]]
    assert 0.08 < len(dead) / len(draws) < 0.25                        # ~15 % of uniform samples are dead
    live = next(s for s in draws if space.is_valid(s)[0])
    killed = {**live, **{f"block2/normal/node{i}/op": "zero" for i in range(1, 6)}}
    ok, reason = space.is_valid(killed)
    assert not ok and "block2" in reason
    assert space.is_valid({"block0/normal/node1/op": "sep_conv_3x3"})[0] is False   # not a whole sample

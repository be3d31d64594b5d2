"""Shared helpers of the GeNAS tests (a fake, fast NNI trial function and strategy drivers)."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import nni
import pytest
import torch
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import SimplifiedModelSpace

from mednas_nni.search_spaces.genas_cnn import GeNASCNNSpace
from mednas_nni.strategies._utils import arch_hash
from mednas_nni.strategies.genas_wf import GeNASWF

@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny CNNs on a shared 2-core machine: extra intra-op threads only add contention (import it, autouse)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CALLS: list[str] = []          # canonical hashes of every (fake) training, in order


def fake_score(arch: dict[str, Any]) -> float:
    """A deterministic 'fitness' with some structure (wider, deeper nets score higher) plus hash noise."""
    width = sum(arch[f"layer{i}/filters"] for i in range(arch["depth"]))
    noise = int(hashlib.sha1(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:6], 16) / 16 ** 6
    return width / 100 + 0.05 * noise


def fake_trial(model, fail_dropout: float | None = None, interrupt_at: int | None = None,
               input_size: int | None = None) -> None:
    """NNI evaluator function: reports a 3-epoch fake curve and its final score, no training."""
    arch = model.arch
    CALLS.append(arch_hash(arch))
    if input_size is not None:
        import torch

        model.eval()(torch.zeros(2, 1, input_size, input_size))   # must never fail: invalid archs are pruned
    if interrupt_at is not None and len(CALLS) == interrupt_at:
        raise KeyboardInterrupt
    if fail_dropout is not None and arch["head/dropout"] == fail_dropout:
        raise RuntimeError("injected failure")
    s = fake_score(arch)
    for e in range(3):
        nni.report_intermediate_result({"default": s * (e + 1) / 3})
    nni.report_final_result({"default": s, "val_balanced_acc": s, "history": []})


def run_ga(space: GeNASCNNSpace, strategy: GeNASWF | None = None, evaluator_kwargs: dict | None = None,
           **params: Any) -> tuple[GeNASWF, SequentialExecutionEngine]:
    """Run a GeNASWF on the sequential engine with :func:`fake_trial`."""
    params.setdefault("input_size", 32)
    params.setdefault("engine", "sequential")
    st = strategy or GeNASWF(**params)
    engine = SequentialExecutionEngine(continue_on_failure=True)
    st(SimplifiedModelSpace.from_model(space, FunctionalEvaluator(fake_trial, **(evaluator_kwargs or {}))), engine)
    return st, engine


SMALL = dict(max_depth=4, min_depth=2, filters=[4, 8], kernels=[3, 5], strides=[1, 2], pools=["none", "max"],
             dropouts=[0.0, 0.5])

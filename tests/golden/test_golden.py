"""Core v2 keeps its promise: the two tiny seeded searches recorded before it give the same results after it.

``main_e4255b2.json`` was recorded on the last commit before Core v2 (see README.md here). Both searches run through
the public CLI with today's code; every scored architecture (canonical hash, status, zero-cost scores or GeNAS-WF
fitness), the finalists, the winner and its val/test metrics must match. Each search runs in a child process with 2
torch threads and the CPU kernels pinned to AVX2 (``record.PINNED_ISA``): unpinned, an AVX-512 machine moves the
last bits of the sums.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import require_data
from record import SEARCHES, run_pinned  # noqa: F401 - tests/golden is on sys.path (rootdir-relative import)

GOLDEN = json.loads((Path(__file__).parent / "main_e4255b2.json").read_text())


def _scores(rec: dict) -> dict | None:
    if rec["status"] != "ok":
        return None
    return rec["metrics"]


def _compare(name: str, now: dict) -> None:
    before = GOLDEN[name]
    assert set(now["archs"]) == set(before["archs"]), "the same architectures were met"
    for h, old in before["archs"].items():
        new = now["archs"][h]
        assert new["sample"] == old["sample"], h
        assert new["status"] == {"trained": "ok", "ok": "ok"}.get(old["status"], old["status"]), h
        if old.get("scores"):
            for k, v in old["scores"].items():
                assert new["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), (h, k)
        if old.get("fitness") is not None:
            assert new["metrics"]["fitness"] == pytest.approx(old["fitness"], rel=1e-9, abs=1e-12), h
    assert now["finalists"] == before["finalists"]
    assert now["best_arch"] == before["best_arch"]
    for split in ("val", "test"):
        for k, v in before[split].items():
            assert now[split][k] == pytest.approx(v, rel=1e-9, abs=1e-12), (split, k)


@pytest.mark.slow
def test_zero_cost_nsga2_gives_the_recorded_results():
    _compare("zc_nsga2_breastmnist", run_pinned("zc_nsga2_breastmnist"))


@pytest.mark.slow
@pytest.mark.data
def test_genas_wf_gives_the_recorded_results():
    require_data("mhsma")
    _compare("genas_wf_mhsma", run_pinned("genas_wf_mhsma", ["engine.kind=sequential"]))

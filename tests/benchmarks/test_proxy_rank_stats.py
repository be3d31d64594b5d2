"""The rank statistics of ``benchmarks/zc_proxy_rank.py``: a score that is the same for every architecture has no rank
correlation (n/a in the table, never a measured 0), and a bootstrap resample that happens to be constant is left out
of the CI instead of pulling it toward 0."""
from __future__ import annotations

import sys

import numpy as np
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from zc_proxy_rank_stats import _ci, corr_with_ci  # noqa: E402


def test_a_constant_score_has_no_correlation() -> None:
    rng = np.random.default_rng(0)
    c = corr_with_ci(np.full(40, 0.5), rng.random(40))       # e.g. every balanced accuracy 0.5 after 3 epochs
    assert c["tau"] is None and c["rho"] is None and c["constant"] == "first"
    assert _ci(c, "tau") == "n/a (every architecture has the same score)"


def test_constant_resamples_are_left_out_of_the_ci() -> None:
    a = np.r_[np.zeros(36), np.ones(4)]                     # few architectures differ: some resamples are constant
    b = a + np.linspace(0, 0.1, 40)
    c = corr_with_ci(a, b, n_boot=400)
    assert c["constant_resamples"] > 0
    assert c["tau"] > 0 and 0 < c["tau_ci"][0] <= c["tau_ci"][1]   # a 0 from a constant resample would be the low end

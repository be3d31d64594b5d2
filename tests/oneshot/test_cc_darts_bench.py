"""Smoke test of ``benchmarks/cc_darts_nuclei.py`` (minutes on 2 cores: deselected by default, ``-m bench``)."""
from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO, require_data


@pytest.mark.bench
@pytest.mark.data
def test_cc_darts_nuclei_smoke_mode_writes_its_tables(tmp_path):
    require_data("dsb2018")
    sys.path.insert(0, str(REPO / "benchmarks"))
    import cc_darts_nuclei

    assert cc_darts_nuclei.main(["--mode", "smoke", "--work", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results" / "cc_darts_nuclei.json").read_text())
    assert set(res["summary"]) == {"cc_darts", "cc_darts λ=0", "MONAI BasicUNet", "MONAI UNet"}
    for s in res["summary"].values():
        assert 0.0 <= s["dsc"]["mean"] <= 100.0 and s["params"]["mean"] > 0 and s["ort_ms"]["mean"] > 0
    assert res["overhead"]["nni_darts_best"] > 0 and "overhead_pct" in res["overhead"]
    assert "| cc_darts |" in (tmp_path / "results" / "cc_darts_nuclei.md").read_text()

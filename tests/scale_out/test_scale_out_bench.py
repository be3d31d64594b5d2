"""benchmarks/scale_out.py runs end to end in its smoke mode (1-worker local service vs 2 remote workers on a
loopback sshd; minutes, so deselected by default: python -m pytest -m bench)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _scale_out_helpers import sshd  # noqa: F401 (skip / fail policy for sshd)
from conftest import REPO, require_data


@pytest.mark.bench
@pytest.mark.data
@pytest.mark.nni
def test_scale_out_benchmark_smoke(tmp_path, sshd) -> None:   # noqa: F811
    require_data("mhsma")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale_out.py"), "--mode", "smoke", "--seeds", "0",
                          "--configs", "local_1", "remote_2", "--work", str(tmp_path)], capture_output=True, text=True,
                         timeout=1500, cwd=REPO, env={**os.environ, "HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads((tmp_path / "scale_out_smoke.json").read_text())
    runs = {r["config"]: r for r in payload["runs"]}
    assert set(runs) == {"local_1", "remote_2"} and not any("error" in r for r in runs.values()), runs
    assert runs["remote_2"]["workers"] == 2 and runs["remote_2"]["trials"] >= 1 and runs["local_1"]["trials"] >= 1
    assert payload["summary"]["remote_2"]["speedup_vs_local_1"] is not None
    assert "| remote_2 | 2 |" in (tmp_path / "scale_out_smoke.md").read_text()

"""The README's main command on the embedded default (tiny budget), and kill-then-resume of a real run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mednas_nni.cli import main
from mednas_nni.io import RunDir, read_jsonl

TINY = ["strategy.params.pop_size=4", "strategy.params.generations=2", "space.params.num_blocks=2",
        "space.params.num_nodes=2", "space.params.channels=8", "evaluator.epochs=2", "strategy.params.top_k=1"]


def _only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_default_config_end_to_end(tmp_path, capsys):
    assert main(["search", *TINY, f"run.out_dir={tmp_path}", "--no-progress"]) == 0
    out = capsys.readouterr().out
    rd = _only_run(tmp_path)
    assert f"run directory: {rd}" in out and "test AUC" in out and "(trivial baseline AUC 0.500 ACC 0.731" in out
    for f in ("config.resolved.yaml", "archs.jsonl", "pareto.csv", "pareto.png", "best_arch.json", "best.pt",
              "metrics.json", "search.log", "finalists.json", "strategy_state.json", "search_summary.json"):
        assert (rd / f).is_file(), f
    assert not list(rd.rglob(".*.tmp"))                      # atomic writes leave no temp files
    m = json.loads((rd / "metrics.json").read_text())
    assert m["dataset"] == "breastmnist_28" and 0.0 <= m["test"]["auc"] <= 1.0
    assert m["baseline_test"]["acc"] == pytest.approx(114 / 156) and m["selected_by"] == "val_auc"
    assert m["search"]["evaluated"] == len(read_jsonl(rd / "archs.jsonl")) > 0
    assert json.loads((rd / "status.json").read_text())["phase"] == "done"
    arch = json.loads((rd / "best_arch.json").read_text())
    assert all(k.startswith("block") for k in arch)
    # the written config reproduces the run's settings
    from mednas_nni.config import load_config

    cfg = load_config(rd / "config.resolved.yaml")
    assert cfg.strategy.params["pop_size"] == 4 and cfg.evaluator.epochs == 2
    # resume of a finished run does nothing and succeeds
    assert main(["resume", str(rd)]) == 0


@pytest.mark.slow
def test_killed_search_resumes_without_rescoring(tmp_path):
    cmd = [sys.executable, "-m", "mednas_nni", "search", "strategy.params.pop_size=6",
           "strategy.params.generations=4", "space.params.num_blocks=2", "space.params.num_nodes=3",
           "space.params.channels=8", "evaluator.epochs=1", f"run.out_dir={tmp_path}", "--no-progress"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    archs = None
    while time.time() < deadline and proc.poll() is None:
        runs = [p for p in tmp_path.iterdir() if p.is_dir()]
        if runs and len(read_jsonl(runs[0] / "archs.jsonl")) >= 8:   # in generation 2
            archs = runs[0] / "archs.jsonl"
            break
        time.sleep(0.2)
    assert archs is not None, f"search did not progress: {proc.stderr.read() if proc.poll() is not None else ''}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [r["hash"] for r in read_jsonl(archs)]
    rd = archs.parent
    assert json.loads((rd / "status.json").read_text())["phase"] == "search"
    r = subprocess.run([sys.executable, "-m", "mednas_nni", "resume", str(rd)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    after = [x["hash"] for x in read_jsonl(archs)]
    assert after[:len(before)] == before
    assert len(after) == len(set(after)), "an architecture was scored twice"
    assert json.loads((rd / "status.json").read_text())["phase"] == "done"
    assert (rd / "best.pt").is_file() and "test AUC" in r.stdout

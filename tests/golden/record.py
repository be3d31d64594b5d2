"""Record the golden results of two tiny seeded searches (run with the code of the commit named in README.md).

    python tests/golden/record.py OUT.json

Each search runs through the public CLI (``mednas search``), so the same command works before and after a
refactoring of the core; the test ``tests/golden/test_golden.py`` runs the same two searches with today's code
and compares the scored architectures (hash -> scores/fitness), the finalists and the winner.

Each search runs in a child process with 2 torch threads and the CPU kernels pinned to AVX2 (:data:`PINNED_ISA`):
torch, oneDNN and OpenBLAS pick their kernels by the CPU's instruction set, and on an AVX-512 machine the same
code gave jacob_cov 5e-9 (relative) and the retrained winner's test AUC one pair in 4,788 away from an AVX2
machine's; pinned, both machines give the same bytes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = REPO.parent / "shared" / "data"

#: name -> (config file or None for the embedded default, overrides)
SEARCHES = {
    "zc_nsga2_breastmnist": (None, [
        "strategy.params.pop_size=6", "strategy.params.generations=3", "space.params.num_blocks=2",
        "space.params.num_nodes=3", "space.params.channels=8", "strategy.params.top_k=1",
        "evaluator.epochs=2",
        # recorded when these were the default objectives (issue 13 made them [jacob_cov:max, flops:min])
        "strategy.params.objectives=[jacob_cov:max, log_synflow:max, flops:min]"]),
    "genas_wf_mhsma": (str(REPO / "examples" / "genas_mhsma.yml"), [
        f"data.params.root={SHARED / 'mhsma'}", "strategy.params.population_size=4",
        "strategy.params.generations=2", "strategy.params.epochs_per_trial=1",
        "strategy.params.max_batches_per_epoch=3", "strategy.params.top_k=1", "evaluator.epochs=1",
        "evaluator.max_batches_per_epoch=3", "space.params.max_depth=3", "space.params.filters=[4,8]"]),
}


def summarise(rd: Path) -> dict:
    archs = [json.loads(line) for line in (rd / "archs.jsonl").read_text().splitlines() if line.strip()]
    metrics = json.loads((rd / "metrics.json").read_text())
    finalists = json.loads((rd / "finalists.json").read_text())
    return {
        "archs": {r["hash"]: {"status": r["status"], "sample": r["sample"], "metrics": r.get("metrics"),
                              "scores": r.get("scores"), "fitness": r.get("fitness")} for r in archs},
        "finalists": [f["hash"] for f in finalists],
        "best_arch": json.loads((rd / "best_arch.json").read_text()),
        "val": metrics["val"], "test": metrics["test"],
    }


#: the kernels' instruction set, fixed (every x86-64 CPU of the last ten years has AVX2)
PINNED_ISA = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
              "MKL_CBWR": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def run_pinned(name: str, engine_overrides: list[str] | None = None) -> dict:
    """:func:`run` in a child process with :data:`PINNED_ISA` and 2 torch threads (the recording's)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        proc = subprocess.run([sys.executable, __file__, "--one", name, str(out), *(engine_overrides or [])],
                              env={**os.environ, **PINNED_ISA}, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())


def run(name: str, engine_overrides: list[str] | None = None) -> dict:
    from mednas_nni.cli import main

    cfg, overrides = SEARCHES[name]
    with tempfile.TemporaryDirectory() as tmp:
        args = ["search"] + ([cfg] if cfg else []) + overrides + list(engine_overrides or []) + \
               [f"run.out_dir={tmp}", "--no-progress"]
        assert main(args) == 0, args
        (rd,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        return summarise(rd)


if __name__ == "__main__":
    if sys.argv[1] == "--one":     # the child of run_pinned: NAME OUT [overrides]
        import torch

        torch.set_num_threads(2)
        Path(sys.argv[3]).write_text(json.dumps(run(sys.argv[2], sys.argv[4:])))
        sys.exit(0)
    # the engine switch was strategy.params.engine=sequential before Core v2 (when the golden file was recorded)
    legacy_engine = ["engine.kind=sequential"]
    out = {"zc_nsga2_breastmnist": run_pinned("zc_nsga2_breastmnist"),
           "genas_wf_mhsma": run_pinned("genas_wf_mhsma", legacy_engine)}
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1, sort_keys=True))

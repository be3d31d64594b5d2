"""Per-trial overhead of an nnictl trial: a trial process that does nothing vs our trial entry point.

    python benchmarks/trial_overhead.py --reps 3 [--before-tree DIR]    # -> results/trial_overhead.{json,md}

Measured as wall time of fresh processes (median, min, max over ``--reps``):

* ``python``: ``python -c pass`` (interpreter start);
* ``nni_noop``: the smallest nnictl trial: ``import nni``, get the parameters, report a final result;
* ``entry_import``: ``import mednas_nni.nni_trial`` (what every trial pays before it knows its work);
* ``invalid``: a whole trial of a pruned architecture (logs the reason, exits 1);
* ``evaluate``: a whole real tiny evaluate trial (zero-cost scores of one ``mstf_cell`` on the bundled
  BreastMNIST, the zc_nsga2 trial) run with ``--params`` outside NNI (metrics are only logged).

``--before-tree DIR`` (e.g. ``git archive <commit> | tar -x -C DIR``) runs the same trials against that source tree
(mednas_nni, strategies, search_spaces mapped there) for a before/after comparison. The parameters are injected by
replacing ``nni.get_next_parameter`` in a small bootstrap, identical for both trees. ``-X importtime`` of one
evaluate trial gives the biggest imports. The machine (CPU, cores, load average) is recorded: on a shared machine
the numbers move with the load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
_BOOT = """import json, sys
tree = {tree!r}
if tree:
    import importlib
    for m in [m for m in sys.modules.values() if getattr(m, '__name__', '').startswith('__editable__')]:
        if hasattr(m, 'MAPPING'):
            m.MAPPING.update({{k: v.replace({repo!r}, tree) for k, v in m.MAPPING.items()}})
    sys.path.insert(0, tree)
{body}
"""
_TRIAL = """import nni
params = json.load(open({params!r}))
nni.get_next_parameter = lambda: params
import mednas_nni.nni_trial as t
sys.exit(t.main([]) if hasattr(t, 'main') else __import__('mednas_nni.engines.trial', fromlist=['main']).main())
"""


def _run(code: str, env: dict, extra: list[str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, *(extra or []), "-c", code], env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, r.stderr


def _stats(xs: list[float]) -> dict:
    return {"median_s": round(statistics.median(xs), 2), "min_s": round(min(xs), 2), "max_s": round(max(xs), 2),
            "runs_s": [round(x, 2) for x in xs]}


def _make_run(tmp: Path) -> tuple[Path, dict, dict]:
    """A run directory for a tiny zc_nsga2 search and the parameters of one evaluate and one invalid trial."""
    from mednas_nni.config import dump_config, load_config
    from mednas_nni.engines.search_loop import SearchLoop
    from mednas_nni.engines.trial import TRIAL_ARCHS
    from mednas_nni.experiment import RunContext, build_strategy
    from mednas_nni.io import RunDir, atomic_write_json, atomic_write_text

    cfg_file = tmp / "zc.yaml"
    cfg_file.write_text(json.dumps({
        "data": {"name": "medmnist", "params": {"flag": "breastmnist"}},
        "space": {"name": "mstf_cell", "params": {"num_blocks": 2, "num_nodes": 2, "channels": 8}},
        "strategy": {"name": "zc_nsga2", "params": {"pop_size": 4, "generations": 1}},
        "run": {"out_dir": str(tmp / "runs"), "device": "cpu"}}))
    cfg = load_config(cfg_file)
    cfg.run.progress = False
    rd = RunDir.create(cfg.run.out_dir, "overhead")
    atomic_write_text(rd / RunDir.CONFIG, dump_config(cfg))
    ctx = RunContext.build(cfg, rd)
    loop = SearchLoop(build_strategy(cfg), ctx.build_space(), ctx)
    h, sample = next(iter(loop.next_batch().todo.items()))
    atomic_write_json(rd / TRIAL_ARCHS / f"{h}.json", sample)
    space = loop.space
    evaluate = {"mednas": "evaluate", "hash": h, "describe": space.describe(sample), "run_dir": str(rd.path)}
    invalid = {"mednas": "invalid", "hash": h, "describe": space.describe(sample), "reason": "benchmark"}
    return rd.path, evaluate, invalid


def _top_imports(stderr: str, n: int = 8) -> list[dict]:
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, self_us, cum_us, name = [p.strip() for p in line.replace("import time:", "|").split("|")]
            if self_us.isdigit() and name.split(".")[0] in ("torch", "monai", "nni", "pytorch_lightning",
                                                            "matplotlib", "mednas_nni", "pymoo", "pydantic",
                                                            "torchvision", "torchmetrics", "numpy", "scipy"):
                if "." not in name:
                    rows.append({"module": name, "cumulative_s": round(int(cum_us) / 1e6, 2)})
    best: dict[str, float] = {}
    for r in rows:
        best[r["module"]] = max(best.get(r["module"], 0.0), r["cumulative_s"])
    return [{"module": k, "cumulative_s": v} for k, v in sorted(best.items(), key=lambda kv: -kv[1])[:n]]


def measure(reps: int, tree: str | None, tmp: Path, evaluate: dict, invalid: dict) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    repo = str(HERE.parent)
    out: dict = {}
    for name in ("python", "nni_noop", "entry_import", "invalid", "evaluate"):
        if name == "python":
            code = "pass"
        elif name == "nni_noop":
            code = "import nni\nnni.get_next_parameter()\nnni.report_final_result(0.0)"
        elif name == "entry_import":
            code = _BOOT.format(tree=tree, repo=repo, body="import mednas_nni.nni_trial")
        else:
            pfile = tmp / f"{name}.json"
            pfile.write_text(json.dumps(evaluate if name == "evaluate" else invalid))
            code = _BOOT.format(tree=tree, repo=repo, body=_TRIAL.format(params=str(pfile)))
        out[name] = _stats([_run(code, env)[0] for _ in range(reps)])
    code = _BOOT.format(tree=tree, repo=repo, body=_TRIAL.format(params=str(tmp / "evaluate.json")))
    _, err = _run(code, env, ["-X", "importtime"])
    out["evaluate_top_imports"] = _top_imports(err)
    out["evaluate_imports_matplotlib"] = any(line.rstrip().endswith("| matplotlib") or
                                             line.rstrip().endswith("matplotlib.pyplot")
                                             for line in err.splitlines() if line.startswith("import time:"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--before-tree", default=None, help="source tree of the 'before' code (git archive of a commit)")
    ap.add_argument("--before-label", default="before")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from _common import machine, write_results

    with tempfile.TemporaryDirectory(prefix="mednas-overhead-") as d:
        tmp = Path(d)
        _, evaluate, invalid = _make_run(tmp)
        load0 = os.getloadavg()
        results = {"after": measure(args.reps, None, tmp, evaluate, invalid)}
        if args.before_tree:
            results[args.before_label] = measure(args.reps, args.before_tree, tmp, evaluate, invalid)
        load1 = os.getloadavg()
    payload = {"machine": {**machine(), "loadavg_start": [round(x, 2) for x in load0],
                           "loadavg_end": [round(x, 2) for x in load1]}, "reps": args.reps, "results": results}
    m = payload["machine"]
    lines = ["# Per-trial overhead of an nnictl trial", "",
             f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}, {m['date']}; load average "
             f"{load0[0]:.1f} at start, {load1[0]:.1f} at end (a shared machine: compare columns, not runs). "
             f"{args.reps} fresh processes each; wall seconds, median (min-max).", "",
             "| process | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for name in ("python", "nni_noop", "entry_import", "invalid", "evaluate"):
        cells = [f"{r[name]['median_s']:.2f} ({r[name]['min_s']:.2f}-{r[name]['max_s']:.2f})" for r in results.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for label, r in results.items():
        tops = ", ".join(f"{t['module']} {t['cumulative_s']:.1f} s" for t in r["evaluate_top_imports"])
        lines += ["", f"{label}: biggest imports of one evaluate trial (-X importtime, cumulative): {tops}; "
                  f"matplotlib imported: {r['evaluate_imports_matplotlib']}."]
    write_results(Path(args.out), "trial_overhead", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

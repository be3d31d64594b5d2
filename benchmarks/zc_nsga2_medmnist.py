"""Zero-cost NSGA-II (MSTF-NAS) against the baselines that isolate each of its parts, on MedMNIST 28x28.

For each data set (default: breastmnist, pneumoniamnist, retinamnist from ../shared/data/medmnist; any other 2-D
flag works with --root) and each seed:

* ``zc_nsga2``: our search (``mednas_nni.experiment.run_search``) with the zero-cost proxies;
* ``random``: NNI's built-in ``Random`` strategy on the same space (redrawing what ``is_valid`` rejects, as our
  search does), driving the same zero-cost trial for the same number of scored architectures, finalists by the
  same rule (knee + top-k of the Pareto front of what it scored): the same proxies without the optimiser;
* ``params_only``: of the architectures ``random`` scored, the one with the most parameters (#params alone, the
  baseline every zero-cost proxy must beat: ZiCo, Li et al., ICLR 2023);
* ``random_arch``: one uniformly random valid architecture, no proxy at all;
* ``resnet18``: torchvision ResNet-18 (3x3 stride-1 stem, no max-pool, as MedMNIST's 28x28 ResNets) trained with the
  same recipe (``task.fit`` with the evaluator section);
* the majority-class baseline (AUC 0.5, balanced accuracy 1 / classes).

Every network is retrained and tested by the core with the same recipe; test ACC, AUC and balanced accuracy are
reported per seed and as mean +- std over the seeds. Also measured: search wall time, architectures scored per
second, and the cost of one proxy evaluation relative to one forward+backward of the same batch.

Modes: ``--mode cpu`` (default: 3 seeds, a small search, 4 retraining epochs; sized for 2 CPU cores),
``--mode medium`` (BreastMNIST and RetinaMNIST, the MedMNIST v2 recipe's full 100 epochs, C=16: feasible on CPU for
nets of this size, hours on 2 shared cores), ``--mode full`` (the paper's width C=128, 100 epochs, 3 seeds; meant for a
GPU). Every table states the width and the parameter counts beside the paper's numbers, which come from 100 epochs
at the paper's width. Results: benchmarks/results/zc_nsga2_medmnist[_<mode>].{json,md}. ``--mode smoke``
(BreastMNIST only, a few architectures, batches cut short; about a minute) only checks that the script runs end to
end and writes to ``<work>/results`` unless ``--out`` is given: its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import die_with_parent, machine, new_run, run_nni_peer, valid_random, write_results  # noqa: E402
from zc_nsga2_table import _short, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER = {  # MSTF-NAS test ACC / AUC as quoted in METHODS §A4 (paper tables); ResNet-18 (28) from MedMNIST v2
    "breastmnist": {"mstf_acc": .872, "mstf_auc": .930, "rn18_acc": .863, "rn18_auc": .901},
    "pneumoniamnist": {"mstf_acc": .912, "mstf_auc": .963, "rn18_acc": .854, "rn18_auc": .944},
    "retinamnist": {"mstf_acc": .550, "mstf_auc": .755, "rn18_acc": .524, "rn18_auc": .717},
}
MODES = {
    "cpu": {"pop_size": 16, "generations": 5, "epochs": 4, "seeds": [0, 1, 2], "num_blocks": 3, "num_nodes": 5,
            "channels": 16, "top_k": 1},
    "medium": {"pop_size": 20, "generations": 10, "epochs": 100, "seeds": [0, 1, 2], "num_blocks": 3,
               "num_nodes": 5, "channels": 16, "top_k": 1, "flags": ["breastmnist", "retinamnist"],
               "resnet18": False,    # MedMNIST v2 publishes ResNet-18 (28) at 100 epochs: the table quotes it
               "evaluator": {"memory_format": "channels_last"}},   # 1.3x faster on a CPU
    "full": {"pop_size": 40, "generations": 10, "epochs": 100, "seeds": [0, 1, 2], "num_blocks": 3,
             "num_nodes": 5, "channels": 128, "top_k": 2},
    # checks that the script runs (not a benchmark): batches cut short, few BatchNorm recalibration batches
    "smoke": {"pop_size": 4, "generations": 2, "epochs": 1, "seeds": [0], "num_blocks": 2, "num_nodes": 2,
              "channels": 8, "top_k": 1, "flags": ["breastmnist"], "proxy_archs": 2, "torch_threads": 1,
              "evaluator": {"max_batches_per_epoch": 2, "bn_batches": 1, "batch_size": 64}},
}


def overrides(flag: str, root: Path, mode: dict[str, Any], seed: int, out: Path) -> list[str]:
    obj = [f"strategy.params.objectives=[{', '.join(mode['objectives'])}]"] if mode.get("objectives") else []
    return [*obj, f"data.params.flag={flag}", f"data.params.root={root}", f"strategy.params.pop_size={mode['pop_size']}",
            f"strategy.params.generations={mode['generations']}", f"strategy.params.top_k={mode['top_k']}",
            f"space.params.num_blocks={mode['num_blocks']}", f"space.params.num_nodes={mode['num_nodes']}",
            f"space.params.channels={mode['channels']}", f"evaluator.epochs={mode['epochs']}",
            f"run.seed={seed}", f"run.out_dir={out}", "run.progress=false", "engine.kind=sequential",
            *[f"evaluator.{k}={v}" for k, v in mode.get("evaluator", {}).items()]]


def _retrain_cost(run_dir: Path) -> dict[str, Any]:
    """Seconds and epochs of the finalists' retraining, from their ``result.json``."""
    res = [json.loads(p.read_text()) for p in sorted(run_dir.glob("finalists/*/result.json"))]
    return {"retrain_seconds": sum(r["seconds"] for r in res), "retrained": len(res),
            "epoch_seconds_median": statistics.median([h["seconds"] for r in res for h in r["history"]] or [0.0])}


def run_ours(cfg) -> dict[str, Any]:
    from mednas_nni.experiment import run_search

    t0 = time.perf_counter()
    rd = run_search(cfg)
    m = json.loads((rd / "metrics.json").read_text())
    return {"run_dir": str(rd.path), "test": m["test"], "val": m["val"], "params": m["params"],
            "evaluated": m["search"]["evaluated"], "failed": m["search"]["failed"],
            "search_seconds": m["search"]["seconds"], "total_seconds": time.perf_counter() - t0,
            "majority": m["baseline_test"], **_retrain_cost(rd.path)}


def run_random(cfg, n_archs: int) -> dict[str, Any]:
    """NNI Random (valid draws only, as our search) on the same space + zero-cost trial + finalist rule +
    retraining."""
    from mednas_nni.experiment import build_strategy, choose_best, retrain_finalist, seed_everything
    from mednas_nni.io import RunDir, atomic_write_json, read_jsonl

    seed_everything(cfg.run.seed, cfg.run.deterministic)
    ctx = new_run(cfg, f"random-{cfg.data.params['flag']}")
    rd = ctx.run_dir
    keeper = build_strategy(cfg)      # the zc_nsga2 strategy: its trial spec and its finalist rule, nothing else
    spec = keeper.trial(ctx)
    rd.set_status(phase="search")
    t0 = time.perf_counter()
    space = ctx.build_space()
    run_nni_peer(valid_random(space, seed=cfg.run.seed), space, ctx, spec.function, spec.kwargs,
                 max_model_count=n_archs, raw_format=True)
    search_s = time.perf_counter() - t0
    records = read_jsonl(rd / RunDir.ARCHS)
    finalists = keeper.finalists(records)
    atomic_write_json(rd / "finalists.json", finalists)
    rd.set_status(phase="retrain", search_seconds=search_s, n_finalists=len(finalists))
    for i, fin in enumerate(finalists):
        retrain_finalist(ctx, i, fin, n_finalists=len(finalists))
    choose_best(ctx, finalists)
    rd.set_status(phase="done")
    m = json.loads((rd / "metrics.json").read_text())
    ok = [r for r in records if r.get("status") == "ok"]
    most = max(ok, key=lambda r: (r["metrics"]["params"], r["hash"]))
    return {"run_dir": str(rd.path), "test": m["test"], "val": m["val"], "params": m["params"],
            "evaluated": m["search"]["evaluated"], "failed": m["search"]["failed"], "search_seconds": search_s,
            # #params alone over what NNI Random scored: kept here so params_only needs no run directory
            "most_params": {"hash": most["hash"], "sample": most["sample"]}, **_retrain_cost(rd.path)}


def retrain_choice(cfg, name: str, fin: dict[str, Any], search_seconds: float = 0.0) -> dict[str, Any]:
    """Retrain and test one chosen architecture through the core, as a search's only finalist."""
    from mednas_nni.experiment import choose_best, retrain_finalist, seed_everything
    from mednas_nni.io import atomic_write_json

    seed_everything(cfg.run.seed, cfg.run.deterministic)
    ctx = new_run(cfg, f"{name}-{cfg.data.params['flag']}")
    rd = ctx.run_dir
    atomic_write_json(rd / "finalists.json", [fin])
    rd.set_status(phase="retrain", search_seconds=search_seconds, n_finalists=1)
    retrain_finalist(ctx, 0, fin, n_finalists=1)
    choose_best(ctx, [fin])
    rd.set_status(phase="done")
    m = json.loads((rd / "metrics.json").read_text())
    return {"run_dir": str(rd.path), "test": m["test"], "val": m["val"], "params": m["params"],
            "chosen_as": fin["chosen_as"], "hash": fin["hash"], **_retrain_cost(rd.path)}


def run_params_only(cfg, random_result: dict[str, Any]) -> dict[str, Any]:
    """The architecture with the most parameters among those NNI Random scored (#params alone)."""
    return retrain_choice(cfg, "params_only", {**random_result["most_params"], "chosen_as": "most parameters"})


def run_random_arch(cfg) -> dict[str, Any]:
    """One uniformly random valid architecture (seeded by the run's seed), no proxy."""
    import random

    from mednas_nni.engines.records import arch_hash
    from mednas_nni.experiment import build_dataset, build_space

    space = build_space(cfg, build_dataset(cfg))
    rng, values = random.Random(cfg.run.seed), space.label_values()
    while True:
        sample = space.canonicalize({k: rng.choice(v) for k, v in values.items()})
        if space.is_valid(sample)[0]:
            break
    return retrain_choice(cfg, "random_arch", {"hash": arch_hash(sample), "sample": sample,
                                                "chosen_as": "random architecture"})


def run_resnet18(ds, cfg, seed: int) -> dict[str, Any]:
    """torchvision ResNet-18 trained by the task with the evaluator recipe (best epoch by the task's select_by)."""
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision.models import resnet18

    from mednas_nni.experiment import build_task, resolve_device, seed_everything

    info, task, device = ds.info, build_task(cfg, ds), resolve_device(cfg.run.device)
    seed_everything(seed)
    net = resnet18(num_classes=info.num_classes)
    net.conv1 = nn.Conv2d(info.in_channels, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    t0 = time.perf_counter()
    out = task.fit(net, ds, cfg.evaluator, device=device, seed=seed)
    test = task.evaluate(net, DataLoader(ds.dataset("test"), batch_size=256), device)
    return {"test": test, "val": out["val"], "params": sum(p.numel() for p in net.parameters()),
            "train_seconds": time.perf_counter() - t0}


def proxy_cost_ratio(ds, cfg, n: int = 5) -> dict[str, float]:
    """Median over n random architectures of t(proxies) / t(forward+backward), same batch, same net."""
    import random

    import torch.nn.functional as F

    from mednas_nni.evaluators.zero_cost import compute_proxies
    from mednas_nni.experiment import RunContext, build_task

    ctx = RunContext(cfg, None, ds, build_task(cfg, ds), "cpu", False)
    space = ctx.build_space()
    labels = space.label_values()
    x, y = ctx.proxy_batch(64)
    rng = random.Random(0)
    ratios, t_proxy, t_fb = [], [], []
    for _ in range(n):
        net = space.freeze({k: rng.choice(v) for k, v in labels.items()})
        t0 = time.perf_counter()
        try:
            compute_proxies(net, x, y, ["jacob_cov", "synflow", "flops", "params"])
        except Exception:  # noqa: BLE001 - a degenerate arch still costs its time
            pass
        tp = time.perf_counter() - t0
        t0 = time.perf_counter()
        net.zero_grad()
        F.cross_entropy(net(x), y.view(-1)).backward()
        tf = time.perf_counter() - t0
        ratios.append(tp / tf)
        t_proxy.append(tp)
        t_fb.append(tf)
    return {"ratio_median": statistics.median(ratios), "proxy_seconds_median": statistics.median(t_proxy),
            "fwd_bwd_seconds_median": statistics.median(t_fb), "n_archs": n}


def _load_state(path: Path) -> tuple[dict[tuple[str, int], dict], dict[tuple[str, int, str], dict]]:
    """Finished units ``{(flag, seed): row}`` and finished steps ``{(flag, seed, step): result}`` of a state file
    (the core's ``read_jsonl``: a line torn by a killed run is skipped)."""
    from mednas_nni.io import read_jsonl

    units, steps = {}, {}
    for r in read_jsonl(path):
        if "step" in r:
            steps[(r["flag"], r["seed"], r["step"])] = r["result"]
        else:
            units[(r["flag"], r["seed"])] = r
    return units, steps


def _append_state(path: Path, record: dict[str, Any]) -> None:
    """The core's ``append_jsonl`` (one fsynced write), under an exclusive lock: two workers share the file."""
    import fcntl

    from mednas_nni.io import append_jsonl

    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            append_jsonl(path, record)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_unit(flag: str, seed: int, mode_name: str, root: str, work: str,
             objectives: list[str] | None = None, state: str | None = None) -> dict[str, Any]:
    """Every method on one (data set, seed): one row of the tables.

    Each method's result is appended to ``state`` as soon as it is known ("step" lines), and a step found there is
    not run again: a run stopped in the middle of a unit loses at most the method it was retraining.
    """
    import logging

    logging.basicConfig(level=logging.WARNING)
    from mednas_nni.config import load_config
    from mednas_nni.experiment import build_dataset

    mode = {**MODES[mode_name], **({"objectives": objectives} if objectives else {})}
    root_p, work_p = Path(root), Path(work)

    def cfg_():
        return load_config(None, overrides(flag, root_p, mode, seed, work_p))

    cfg = cfg_()
    ds = build_dataset(cfg)
    t0 = time.perf_counter()
    state_p = Path(state) if state else None
    done = _load_state(state_p)[1] if state_p else {}

    def step(name: str, fn) -> dict[str, Any]:
        if (flag, seed, name) in done:
            res = done[(flag, seed, name)]
        else:
            res = fn()
            if state_p:
                _append_state(state_p, {"flag": flag, "seed": seed, "step": name, "result": res})
        if "test" in res:
            print(f"   {flag} seed {seed} {name:>11}: test {_short(res['test'])}", flush=True)
        return res

    ours = step("zc_nsga2", lambda: run_ours(cfg))
    rnd = step("random", lambda: run_random(cfg_(), ours["evaluated"]))
    par = step("params_only", lambda: run_params_only(cfg_(), rnd))
    ra = step("random_arch", lambda: run_random_arch(cfg_()))
    row = {"flag": flag, "seed": seed, "zc_nsga2": ours, "random": rnd, "params_only": par, "random_arch": ra,
           "objectives": list(cfg.strategy.params["objectives"]),
           "majority": ours["majority"], "archs_per_second": ours["evaluated"] / max(ours["search_seconds"], 1e-9),
           "paper": PAPER.get(flag, {})}
    if mode.get("resnet18", True):
        row["resnet18"] = step("resnet18", lambda: run_resnet18(ds, cfg, seed))
    row["proxy_cost"] = step("proxy_cost", lambda: proxy_cost_ratio(ds, cfg, mode.get("proxy_archs", 5)))
    row["unit_seconds"] = time.perf_counter() - t0
    return row


def _init_worker(threads: int) -> None:
    import torch

    die_with_parent()
    torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=list(MODES), default="cpu")
    ap.add_argument("--flags", nargs="+", default=None,
                    help="MedMNIST flags (default: breastmnist pneumoniamnist retinamnist; smoke: breastmnist)")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the mode's seeds")
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default: benchmarks/results; smoke mode: <work>/results)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mednas-bench")
    ap.add_argument("--state", type=Path, default=None,
                    help="the resume file: every finished method and (data set, seed) is appended to it, and a "
                         "run resumes from what it holds (default: <work>/zc_nsga2_medmnist-<mode>.jsonl; keep it "
                         "beside the results to resume on another machine)")
    ap.add_argument("--workers", type=int, default=1,
                    help="(data set, seed) units run in parallel, one process and --threads torch threads each")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: 1 with workers > 1)")
    ap.add_argument("--report", action="store_true", help="write the tables from the finished units, run nothing")
    ap.add_argument("--note", default=None, help="a line for the table (e.g. what else ran on the machine)")
    ap.add_argument("--objectives", nargs="+", default=None, metavar="PROXY:max|min",
                    help="the search's objectives (default: the strategy's); results go to <stem>_<proxies>")
    args = ap.parse_args(argv)

    from mednas_nni.strategies.zc_nsga2 import DEFAULT_OBJECTIVES

    mode = {**MODES[args.mode], "objectives": args.objectives or list(DEFAULT_OBJECTIVES)}
    tag = "" if not args.objectives else "_" + "_".join(o.split(":")[0] for o in args.objectives)
    flags = args.flags or mode.get("flags", ["breastmnist", "pneumoniamnist", "retinamnist"])
    seeds = args.seeds or mode["seeds"]
    out_dir = args.out or (args.work / "results" if args.mode == "smoke" else REPO / "benchmarks" / "results")
    args.work.mkdir(parents=True, exist_ok=True)
    # every finished (data set, seed) is appended here: a killed run resumes with the units that are missing
    done_path = args.state or args.work / f"zc_nsga2_medmnist-{args.mode}{tag}.jsonl"
    done, steps = _load_state(done_path)
    units = [(f, s) for f in flags for s in seeds if (f, s) not in done]
    import torch

    threads = args.threads or (1 if args.workers > 1 else mode.get("torch_threads")) or torch.get_num_threads()
    t_all = time.perf_counter()
    if units and not args.report:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        print(f"running {len(units)} unit(s) ({len(done)} done before, {len(steps)} finished steps kept) with "
              f"{args.workers} worker(s)", flush=True)
        with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futs = [pool.submit(run_unit, f, s, args.mode, str(args.root), str(args.work), args.objectives,
                                str(done_path)) for f, s in units]
            for fut in as_completed(futs):
                row = fut.result()
                _append_state(done_path, row)
                done[(row["flag"], row["seed"])] = row
                print(f"== {row['flag']} seed {row['seed']} done in {row['unit_seconds']:.0f} s", flush=True)
    rows = [done[(f, s)] for f in flags for s in seeds if (f, s) in done]
    for r in rows:      # units written before rows carried them: the objectives from the search's run directory
        if "objectives" not in r:
            import yaml

            cfg = yaml.safe_load((Path(r["zc_nsga2"]["run_dir"]) / "config.resolved.yaml").read_text())
            r["objectives"] = cfg["strategy"]["params"]["objectives"]
    used = sorted({tuple(r["objectives"]) for r in rows})
    if len(used) > 1:
        print(f"the finished units used different objectives {used}: use another --work", flush=True)
        return 1
    if used:
        mode["objectives"] = list(used[0])
    if not rows:
        print("no finished unit to report", flush=True)
        return 1
    payload = {"benchmark": "zc_nsga2_medmnist", "mode": args.mode, "budget": {**mode, "seeds": seeds},
               # a --report (or a rerun with nothing left to run) trained nothing: its process layout is not the units'
               "machine": {**machine(), "torch_threads": threads, "workers": args.workers,
                           "trained_here": bool(units and not args.report)},
               "rows": rows, "total_seconds_this_session": time.perf_counter() - t_all,
               "missing_units": [[f, s] for f in flags for s in seeds if (f, s) not in done], "note": args.note,
               "partial_steps": [{"flag": f, "seed": s, "step": st, "result": res}
                                 for (f, s, st), res in _load_state(done_path)[1].items() if (f, s) not in done]}
    stem = ("zc_nsga2_medmnist" if args.mode in ("cpu", "smoke") else f"zc_nsga2_medmnist_{args.mode}") + tag
    write_results(out_dir, stem, payload, table(payload))
    print(table(payload))
    print(f"wrote {out_dir / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

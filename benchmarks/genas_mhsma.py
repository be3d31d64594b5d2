"""Benchmark: GeNAS-WF vs NNI RegularizedEvolution vs NNI Random on MHSMA 64x64 (head, vacuole, acrosome).

    python benchmarks/genas_mhsma.py --mode cpu      # <= 15 min on 2 CPU cores (the budget is printed)
    python benchmarks/genas_mhsma.py --mode full     # the bigger budget, for a GPU
    python benchmarks/genas_mhsma.py --mode smoke --skip-local   # < 1 min: checks the script runs (not a benchmark)

All three strategies search the same ``genas_cnn`` space (built by the core from ``examples/genas_mhsma.yml`` with
the mode's genes) with the same trial (``mednas_nni.strategies._train_trial:train_and_score`` through the task:
``epochs_per_trial`` epochs, fitness = GeNAS-WF of the per-epoch validation balanced accuracy, MHSMA oversampled)
in this process on NNI's ``SequentialExecutionEngine``, so the comparison is fair and free of process start-up
costs. GeNAS-WF runs as the core runs it (``SearchLoop`` on ``run_sequential``: hash cache, pruning, checkpoints);
NNI's ``RegularizedEvolution`` and ``Random`` run directly on the engine and maximise the same fitness (their trial
reports it as ``default``). The trial budget of the two NNI strategies is the number of trainings GeNAS-WF actually
used on that label (its cache hits are free). Invalid architectures (feature map <= 0 px) are never trained by any
strategy: the core prunes GeNAS-WF's, the NNI strategies get NNI's ``Filter`` middleware with the same
``space.is_valid``. Every search writes a run directory (``archs.jsonl``) under ``--work``.

Each strategy's best architecture by search fitness is retrained from scratch through the task (``train_curve``,
``retrain_epochs``, same data, seed) keeping the epoch with the best validation balanced accuracy, then tested once
on the official test split: accuracy, balanced accuracy, F0.5 (positive class = abnormal) and ROC-AUC, next to the
task's majority-class baseline. The per-trial overhead of NNI's local training service (one process per trial) is
measured separately with a 3-trial ``mednas search`` on ``engine.kind=local`` vs ``engine.kind=sequential``.

Writes ``benchmarks/results/genas_mhsma.json`` and ``.md`` (smoke mode: under ``--work``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))   # _common (also as "_common:fitness_trial" in trials)
DATA_ROOT = Path(os.environ.get("MEDNAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "mhsma"

TARGETS = {"vacuole": 91.66, "head": 77.33, "acrosome": 77.66}      # GeNAS paper accuracies (arXiv 1909.09432)
MAJORITY = {"vacuole": 87.3, "head": 73.0, "acrosome": 71.0}         # METHODS.md B4 (test split)

MODES = {
    "cpu": dict(space=dict(max_depth=4, min_depth=2, filters=[4, 8, 16], kernels=[3, 5], strides=[1, 2],
                           pools=["none", "max"], dropouts=[0.0, 0.25], padding="valid"),
                population_size=6, generations=3, tournament_size=3, elitism=1, crossover_prob=0.9,
                mutation_prob=0.15, epochs_per_trial=3, max_batches_per_epoch=10, batch_size=64, lr=1e-3,
                retrain_epochs=10, torch_threads=1),
    "full": dict(space=dict(max_depth=6, min_depth=2, filters=[8, 16, 32, 64], kernels=[3, 5, 7], strides=[1, 2],
                            pools=["none", "max"], dropouts=[0.0, 0.25, 0.5], padding="valid"),
                 population_size=20, generations=10, tournament_size=3, elitism=2, crossover_prob=0.9,
                 mutation_prob=0.1, epochs_per_trial=10, max_batches_per_epoch=None, batch_size=64, lr=1e-3,
                 retrain_epochs=60, torch_threads=None),
    # a few seconds per label: checks that the script runs (not a benchmark)
    "smoke": dict(space=dict(max_depth=3, min_depth=2, filters=[4, 8], kernels=[3, 5], strides=[1, 2],
                             pools=["none", "max"], dropouts=[0.0], padding="valid"),
                  population_size=3, generations=2, tournament_size=2, elitism=1, crossover_prob=0.9,
                  mutation_prob=0.2, epochs_per_trial=1, max_batches_per_epoch=2, batch_size=64, lr=1e-3,
                  retrain_epochs=1, torch_threads=1),
}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("nni").setLevel(logging.ERROR)
    logging.getLogger("mednas_nni").setLevel(logging.WARNING)


def _config(label: str, cfg: dict, seed: int, work: Path) -> Any:
    """The run config of one search: examples/genas_mhsma.yml with the mode's space, GA and trial budget."""
    from mednas_nni.config import load_config

    strategy = {k: cfg[k] for k in ("population_size", "generations", "tournament_size", "elitism",
                                    "crossover_prob", "mutation_prob", "epochs_per_trial", "max_batches_per_epoch",
                                    "batch_size", "lr", "torch_threads")}
    strategy.update(fitness="genas_wf", fitness_params={}, top_k=1)
    return load_config(REPO / "examples" / "genas_mhsma.yml", [
        f"data.params={json.dumps(_data(label))}", f"space.params={json.dumps(cfg['space'])}",
        f"strategy.params={json.dumps(strategy)}", "engine.kind=sequential", f"run.seed={seed}",
        f"run.out_dir={work}", "run.device=auto", "run.progress=false"])


def _data(label: str) -> dict:
    return {"root": str(DATA_ROOT), "label": label, "size": 64, "imbalance": "oversample"}


def _search(name: str, label: str, cfg: dict, seed: int, budget: int | None, work: Path, shared: dict) -> dict:
    """One search on the sequential engine; returns trials used, best arch and fitness, cache hits, time."""
    from nni.nas.space import ModelStatus
    from nni.nas.strategy import Random, RegularizedEvolution
    from nni.nas.strategy.middleware import Chain, Filter

    from _common import new_run, run_nni_peer
    from mednas_nni.engines.nni_engine import run_sequential
    from mednas_nni.engines.records import arch_hash
    from mednas_nni.engines.search_loop import SearchLoop
    from mednas_nni.experiment import build_strategy

    logging.getLogger("nni").setLevel(logging.ERROR)
    conf = _config(label, cfg, seed, work)
    ctx = new_run(conf, f"{label}-{name}", shared.get("dataset"), shared.get("task"))
    shared.update(dataset=ctx.dataset, task=ctx.task)
    space = ctx.build_space()
    genas = build_strategy(conf)          # GeNAS-WF; for the NNI peers only its trial spec (same training)
    t0 = time.perf_counter()
    if name == "genas_wf":
        loop = SearchLoop(genas, space, ctx)
        run_sequential(loop)
        recs = loop.store.records()
        best = loop.finalists()[0]
        trained = [r["hash"] for r in recs if r["status"] in ("ok", "failed")]
        out = {"trials": loop.evaluations(), "cache_hits": loop.cache_hits,
               "pruned_invalid": loop.store.count("invalid"), "failed": loop.store.count("failed"),
               "best_sample": best["sample"], "best_fitness": best["fitness"],
               "duplicate_trainings": len(trained) - len(set(trained))}
    else:
        inner = (RegularizedEvolution(population_size=cfg["population_size"], sample_size=cfg["tournament_size"],
                                      mutation_prob=cfg["mutation_prob"], seed=seed)
                 if name == "regularized_evolution" else Random(seed=seed))
        pruned: set[str] = set()

        def keep(m) -> bool:
            c = space.canonicalize(m.sample)
            ok, _ = space.is_valid(c)
            if not ok:
                pruned.add(arch_hash(c))
            return ok

        spec = genas.trial(ctx)
        engine = run_nni_peer(Chain(inner, Filter(keep)), space, ctx, "_common:fitness_trial", spec.kwargs,
                              max_model_count=budget)
        models = [m for m in engine.list_models() if m.status == ModelStatus.Trained and m.metric is not None]
        best = max(models, key=lambda m: m.metric)
        hashes = [arch_hash(space.canonicalize(m.sample)) for m in engine.list_models()
                  if m.status in (ModelStatus.Trained, ModelStatus.Failed)]
        out = {"trials": len(hashes), "cache_hits": 0, "pruned_invalid": len(pruned),
               "failed": sum(m.status == ModelStatus.Failed for m in engine.list_models()),
               "best_sample": space.canonicalize(best.sample), "best_fitness": float(best.metric),
               "duplicate_trainings": len(hashes) - len(set(hashes))}
    out["search_seconds"] = time.perf_counter() - t0
    out["run_dir"] = str(ctx.run_dir.path)
    out["_ctx"] = ctx
    return out


def _retrain_and_test(ctx: Any, sample: dict, cfg: dict, seed: int) -> dict:
    """Retrain from scratch through the task, keep the epoch with the best val balanced accuracy, test it once."""
    import copy

    from torch.utils.data import DataLoader

    model = ctx.build_space().freeze(sample)
    best = {"score": -1.0}

    def on_epoch(rec: dict) -> None:
        if rec["val_balanced_acc"] > best["score"]:
            best.update(score=rec["val_balanced_acc"], epoch=rec["epoch"], state=copy.deepcopy(model.state_dict()),
                        val={k[4:]: v for k, v in rec.items() if k.startswith("val_")})

    t0 = time.perf_counter()
    ctx.task.train_curve(model, ctx.dataset, epochs=cfg["retrain_epochs"], batch_size=cfg["batch_size"],
                         lr=cfg["lr"], seed=seed, device=ctx.device, on_epoch=on_epoch)
    model.load_state_dict(best["state"])
    test = ctx.task.evaluate(model, DataLoader(ctx.dataset.dataset("test"), batch_size=256), ctx.device)
    return {"best_epoch": best["epoch"], "val": best["val"], "test": test,
            "params": int(sum(p.numel() for p in model.parameters())), "retrain_seconds": time.perf_counter() - t0}


def _majority(ctx: Any) -> dict:
    """The task's majority-class baseline on the test split (AUC 0.5, balanced accuracy 0.5, F0.5)."""
    m = dict(ctx.task.baseline(ctx.dataset, "test"))
    return {**m, "majority_class": "abnormal" if m.pop("majority_class") else "normal"}


def _local_overhead(seed: int) -> dict:
    """3-trial ``mednas search`` with engine local vs sequential (same seed -> same 3 architectures)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="genas-bench-") as tmp:
        env = {**os.environ, "HOME": tmp, "NNI_CONFIG_DIR": str(Path(tmp) / "nni-config")}
        port = _free_port()
        for engine in ("sequential", "local"):
            cmd = [sys.executable, "-m", "mednas_nni", "search", str(REPO / "examples" / "genas_mhsma.yml"),
                   f"data.params.root={DATA_ROOT}", f"engine.kind={engine}", f"engine.port={port}",
                   "strategy.params.population_size=3", "strategy.params.generations=1",
                   "strategy.params.tournament_size=2", "strategy.params.epochs_per_trial=1",
                   "strategy.params.top_k=1", "strategy.params.torch_threads=1", "evaluator.epochs=1",
                   "evaluator.max_batches_per_epoch=1", f"run.out_dir={tmp}/runs-{engine}", f"run.seed={seed}",
                   "--no-progress"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                out[engine] = {"error": proc.stderr[-2000:]}
                continue
            rd = next(Path(f"{tmp}/runs-{engine}").iterdir())
            st = json.loads((rd / "status.json").read_text())
            recs = [json.loads(line) for line in (rd / "archs.jsonl").read_text().splitlines() if line.strip()]
            trained = [r for r in recs if r["status"] == "ok"]
            out[engine] = {"trials": len(trained), "search_seconds": st["search_seconds"], "command_wall_s": wall,
                           "per_trial_s": st["search_seconds"] / max(len(trained), 1),
                           "trial_train_s": sum(r["metrics"].get("seconds", 0) for r in trained) / max(len(trained), 1)}
    if "error" not in out.get("local", {"error": 1}) and "error" not in out.get("sequential", {"error": 1}):
        out["overhead_per_trial_s"] = out["local"]["per_trial_s"] - out["sequential"]["per_trial_s"]
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _markdown(res: dict) -> str:
    cfg = res["config"]
    lines = [f"# GeNAS-WF vs NNI strategies on MHSMA 64x64 ({res['mode']} mode)", "",
             f"Machine: {res['machine']}. Total wall time {res['total_seconds'] / 60:.1f} min.", "",
             f"Budget per label: GeNAS-WF population {cfg['population_size']} x {cfg['generations']} generations "
             f"(tournament {cfg['tournament_size']}, elitism {cfg['elitism']}, crossover {cfg['crossover_prob']}, "
             f"mutation {cfg['mutation_prob']}); each trial trains {cfg['epochs_per_trial']} epochs"
             f"{' of ' + str(cfg['max_batches_per_epoch']) + ' batches of ' + str(cfg['batch_size']) if cfg['max_batches_per_epoch'] else ''}; NNI "
             "RegularizedEvolution and Random get the number of trainings GeNAS-WF used. Space: "
             f"`{json.dumps(cfg['space'])}`. Best architecture of each search retrained {cfg['retrain_epochs']} "
             "epochs (epoch with the best val balanced accuracy), tested once on the official test split. F0.5: "
             "positive class = abnormal. Accuracies in %.", "",
             "| label | strategy | trials | cache hits | dup. trainings | pruned | search s | best fitness | "
             "test acc | test bal. acc | test F0.5 | test AUC | majority acc | paper acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in res["labels"].items():
        for name, s in r["strategies"].items():
            t = s["test"]
            lines.append(f"| {label} | {name} | {s['trials']} | {s['cache_hits']} | {s['duplicate_trainings']} | "
                         f"{s['pruned_invalid']} | {s['search_seconds']:.0f} | {s['best_fitness']:.3f} | "
                         f"{100 * t['acc']:.2f} | {100 * t['balanced_acc']:.2f} | {100 * t['f05']:.2f} | "
                         f"{100 * t['auc']:.2f} | {100 * r['majority']['acc']:.2f} | {TARGETS[label]:.2f} |")
    lines += ["", "Targets (reported against, not tested): accuracy >= paper (91.66 / 77.33 / 77.66 for vacuole / "
              "head / acrosome), balanced accuracy >= majority + 15 points (i.e. >= 65 %), ahead of both NNI "
              "strategies.", ""]
    for label, r in res["labels"].items():
        g = r["strategies"]["genas_wf"]["test"]
        others = [r["strategies"][k]["test"]["balanced_acc"] for k in r["strategies"] if k != "genas_wf"]
        lines.append(f"- {label}: accuracy {100 * g['acc']:.2f} vs paper {TARGETS[label]:.2f} "
                     f"({'met' if 100 * g['acc'] >= TARGETS[label] else 'not met'}); balanced accuracy "
                     f"{100 * g['balanced_acc']:.2f} vs 65.00 ({'met' if g['balanced_acc'] >= 0.65 else 'not met'}); "
                     f"ahead of both NNI strategies on balanced accuracy: "
                     f"{'yes' if all(g['balanced_acc'] > o for o in others) else 'no'}.")
    lo = res.get("local_overhead", {})
    if "overhead_per_trial_s" in lo:
        lines += ["", f"NNI local training service (one process per trial, 3-trial run, 1 epoch per trial): "
                      f"{lo['local']['per_trial_s']:.1f} s per trial vs {lo['sequential']['per_trial_s']:.1f} s "
                      f"in-process, i.e. about {lo['overhead_per_trial_s']:.1f} s overhead per trial (process "
                      "start, imports, data loading, manager round trips)."]
    elif lo:
        lines += ["", f"NNI local training service overhead: measurement failed ({json.dumps(lo)[:300]})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="cpu")
    ap.add_argument("--labels", default=None, help="comma-separated (default: head,vacuole,acrosome; smoke: head)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-local", action="store_true", help="do not measure the local training service overhead")
    ap.add_argument("--out", default=None, help="results path without suffix (default: "
                    "benchmarks/results/genas_mhsma; smoke mode: <work>/results/genas_mhsma)")
    ap.add_argument("--work", default=None, help="folder for the searches' run directories (default: a new temp dir)")
    args = ap.parse_args(argv)
    _quiet()
    import torch

    cfg = MODES[args.mode]
    if cfg["torch_threads"]:
        torch.set_num_threads(cfg["torch_threads"])   # tiny nets on a shared 2-core box: 1 thread is ~8x faster
    print(f"mode {args.mode}: {json.dumps({k: v for k, v in cfg.items() if k != 'space'})}", flush=True)
    t_all = time.perf_counter()
    res = {"mode": args.mode, "config": cfg, "seed": args.seed, "labels": {},
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                      f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}"}
    work = Path(args.work or tempfile.mkdtemp(prefix="genas-bench-runs-"))
    for label in (args.labels or ("head" if args.mode == "smoke" else "head,vacuole,acrosome")).split(","):
        r: dict = {"majority": None, "strategies": {}}
        budget, shared = None, {}
        for name in ("genas_wf", "regularized_evolution", "random"):
            s = _search(name, label, cfg, args.seed, budget, work, shared)
            ctx = s.pop("_ctx")
            if name == "genas_wf":
                budget = s["trials"]
                r["majority"] = _majority(ctx)
            s.update(_retrain_and_test(ctx, s["best_sample"], cfg, args.seed))
            r["strategies"][name] = s
            print(f"{label:9s} {name:22s} trials {s['trials']:3d} hits {s['cache_hits']:2d} "
                  f"search {s['search_seconds']:6.1f}s fitness {s['best_fitness']:.3f} | test acc "
                  f"{100 * s['test']['acc']:.2f} bacc {100 * s['test']['balanced_acc']:.2f} "
                  f"F0.5 {100 * s['test']['f05']:.2f} AUC {100 * s['test']['auc']:.2f} "
                  f"(majority acc {100 * r['majority']['acc']:.2f})", flush=True)
        res["labels"][label] = r
    if not args.skip_local:
        res["local_overhead"] = _local_overhead(args.seed)
        print(f"local training service: {json.dumps(res['local_overhead'])}", flush=True)
    res["total_seconds"] = time.perf_counter() - t_all
    out = Path(args.out) if args.out else (work / "results" / "genas_mhsma" if args.mode == "smoke"
                                           else REPO / "benchmarks" / "results" / "genas_mhsma")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(_markdown(res))
    print(f"total {res['total_seconds'] / 60:.1f} min; wrote {out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

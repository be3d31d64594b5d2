"""Benchmark: GeNAS-WF vs random search on the ``unet`` space, DSB 2018 nuclei, vs MONAI's plain U-Net.

    python benchmarks/unet_dsb2018.py --mode cpu      # ~10-20 min on 2 CPU cores (the budget is in the table)
    python benchmarks/unet_dsb2018.py --mode full     # a bigger budget, for a GPU
    python benchmarks/unet_dsb2018.py --mode smoke    # < 2 min: checks the script runs (not a benchmark)

Every search is a complete ``mednas search`` of ``examples/unet_dsb2018.yml`` (``run_search``: sequential engine,
hash cache, the same trial ``train_and_score`` through the segmentation task, fitness = GeNAS-WF of the per-epoch
validation Dice, top-1 finalist retrained by the same ``evaluator`` recipe, best epoch by val Dice, tested once),
with the mode's data size, space and budget. Random search gets, per seed, exactly the number of trainings GeNAS-WF
used (its cache hits are free), twice: ``random`` draws from the run seed, so its first batch IS GeNAS-WF's initial
population (a paired design: any difference comes from the GA's offspring), ``random_indep`` from seed + 1000.
The peer is MONAI's ``UNet`` at a fixed, common configuration (channels 16-32-64-128-256, strides 2, two residual
units, instance norm, no dropout: the MONAI tutorial network), trained by the same recipe through ``task.fit`` and
tested the same way; next to it the task's all-background baseline.
Seeds change the run seed (weights, batch order, GA/random draws), never the data split (``split_seed: 0``).

Writes ``benchmarks/results/unet_dsb2018.json`` and ``.md`` (smoke mode: under ``--work``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))   # _common
DATA_ROOT = Path(os.environ.get("MEDNAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "dsb2018"

__all__ = ["MODES", "main"]

MODES = {
    "cpu": dict(size=64, max_images=200, widths=[8, 16], depths=[3, 4], population_size=4, generations=4,
                epochs_per_trial=2, max_batches_per_epoch=5, batch_size=8, lr=0.002, retrain_epochs=5,
                retrain_batches=18, seeds=[0, 1, 2]),
    "full": dict(size=128, max_images=None, widths=[8, 16, 32, 64], depths=[3, 4, 5], population_size=12,
                 generations=6, epochs_per_trial=10, max_batches_per_epoch=None, batch_size=16, lr=0.001,
                 retrain_epochs=60, retrain_batches=None, seeds=[0, 1, 2]),
    "smoke": dict(size=32, max_images=30, widths=[4, 8], depths=[3, 4], population_size=2, generations=2,
                  epochs_per_trial=1, max_batches_per_epoch=2, batch_size=4, lr=0.002, retrain_epochs=1,
                  retrain_batches=2, seeds=[0]),
}
MONAI_PEER = dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="instance")


def _overrides(cfg: dict, seed: int, work: Path, strategy: str, trainings: int | None,
               strategy_seed: int | None = None, name: str | None = None) -> list[str]:
    trial = {k: cfg[k] for k in ("epochs_per_trial", "max_batches_per_epoch", "batch_size", "lr")}
    trial.update(fitness="genas_wf", top_k=1, torch_threads=cfg["threads"])
    if strategy == "genas_wf":
        params = dict(trial, population_size=cfg["population_size"], generations=cfg["generations"],
                      tournament_size=2, elitism=1, crossover_prob=0.9, mutation_prob=0.2)
    else:
        params = dict(trial, num_samples=trainings, batch_size_archs=cfg["population_size"], seed=strategy_seed)
    return [f"data.params.root={DATA_ROOT}", f"data.params.size={cfg['size']}",
            f"data.params.max_images={json.dumps(cfg['max_images'])}", f"space.params.widths={cfg['widths']}",
            f"space.params.depths={cfg['depths']}", f"strategy.name={strategy}",
            f"strategy.params={json.dumps(params)}", "engine.kind=sequential", "export=null",
            f"evaluator.epochs={cfg['retrain_epochs']}", f"evaluator.batch_size={cfg['batch_size']}",
            f"evaluator.lr={cfg['lr']}", f"evaluator.max_batches_per_epoch={json.dumps(cfg['retrain_batches'])}",
            f"run.seed={seed}", f"run.out_dir={work}", f"run.name={name or strategy}-s{seed}", "run.progress=false"]


def _search(cfg: dict, seed: int, work: Path, strategy: str, trainings: int | None = None,
            strategy_seed: int | None = None, name: str | None = None) -> dict:
    from mednas_nni.config import load_config
    from mednas_nni.experiment import run_search

    conf = load_config(REPO / "examples" / "unet_dsb2018.yml",
                       _overrides(cfg, seed, work, strategy, trainings, strategy_seed, name))
    t0 = time.perf_counter()
    rd = run_search(conf)
    m = json.loads((rd.path / "metrics.json").read_text())
    summary = json.loads((rd.path / "search_summary.json").read_text())
    return {"trainings": m["search"]["evaluated"], "cache_hits": summary.get("cache_hits", 0),
            "best_arch": json.loads((rd.path / "best_arch.json").read_text()),
            "describe": summary["finalists"][0]["describe"], "params": m["params"], "val": m["val"],
            "test": m["test"], "baseline_test": m["baseline_test"], "search_seconds": m["search"]["seconds"],
            "retrain_seconds": m["retrain"]["seconds"], "total_seconds": time.perf_counter() - t0,
            "run_dir": str(rd.path)}


def _monai_peer(cfg: dict, seed: int, work: Path) -> dict:
    import torch
    from monai.networks.nets import UNet
    from torch.utils.data import DataLoader

    from mednas_nni.config import load_config
    from mednas_nni.experiment import build_dataset, build_task

    conf = load_config(REPO / "examples" / "unet_dsb2018.yml", _overrides(cfg, seed, work, "genas_wf", None))
    dataset = build_dataset(conf)
    task = build_task(conf, dataset)
    info = dataset.info
    torch.manual_seed(seed)
    model = UNet(spatial_dims=2, in_channels=info.in_channels, out_channels=info.num_classes, **MONAI_PEER)
    t0 = time.perf_counter()
    fit = task.fit(model, dataset, conf.evaluator, device="cpu", seed=seed)
    test = task.evaluate(model, DataLoader(dataset.dataset("test"), batch_size=256), "cpu")
    return {"val": fit["val"], "test": test, "best_epoch": fit["best_epoch"],
            "params": int(sum(p.numel() for p in model.parameters())), "retrain_seconds": time.perf_counter() - t0}


def _first_batch(run: dict, n: int) -> list[str]:
    """The first ``n`` lines of a run's ``archs.jsonl`` (GeNAS-WF: its initial population)."""
    return (Path(run["run_dir"]) / "archs.jsonl").read_text().splitlines()[:n]


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def _markdown(res: dict) -> str:
    cfg, m = res["budget"], res["machine"]
    lines = [f"# GeNAS-WF vs random search on `unet`, DSB 2018 nuclei ({res['mode']} mode)", "",
             f"Machine: {m['cpu']}, {m['cores']} logical CPUs, torch {m['torch']}, no GPU; {m['date']}. "
             f"torch threads {cfg['threads']}. Load average at start {res['load_start']}, at end "
             f"{res['load_end']} (shared machine).", "",
             f"Budget: {cfg['size']}x{cfg['size']} px RGB, {cfg['max_images']} of the 670 images (seeded split "
             f"70/15/15: {res['split_sizes']}); space depths {cfg['depths']} x widths {cfg['widths']} x conv/"
             f"residual x batch/instance norm x dropout 0/0.1. GeNAS-WF population {cfg['population_size']} x "
             f"{cfg['generations']} generations; random search = the same number of trainings per seed. Each "
             f"trial: {cfg['epochs_per_trial']} epochs x {cfg['max_batches_per_epoch']} batches of "
             f"{cfg['batch_size']}, fitness GeNAS-WF of val Dice. Finalist (top-1) and MONAI peer retrained "
             f"{cfg['retrain_epochs']} epochs (batch {cfg['batch_size']}, Adam lr {cfg['lr']}), best epoch by "
             f"val Dice, tested once. Seeds {cfg['seeds']}.", "",
             "MONAI peer: `monai.networks.nets.UNet` channels 16-32-64-128-256, strides 2, 2 residual units, "
             "instance norm, no dropout; that network is also a member of the `unet` space (depth 4, width 16, "
             "residual, instance, dropout 0), so its gap to a search that found it is seed noise.", "",
             "| method | trainings | val Dice | test Dice | test IoU | test HD95 (px) | params | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in res["summary"].items():
        lines.append(f"| {name} | {r['trainings']} | {r['val_dice']['mean']:.3f} ± {r['val_dice']['std']:.3f} | "
                     f"{r['test_dice']['mean']:.3f} ± {r['test_dice']['std']:.3f} | "
                     f"{r['test_iou']['mean']:.3f} ± {r['test_iou']['std']:.3f} | "
                     f"{r['test_hd95']['mean']:.1f} ± {r['test_hd95']['std']:.1f} | {r['params']} | "
                     f"{r['seconds']['mean']:.0f} |")
    b = res["baseline_test"]
    lines += [f"| all-background baseline | - | 0 | {b['dice']:.3f} | {b['iou']:.3f} | {b['hd95']:.1f} | 0 | 0 |",
              "", "Mean ± sample std over seeds; time = search + retraining per seed. Winners per seed:", ""]
    for name in ("genas_wf", "random", "random_indep"):
        for s, r in zip(cfg["seeds"], res["runs"][name]):
            lines.append(f"- {name} seed {s}: {r['describe']} ({r['trainings']} trainings, "
                         f"{r['cache_hits']} cache hits), test Dice {r['test']['dice']:.3f}")
    lines += ["", res["verdict"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="cpu")
    ap.add_argument("--work", type=Path, default=None, help="folder for the run directories (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: robust on a shared "
                    "2-core machine, where 2 threads slowed training up to 10x when another process ran)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    import torch

    from _common import machine, write_results

    cfg = dict(MODES[args.mode], threads=args.threads)
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="unet_dsb2018-"))
    out = work if args.mode == "smoke" else args.out
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"genas_wf": [], "random": [], "random_indep": [], "monai_unet": []}
    for seed in cfg["seeds"]:
        g = _search(cfg, seed, work, "genas_wf")
        runs["genas_wf"].append(g)
        runs["random"].append(_search(cfg, seed, work, "random", g["trainings"], seed))
        runs["random_indep"].append(_search(cfg, seed, work, "random", g["trainings"], seed + 1000, "random_indep"))
        runs["monai_unet"].append(_monai_peer(cfg, seed, work))
        print(f"seed {seed}: test Dice " + ", ".join(f"{k} {v[-1]['test']['dice']:.3f}" for k, v in runs.items()),
              flush=True)
    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "trainings": "/".join(str(r.get("trainings", 0)) for r in rs) if name != "monai_unet" else "0 (fixed)",
            "val_dice": _stats([r["val"]["dice"] for r in rs]), "test_dice": _stats([r["test"]["dice"] for r in rs]),
            "test_iou": _stats([r["test"]["iou"] for r in rs]), "test_hd95": _stats([r["test"]["hd95"] for r in rs]),
            "params": "/".join(f"{r['params']:,}" for r in rs),
            "seconds": _stats([r.get("search_seconds", 0) + r["retrain_seconds"] for r in rs])}
    g = summary["genas_wf"]["test_dice"]["mean"]
    same_start = sum(r["best_arch"] in [json.loads(x)["sample"] for x in _first_batch(r, cfg["population_size"])]
                     for r in runs["genas_wf"])
    verdict = (f"Verdict: test Dice of GeNAS-WF minus random (paired) "
               f"{g - summary['random']['test_dice']['mean']:+.3f}, "
               f"minus random (independent draws) {g - summary['random_indep']['test_dice']['mean']:+.3f}, minus "
               f"the fixed MONAI U-Net {g - summary['monai_unet']['test_dice']['mean']:+.3f} (means over "
               f"{len(cfg['seeds'])} seeds; differences within about one std are noise). GeNAS-WF's winner came "
               f"from its random initial population in {same_start} of {len(cfg['seeds'])} seeds.")
    res = {"mode": args.mode, "budget": cfg, "monai_peer": {k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in MONAI_PEER.items()},
           "machine": machine(), "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2),
           "baseline_test": runs["genas_wf"][0]["baseline_test"],
           "summary": summary, "runs": runs, "verdict": verdict}
    from mednas_nni.config import load_config
    from mednas_nni.experiment import build_dataset

    res["split_sizes"] = build_dataset(load_config(REPO / "examples" / "unet_dsb2018.yml",
                                                   _overrides(cfg, 0, work, "genas_wf", None))).info.split_sizes
    write_results(out, "unet_dsb2018", res, _markdown(res))
    print(_markdown(res))
    print(f"wrote {out / 'unet_dsb2018.json'} and .md; run directories under {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: NAS-SCAM (searched attention) vs the same U-Net without attention, with fixed SE and with fixed CBAM.

    nice -n 10 python benchmarks/scam_seg.py --mode cpu     # sized for 2 CPU cores (see MODES; tens of minutes)
    python benchmarks/scam_seg.py --mode full               # the authors' scale, for a GPU
    python benchmarks/scam_seg.py --mode smoke              # checks the script runs (not a benchmark)

Data: ``../shared/data/wbc_seg`` (3 classes: background, cytoplasm, nucleus; both subsets, seeded split) and
``../shared/data/dsb2018`` (binary nuclei), through the ``folder`` plugin with the mode's size and image count.

* **scam**: a complete ``mednas search`` of ``examples/scam_wbc.yml`` (``run_search``: the ``scam`` one-shot search on
  the ``scam_unet`` supernet, the derived network retrained by the ``evaluator`` recipe, best epoch by val Dice,
  tested once). Search time = the one-shot search; training time = the retraining.
* **unet / se / cbam**: the same backbone (:class:`~mednas_nni.search_spaces.attention_unet.AttentionUNet`, same
  root width, norm and dropout) with no attention, MONAI's ``ChannelSELayer`` (SE) or CBAM after every down and up
  block, trained by the same recipe through ``task.fit`` (same epochs, batch, lr, best epoch by val Dice) and tested
  the same way. Next to them the task's all-background baseline.

Seeds change the run seed (weights, batch order, α initialisation), never the data split (``split_seed: 0``).
Targets reported against: test Dice of scam >= unet + 0.02 and >= max(se, cbam); search time <= 2 x the training
time of the plain U-Net. Writes ``benchmarks/results/scam_seg.json`` and ``.md`` (smoke mode: under ``--work``).
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
SHARED = Path(os.environ.get("MEDNAS_SHARED_DATA", REPO.parent / "shared" / "data"))

__all__ = ["MODES", "DATASETS", "main"]

MODES = {
    "cpu": dict(size=32, max_images=60, root_width=8, hidden=8, search_epochs=6, warmup=2, search_batches=4,
                batch_size=4, val_batches=1, arc_lr=0.005, lr=0.002, retrain_epochs=15, retrain_batch=8,
                retrain_batches=6, seeds=[0, 1, 2], datasets=["wbc_seg", "dsb2018"]),
    "full": dict(size=128, max_images=None, root_width=16, hidden=32, search_epochs=60, warmup=10,
                 search_batches=None, batch_size=4, val_batches=None, arc_lr=0.001, lr=0.001, retrain_epochs=100,
                 retrain_batch=8, retrain_batches=None, seeds=[0, 1, 2], datasets=["wbc_seg", "dsb2018"]),
    "smoke": dict(size=32, max_images=24, root_width=4, hidden=8, search_epochs=3, warmup=1, search_batches=2,
                  batch_size=4, val_batches=1, arc_lr=0.003, lr=0.002, retrain_epochs=1, retrain_batch=4,
                  retrain_batches=2, seeds=[0], datasets=["wbc_seg"]),
}
DATASETS = {
    "wbc_seg": [],                       # examples/scam_wbc.yml as it is (classes.json names the 3 classes)
    "dsb2018": ["data.params.label_map={0: 0, 255: 1}", "data.params.label_names=[background, nucleus]",
                "data.params.name=dsb2018", "data.params.licence=CC0",
                "data.params.citation=Caicedo et al., Nat. Methods 16:1247-1253 (2019)"],
}
PEERS = ("unet", "se", "cbam")


def _overrides(cfg: dict, dataset: str, seed: int, work: Path, threads: int) -> list[str]:
    strategy = dict(epochs=cfg["search_epochs"], warmup_epochs=cfg["warmup"], alternation="epoch", weight_every=3,
                    batch_size=cfg["batch_size"], max_batches_per_epoch=cfg["search_batches"],
                    max_val_batches=cfg["val_batches"], lr=cfg["lr"], arc_learning_rate=cfg["arc_lr"], loss="task",
                    balanced_sampler=False, torch_threads=threads)
    return [f"data.params.root={SHARED / dataset}", f"data.params.size={cfg['size']}",
            f"data.params.max_images={json.dumps(cfg['max_images'])}", *DATASETS[dataset],
            f"space.params.root_width={cfg['root_width']}", f"space.params.hidden_channels={cfg['hidden']}",
            f"strategy.params={json.dumps(strategy)}",
            f"evaluator.epochs={cfg['retrain_epochs']}", f"evaluator.batch_size={cfg['retrain_batch']}",
            f"evaluator.lr={cfg['lr']}", f"evaluator.max_batches_per_epoch={json.dumps(cfg['retrain_batches'])}",
            "export=null", f"run.seed={seed}", f"run.out_dir={work}", f"run.name=scam-{dataset}-s{seed}",
            "run.progress=false"]


def _scam(conf: Any) -> dict[str, Any]:
    from mednas_nni.experiment import run_search

    rd = run_search(conf)
    m = json.loads((rd.path / "metrics.json").read_text())
    arch = json.loads((rd.path / "best_arch.json").read_text())
    sample = arch.get("sample", arch)
    return {"test": m["test"], "val": m["val"], "params": m["params"], "baseline_test": m["baseline_test"],
            "search_seconds": m["search"]["seconds"], "train_seconds": m["retrain"]["seconds"],
            "edges_kept": sum(v != "none" for v in sample.values() if isinstance(v, str)),
            "edges": sum(isinstance(v, str) for v in sample.values()), "run_dir": str(rd.path)}


def _peer(kind: str, conf: Any, seed: int) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from mednas_nni.experiment import build_dataset, build_task, resolve_device
    from mednas_nni.search_spaces.attention_fixed import fixed_attention
    from mednas_nni.search_spaces.attention_unet import AttentionUNet

    dataset = build_dataset(conf)
    task = build_task(conf, dataset)
    info, sp = dataset.info, conf.space.params
    device = resolve_device(conf.run.device)
    torch.manual_seed(seed)
    model = AttentionUNet(info.in_channels, info.num_classes, int(sp["root_width"]),
                          fixed_attention("none" if kind == "unet" else kind), dropout=float(sp.get("dropout", 0.2)))
    t0 = time.perf_counter()
    fit = task.fit(model, dataset, conf.evaluator, device=device, seed=seed)
    seconds = time.perf_counter() - t0
    test = task.evaluate(model, DataLoader(dataset.dataset("test"), batch_size=64), device)
    return {"test": test, "val": fit["val"], "best_epoch": fit["best_epoch"], "train_seconds": seconds,
            "params": int(sum(p.numel() for p in model.parameters()))}


def _stats(values: list[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "values": vals}


def _summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out = {}
    for name, rs in runs.items():
        keys = [k for k in rs[0]["test"] if k.startswith("dice") or k in ("hd95", "iou")]
        out[name] = {k: _stats([r["test"][k] for r in rs]) for k in keys}
        out[name]["params"] = rs[0]["params"]
        out[name]["train_seconds"] = _stats([r["train_seconds"] for r in rs])
        if name == "scam":
            out[name]["search_seconds"] = _stats([r["search_seconds"] for r in rs])
            out[name]["params"] = _stats([r["params"] for r in rs])
    return out


def _verdict(ds: str, s: dict[str, Any]) -> list[str]:
    scam, unet = s["scam"]["dice"]["mean"], s["unet"]["dice"]["mean"]
    fixed = max(s["se"]["dice"]["mean"], s["cbam"]["dice"]["mean"])
    ratio = s["scam"]["search_seconds"]["mean"] / s["unet"]["train_seconds"]["mean"]
    return [f"- {ds}: scam test Dice {scam:.3f} vs plain U-Net {unet:.3f} ({100 * (scam - unet):+.1f} points; target "
            f"+2: {'met' if scam - unet >= 0.02 else 'NOT met'}), vs best fixed attention {fixed:.3f} "
            f"({'met' if scam >= fixed else 'NOT met'}); search time = {ratio:.2f} x the plain U-Net's training "
            f"time (target <= 2: {'met' if ratio <= 2 else 'NOT met'})."]


def _markdown(res: dict[str, Any]) -> str:
    cfg, m = res["budget"], res["machine"]
    lines = [f"# NAS-SCAM vs plain / SE / CBAM U-Nets ({res['mode']} mode)", "",
             f"Machine: {m['cpu']}, {m['cores']} logical CPUs, torch {m['torch']}, "
             f"{'GPU ' + m['cuda'] if m['cuda'] else 'no GPU'}; {m['date']}. torch threads {m['torch_threads']}. "
             f"Load average at start {res['load_start']}, at end {res['load_end']} (a shared machine: times are "
             "indicative only).", "",
             f"Budget: {cfg['size']}x{cfg['size']} px RGB, {cfg['max_images']} images per data set (seeded split "
             f"70/15/15), root width {cfg['root_width']} (levels r..16r, GroupNorm(4), dropout 0.1, MONAI BasicUNet "
             f"blocks). NAS-SCAM search: {cfg['search_epochs']} epochs ({cfg['warmup']} warm-up, then alpha "
             f"epochs except every third), {cfg['search_batches']} batches of {cfg['batch_size']}, alpha on the val "
             f"split. Every network (the derived SCAM-U-Net and the three peers) trained {cfg['retrain_epochs']} "
             f"epochs x {cfg['retrain_batches']} batches of {cfg['retrain_batch']} (Adam lr {cfg['lr']}, the task's "
             f"DiceCE), best epoch by val Dice, tested once. Seeds {cfg['seeds']}.", ""]
    for ds, block in res["datasets"].items():
        s, names = block["summary"], block["class_keys"]
        lines += [f"## {ds} (split {block['split_sizes']})", "",
                  "| model | test Dice (mean fg) | " + " | ".join(f"Dice {c}" for c in names) +
                  " | HD95 (px) | params | training (s) | search (s) |",
                  "|---|---|" + "---|" * len(names) + "---|---|---|---|"]
        for name in ("scam", *PEERS):
            r = s[name]
            params = r["params"]["mean"] if isinstance(r["params"], dict) else r["params"]
            search = f"{r['search_seconds']['mean']:.0f}" if "search_seconds" in r else "-"
            lines.append(f"| {name} | {r['dice']['mean']:.3f} ± {r['dice']['std']:.3f} | " +
                         " | ".join(f"{r['dice_' + c]['mean']:.3f} ± {r['dice_' + c]['std']:.3f}" for c in names) +
                         f" | {r['hd95']['mean']:.1f} ± {r['hd95']['std']:.1f} | {params:,.0f} | "
                         f"{r['train_seconds']['mean']:.0f} | {search} |")
        b = block["baseline_test"]
        lines += [f"| all-background | {b['dice']:.3f} | " + " | ".join(f"{b.get('dice_' + c, 0):.3f}" for c in names)
                  + f" | {b['hd95']:.1f} | 0 | 0 | - |", ""]
        kept = [r["edges_kept"] for r in block["runs"]["scam"]]
        lines += [f"Derived SCAM networks kept {kept} of {block['runs']['scam'][0]['edges']} attention edges "
                  "(the rest derived as `none`) per seed.", ""]
    lines += ["Mean ± sample std over seeds (per-seed values in the JSON). Search time = the one-shot search phase of "
              "the run (supernet training, per-epoch supernet validation, figures); training time = one training of "
              "the network by the common recipe. With 3 seeds and standard deviations of this size, a difference "
              "smaller than about two standard deviations is not evidence either way; in CPU mode every network is "
              "far from converged.", "", "Targets:", "", *res["verdict"], ""]
    return "\n".join(lines)


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="cpu")
    ap.add_argument("--work", type=Path, default=None, help="run directories (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for everything (1: the supernet's ~600 small convolutions per step ran 25x "
                         "faster on 1 thread than on 2 on a busy 2-core machine)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    import torch

    from _common import machine, write_results
    from mednas_nni.config import load_config

    torch.set_num_threads(args.threads)
    cfg = MODES[args.mode]
    work = args.work or Path(tempfile.mkdtemp(prefix="scam_seg-"))
    out = work if args.mode == "smoke" and args.out == REPO / "benchmarks" / "results" else args.out
    res: dict[str, Any] = {"mode": args.mode, "budget": cfg, "machine": machine(), "load_start": _load(),
                           "datasets": {}, "verdict": []}
    for ds in cfg["datasets"]:
        runs: dict[str, list[dict[str, Any]]] = {"scam": [], **{p: [] for p in PEERS}}
        block: dict[str, Any] = {}
        for seed in cfg["seeds"]:
            conf = load_config(REPO / "examples" / "scam_wbc.yml", _overrides(cfg, ds, seed, work, args.threads))
            t0 = time.perf_counter()
            runs["scam"].append(_scam(conf))
            block["baseline_test"] = runs["scam"][-1]["baseline_test"]
            for peer in PEERS:
                runs[peer].append(_peer(peer, load_config(REPO / "examples" / "scam_wbc.yml",
                                                          _overrides(cfg, ds, seed, work, args.threads)), seed))
            print(f"{ds} seed {seed}: " + ", ".join(f"{k} {v[-1]['test']['dice']:.3f}" for k, v in runs.items()) +
                  f" ({time.perf_counter() - t0:.0f} s, load {_load()})", flush=True)
        from mednas_nni.experiment import build_dataset

        info = build_dataset(conf).info
        block.update(runs=runs, summary=_summary(runs), split_sizes=info.split_sizes,
                     class_keys=[k[5:] for k in runs["scam"][0]["test"] if k.startswith("dice_")])
        res["datasets"][ds] = block
        res["verdict"] += _verdict(ds, block["summary"])
        res["load_end"] = _load()
        write_results(out, "scam_seg", res, _markdown(res))      # after every data set: partial results survive
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

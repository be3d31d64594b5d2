"""Benchmark: complexity-constrained DARTS (Auto-LW-MISN) on DSB 2018 nuclei vs λ = 0 and MONAI U-Nets.

    nice -n 10 python benchmarks/cc_darts_nuclei.py --mode cpu     # 2 CPU cores: tens of minutes (budget in the table)
    python benchmarks/cc_darts_nuclei.py --mode full               # the paper's 256 px, 25 + 30 epochs: a GPU
    python benchmarks/cc_darts_nuclei.py --mode smoke              # a couple of minutes: checks the script runs

Per seed (the run seed: weights, batch order, α init; never the data split):

* ``cc_darts``: ``mednas search examples/cc_darts_dsb2018.yml`` (``run_search``: search on train/val, the derived
  network retrained by the ``evaluator`` recipe with λ = 0, best epoch by val Dice, tested once) with the paper's
  λ1 = 0.015, λ2 = 0.005;
* ``cc_darts λ=0``: the same search without the penalty (DARTS on the same space, same engine);
* MONAI ``BasicUNet`` and ``UNet`` (fixed configurations below) trained by the same recipe through ``task.fit``.

Reported per method, mean ± std over the seeds: test DSC and IoU (the task's foreground Dice / IoU), params, GMACs
of one image (``torch.utils.flop_counter`` / 2: multiply-accumulates, the paper's "FLOPs"), onnxruntime CPU
latency (batch 1, 1 thread, median), search and retraining time. The penalty's step-time overhead is measured apart:
the CPU time (``time.process_time``, one torch thread) of the same number of search steps of NNI's own first-order
DARTS (``nni.nas.strategy.DARTS``) and of our engine with the cc-DARTS penalty, on the same supernet and batches.
Writes ``benchmarks/results/cc_darts_nuclei.json`` and ``.md`` (smoke mode: under ``--work``).
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
CONFIG = REPO / "examples" / "cc_darts_dsb2018.yml"

__all__ = ["MODES", "main"]

MODES = {
    "cpu": dict(size=48, max_images=80, channels=8, blocks=(2, 3, 2), search_epochs=2, search_batches=4,
                batch_size=4, retrain_epochs=3, retrain_batches=None, val_batches=2, seeds=[0, 1, 2],
                overhead_steps=3, latency_runs=20, monai_features=(16, 16, 32, 64, 128, 16),
                monai_channels=(16, 32, 64, 128), monai_strides=(2, 2, 2)),
    "full": dict(size=256, max_images=None, channels=32, blocks=(2, 3, 2), search_epochs=25, search_batches=None,
                 batch_size=2, retrain_epochs=30, retrain_batches=None, val_batches=None, seeds=[0, 1, 2],
                 overhead_steps=50, latency_runs=50, monai_features=(32, 32, 64, 128, 256, 32),
                 monai_channels=(64, 128, 256, 512, 1024), monai_strides=(2, 2, 2, 2)),
    "smoke": dict(size=32, max_images=24, channels=4, blocks=(1, 1, 1), search_epochs=1, search_batches=2,
                  batch_size=4, retrain_epochs=1, retrain_batches=2, val_batches=1, seeds=[0], overhead_steps=2,
                  latency_runs=3, monai_features=(4, 4, 8, 16, 32, 4), monai_channels=(4, 8, 16),
                  monai_strides=(2, 2)),
}
PAPER = {"lambda_params": 0.015, "lambda_flops": 0.005}
TARGETS = "paper (DSB 2018, 256 px): DSC >= 92.11 % with <= 0.6 M params; >= 10x fewer params than the U-Nets at " \
          "equal or better DSC; penalty overhead <= 10 %"


def _overrides(cfg: dict, seed: int, work: Path, lam: dict, name: str) -> list[str]:
    e, m, d = cfg["blocks"]
    o = [f"data.params.root={DATA_ROOT}", f"data.params.size={cfg['size']}",
         f"data.params.max_images={json.dumps(cfg['max_images'])}",
         f"space.params.channels={cfg['channels']}", f"space.params.encoder_blocks={e}",
         f"space.params.middle_blocks={m}", f"space.params.decoder_blocks={d}",
         f"strategy.params.epochs={cfg['search_epochs']}", f"strategy.params.batch_size={cfg['batch_size']}",
         f"strategy.params.max_batches_per_epoch={json.dumps(cfg['search_batches'])}",
         f"strategy.params.max_val_batches={json.dumps(cfg['val_batches'])}",
         f"strategy.params.lambda_params={lam['lambda_params']}", f"strategy.params.lambda_flops={lam['lambda_flops']}",
         f"evaluator.epochs={cfg['retrain_epochs']}", f"evaluator.batch_size={cfg['batch_size']}",
         f"evaluator.max_batches_per_epoch={json.dumps(cfg['retrain_batches'])}",
         "export=null", f"run.seed={seed}", f"run.out_dir={work}", f"run.name={name}", "run.progress=false"]
    if cfg["size"] < 64:
        o.append(f"strategy.params.cutout={cfg['size'] // 4}")
    return o


def _deploy_numbers(model: Any, in_channels: int, size: int, runs: int, work: Path, name: str) -> dict:
    """Params, GMACs (one image), onnxruntime CPU latency (batch 1, 1 thread)."""
    import numpy as np
    import torch

    from mednas_nni.exporters._convert import export_onnx
    from mednas_nni.exporters._measure import count_flops, measure_ort_latency

    model = model.cpu().eval()
    path = export_onnx(model, work / f"{name}.onnx", (in_channels, size, size))
    x = np.random.default_rng(0).standard_normal((1, in_channels, size, size)).astype(np.float32)
    lat = measure_ort_latency(path, x, runs=runs, threads=1)
    return {"params": int(sum(p.numel() for p in model.parameters())),
            "gmacs": count_flops(model, (in_channels, size, size)) / 2 / 1e9, "ort_ms": lat["median_ms"],
            "torch_threads": torch.get_num_threads()}


def _cc_darts(cfg: dict, seed: int, work: Path, lam: dict, name: str) -> dict:
    from mednas_nni.config import load_config
    from mednas_nni.experiment import load_trained, run_search

    conf = load_config(CONFIG, _overrides(cfg, seed, work, lam, name))
    t0 = time.perf_counter()
    rd = run_search(conf)
    m = json.loads((rd.path / "metrics.json").read_text())
    fin = json.loads((rd.path / "finalists.json").read_text())[0]
    trained = load_trained(rd.path)
    dep = _deploy_numbers(trained.model, trained.dataset.info.in_channels, cfg["size"], cfg["latency_runs"], work,
                          f"{name}-{seed}")
    return {"test": m["test"], "val": m["val"], "baseline_test": m["baseline_test"], **dep,
            "describe": fin["describe"], "searched_cost": fin.get("searched_cost"),
            "search_seconds": m["search"]["seconds"], "retrain_seconds": m["retrain"]["seconds"],
            "total_seconds": time.perf_counter() - t0, "run_dir": str(rd.path)}


def _monai(cfg: dict, seed: int, work: Path, kind: str) -> dict:
    import torch
    from monai.networks.nets import BasicUNet, UNet
    from torch.utils.data import DataLoader

    from mednas_nni.config import load_config
    from mednas_nni.experiment import build_dataset, build_task

    conf = load_config(CONFIG, _overrides(cfg, seed, work, {"lambda_params": 0, "lambda_flops": 0}, kind))
    dataset = build_dataset(conf)
    task = build_task(conf, dataset)
    info = dataset.info
    torch.manual_seed(seed)
    if kind == "BasicUNet":
        model = BasicUNet(spatial_dims=2, in_channels=info.in_channels, out_channels=info.num_classes,
                          features=cfg["monai_features"])
    else:
        model = UNet(spatial_dims=2, in_channels=info.in_channels, out_channels=info.num_classes,
                     channels=cfg["monai_channels"], strides=cfg["monai_strides"], num_res_units=2)
    t0 = time.perf_counter()
    fit = task.fit(model, dataset, conf.evaluator, device="cpu", seed=seed)
    seconds = time.perf_counter() - t0
    test = task.evaluate(model, DataLoader(dataset.dataset("test"), batch_size=64), "cpu")
    dep = _deploy_numbers(model, info.in_channels, cfg["size"], cfg["latency_runs"], work, f"{kind}-{seed}")
    return {"test": test, "val": fit["val"], **dep, "search_seconds": 0.0, "retrain_seconds": seconds}


def _overhead(cfg: dict, work: Path) -> dict:
    """CPU seconds per search step (the first step left out): NNI's own first-order DARTS vs our engine with the
    cc-DARTS penalty, on the same supernet, data and Lightning evaluator; timed by a callback around each step."""
    import copy

    import pytorch_lightning as pl
    from nni.nas.strategy import DARTS

    from mednas_nni.config import load_config
    from mednas_nni.engines.oneshot import build_evaluator, fit_oneshot, make_loader
    from mednas_nni.engines.oneshot_engine import EngineDARTS, ExpectedCost, OneShotHooks, OneShotParams
    from mednas_nni.experiment import RunContext, build_dataset, build_task
    from mednas_nni.io import RunDir
    from mednas_nni.strategies.cc_darts import ComplexityPenalty

    class StepTimer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_start(self, *args: Any) -> None:
            self.t0 = time.process_time()

        def on_train_batch_end(self, *args: Any) -> None:
            self.times.append(time.process_time() - self.t0)

    conf = load_config(CONFIG, _overrides(cfg, 0, work, PAPER, "overhead"))
    dataset = build_dataset(conf)
    task = build_task(conf, dataset)
    space = RunContext(conf, RunDir.create(work, "overhead-space"), dataset, task, "cpu", False).build_space()
    steps, bs = cfg["overhead_steps"] + 1, cfg["batch_size"]
    out: dict[str, Any] = {}
    for which in ("nni_darts", "cc_darts_engine", "nni_darts_again", "cc_darts_engine_again"):
        pl.seed_everything(0, verbose=False)
        if which.startswith("nni_darts"):
            st = DARTS(arc_learning_rate=6e-4, gradient_clip_val=5.0)
        else:
            params = OneShotParams(epochs=1, batch_size=bs, lr=5e-3, arc_learning_rate=6e-4, checkpoint=False)
            costs = ExpectedCost.from_space(space)
            st = EngineDARTS(params, OneShotHooks(penalty=ComplexityPenalty(costs, **PAPER), costs=costs))
        net = st.mutate_model(copy.deepcopy(space))
        timer = StepTimer()
        ev = build_evaluator(task, make_loader(dataset.dataset("train"), bs, shuffle=True, seed=0),
                             make_loader(dataset.dataset("val"), bs, shuffle=True, seed=1), run_dir=work,
                             device="cpu", max_epochs=1, lr=5e-3, weight_decay=3e-4, dataset=dataset,
                             callbacks=[timer], limit_train_batches=steps)
        fit_oneshot(st.mutate_evaluator(ev), net)
        out[which] = statistics.fmean(timer.times[1:]) if len(timer.times) > 1 else timer.times[0]
    base = min(out["nni_darts"], out["nni_darts_again"])
    ours = min(out["cc_darts_engine"], out["cc_darts_engine_again"])
    out.update(overhead_pct=100.0 * (ours / base - 1.0), steps=steps - 1, nni_darts_best=base, cc_darts_best=ours)
    return out


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def _summary(runs: list[dict]) -> dict:
    keys = {"dsc": lambda r: 100 * r["test"]["dice"], "miou": lambda r: 100 * r["test"]["iou"],
            "params": lambda r: r["params"], "gmacs": lambda r: r["gmacs"], "ort_ms": lambda r: r["ort_ms"],
            "search_s": lambda r: r["search_seconds"], "retrain_s": lambda r: r["retrain_seconds"]}
    return {k: _stats([float(f(r)) for r in runs]) for k, f in keys.items()}


def _fmt(s: dict, digits: int = 2, scale: float = 1.0) -> str:
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"


def _markdown(res: dict) -> str:
    cfg, m = res["budget"], res["machine"]
    lines = [f"# Complexity-constrained DARTS (Auto-LW-MISN) on DSB 2018 nuclei ({res['mode']} mode)", "",
             f"Machine: {m['cpu']}, {m['cores']} logical CPUs, torch {m['torch']}, "
             f"{'GPU ' + m['cuda'] if m['cuda'] else 'no GPU'}; {m['date']}. {res['load_note']}", "",
             f"Budget: {cfg['size']} px, {cfg['max_images'] or 670} images (seeded 70/15/15 split), lw_misn "
             f"{'/'.join(map(str, cfg['blocks']))} blocks, {cfg['channels']} channels; search {cfg['search_epochs']} "
             f"epochs x {cfg['search_batches'] or 'all'} batches of {cfg['batch_size']}; retraining (every method, "
             f"λ = 0) {cfg['retrain_epochs']} epochs, batch {cfg['batch_size']}, Adam 6e-3; seeds "
             f"{res['seeds_done']} of {cfg['seeds']} done. Test split only for the final numbers.", "",
             "| method | test DSC % | test IoU % | params | GMACs / image | ORT CPU ms | search s | retrain s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in res["summary"].items():
        lines.append(f"| {name} | {_fmt(s['dsc'])} | {_fmt(s['miou'])} | {s['params']['mean']:,.0f} ± "
                     f"{s['params']['std']:,.0f} | {_fmt(s['gmacs'], 4)} | {_fmt(s['ort_ms'])} | "
                     f"{_fmt(s['search_s'], 0)} | {_fmt(s['retrain_s'], 0)} |")
    b = res["baseline_test"]
    lines += [f"| all-background mask | {100 * b['dice']:.2f} | {100 * b['iou']:.2f} | 0 | 0 | - | - | - |", ""]
    o = res["overhead"]
    lines += [f"Penalty step-time overhead (CPU s per search step, mean of {o['steps']} steps after the first, 1 "
              f"thread, best of 2 runs each): NNI's DARTS {o['nni_darts_best']:.3f}, our engine with the cc-DARTS "
              f"penalty {o['cc_darts_best']:.3f}: **{o['overhead_pct']:+.1f} %**.", "",
              f"Targets ({TARGETS}). Verdict: {res['verdict']}", "",
              "Derived cells (cc_darts, paper λ): " + "; ".join(f"seed {r['seed']}: {r['describe']}"
                                                              for r in res["runs"]["cc_darts"]), "",
              "Derived cells (λ = 0): " + "; ".join(f"seed {r['seed']}: {r['describe']}"
                                                   for r in res["runs"]["cc_darts λ=0"]), ""]
    return "\n".join(lines)


def _verdict(res: dict) -> str:
    s = res["summary"]
    cc, zero = s["cc_darts"], s["cc_darts λ=0"]
    unets = [s[k] for k in s if k.startswith("MONAI")]
    ratio = min(u["params"]["mean"] for u in unets) / cc["params"]["mean"]
    best_unet = max(u["dsc"]["mean"] for u in unets)
    parts = [f"cc_darts DSC {cc['dsc']['mean']:.2f} % (paper 92.11 % at 256 px and 25+30 epochs; not comparable at "
             f"this budget) with {cc['params']['mean'] / 1e6:.3f} M params",
             f"{ratio:.1f}x fewer params than the smaller MONAI U-Net, DSC {cc['dsc']['mean'] - best_unet:+.2f} points "
             "vs the best U-Net",
             f"vs λ = 0: {cc['params']['mean'] - zero['params']['mean']:+,.0f} params, "
             f"{cc['dsc']['mean'] - zero['dsc']['mean']:+.2f} DSC points",
             f"penalty overhead {res['overhead']['overhead_pct']:+.1f} % (target <= 10 %)"]
    return "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="cpu")
    ap.add_argument("--work", type=Path, default=None, help="run directories (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    import torch

    from _common import machine, write_results

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)                       # comparable CPU times on a shared machine
    cfg = dict(MODES[args.mode])
    work = args.work or Path(tempfile.mkdtemp(prefix="cc_darts_nuclei-"))
    work.mkdir(parents=True, exist_ok=True)
    out = args.out if args.mode != "smoke" else work / "results"
    load0 = os.getloadavg()[0]
    overhead = _overhead(cfg, work)            # first: every partial write below has it
    print(f"overhead: {overhead}", flush=True)
    runs: dict[str, list[dict]] = {"cc_darts": [], "cc_darts λ=0": [], "MONAI BasicUNet": [], "MONAI UNet": []}
    for seed in cfg["seeds"]:
        for name, lam in (("cc_darts", PAPER), ("cc_darts λ=0", {"lambda_params": 0.0, "lambda_flops": 0.0})):
            r = _cc_darts(cfg, seed, work, lam, "ccd" if lam["lambda_params"] else "ccd0")
            runs[name].append({"seed": seed, **r})
            print(f"seed {seed} {name}: DSC {100 * r['test']['dice']:.2f} params {r['params']:,} "
                  f"({r['total_seconds']:.0f} s)", flush=True)
        for kind in ("BasicUNet", "UNet"):
            r = _monai(cfg, seed, work, kind)
            runs[f"MONAI {kind}"].append({"seed": seed, **r})
            print(f"seed {seed} MONAI {kind}: DSC {100 * r['test']['dice']:.2f} params {r['params']:,}", flush=True)
        # results after every seed, so that an interrupted benchmark still leaves its finished seeds
        load1 = os.getloadavg()[0]
        res = {"mode": args.mode, "budget": {**cfg, "paper_lambda": PAPER}, "machine": machine(),
               "seeds_done": [r["seed"] for r in runs["cc_darts"]],
               "load_note": f"Load average {load0:.1f} at the start and {load1:.1f} at the last write on 2 shared "
                            "cores: the times (search, retrain, latency) are inflated and noisy; the CPU-time "
                            "overhead is less so.",
               "runs": runs, "summary": {k: _summary(v) for k, v in runs.items()},
               "baseline_test": runs["cc_darts"][0]["baseline_test"], "overhead": overhead, "targets": TARGETS}
        res["verdict"] = _verdict(res)
        write_results(out, "cc_darts_nuclei", res, _markdown(res))
    print(_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

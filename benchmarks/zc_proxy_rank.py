"""Do the zero-cost proxies rank MSTF-cell architectures the way training does? (issue: zero-cost search vs random)

A fixed-seed sample of valid (never dead) ``mstf_cell`` architectures is scored by every proxy at initialisation
(jacob_cov, log_synflow, grad_norm, snip, FLOPs, #params; one batch of 64 training images, weights from seed 0, as
the search scores them) and then trained from scratch with 2 seeds on BreastMNIST and on a stratified subset of
PneumoniaMNIST's training split (28x28, the whole val/test splits). The answers:

* Kendall tau and Spearman rho (95 % bootstrap CIs over architectures) between each proxy and the trained test AUC /
  balanced accuracy (mean of the 2 seeds), and the same for the NSGA-II mean rank over the default objectives;
* the noise ceiling: tau between the two training seeds of the same architectures (a proxy cannot rank better than
  training ranks itself);
* each selection rule's percentile: where the architecture a rule picks (a proxy's best, the NSGA-II knee, the best
  mean rank) falls among all trained ones, vs a random pick (50 % on average);
* short-vs-long fidelity: tau between the test AUC after ``short_epochs`` and after all epochs.

#params is the baseline every proxy must beat (ZiCo, Li et al., ICLR 2023, found it rivals most zero-cost proxies).

Budget: ``--mode cpu`` is sized to ``--budget-min`` (default 30) minutes on 2 idle CPU cores (2 worker processes of
one thread): a timing step at the start trains three architectures for one epoch on BreastMNIST, measures CPU time
(not wall time, which other jobs on a shared machine stretch) and sets the width (C=16, else 8) and the
PneumoniaMNIST subset so that >= 40 architectures x 2 seeds x >= 12 epochs fit. ``--mode full`` (a GPU)
trains 100 architectures at the paper's width (C=128) for 30 epochs. Every finished training is appended to
``<work>/zc_proxy_rank.jsonl``, so a killed run resumes where it stopped and ``--report`` writes the tables from
whatever has finished. Results: benchmarks/results/zc_proxy_rank.{json,md}.

A held-out check of a conclusion drawn from that table (e.g. the default objectives, chosen after seeing it) is
another fixed-seed sample: ``--arch-seed 1`` draws different architectures and writes
``zc_proxy_rank_archseed1.{json,md}``; ``--plan-from benchmarks/results/zc_proxy_rank.json`` trains it with that
run's plan (width, epochs, seeds) so the two tables compare; ``--flags breastmnist`` skips PneumoniaMNIST;
``--pneumonia-train N`` sets its training subset instead of the timing step.

The training loop is written here on in-memory tensors (MedMNIST v2 recipe: Adam 1e-3, batch 128, cross-entropy,
no augmentation) rather than the task's ``fit``: 160+ short trainings on 2 cores cannot afford the per-sample
dictionary pipeline, and the ranking question needs the same recipe for every architecture, not the full one.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import die_with_parent, machine, write_results  # noqa: E402
from zc_proxy_rank_stats import PROXIES, analyse, corr_with_ci, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODES = {
    "cpu": {"n_archs": 40, "seeds": [0, 1], "epochs": 12, "short_epochs": 3, "channels": 16, "num_blocks": 3,
            "num_nodes": 5, "pneumonia_train": 1200, "budget_min": 30.0, "threads": 1, "workers": 2},
    "full": {"n_archs": 100, "seeds": [0, 1], "epochs": 30, "short_epochs": 5, "channels": 128, "num_blocks": 3,
             "num_nodes": 5, "pneumonia_train": None, "budget_min": None, "threads": None, "workers": 1},
    "smoke": {"n_archs": 4, "seeds": [0, 1], "epochs": 2, "short_epochs": 1, "channels": 4, "num_blocks": 1,
              "num_nodes": 3, "pneumonia_train": 200, "budget_min": None, "threads": 1, "workers": 2},
}
FLAGS = ("breastmnist", "pneumoniamnist")


# ---------------------------------------------------------------------------------------------------- data
def load_split(root: Path, flag: str, split: str) -> tuple[Any, Any]:
    """Images as normalised float tensors (N, 1, 28, 28) and labels (N,), through the medmnist data plugin."""
    import torch

    from mednas_nni.registry import get_plugin

    ds = get_plugin("datasets", "medmnist")(flag=flag, size=28, root=str(root))
    x, y = ds.arrays(split)
    info = ds.info
    x = torch.as_tensor(x, dtype=torch.float32) / 255.0
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = (x - info.mean[0]) / info.std[0]
    return x.contiguous(), torch.as_tensor(y, dtype=torch.long).view(-1)


def stratified_subset(y: Any, n: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a class-stratified subset of ``n`` samples (all of them when n is None or too large)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    if n is None or n >= len(y):
        return idx
    sub, _ = train_test_split(idx, train_size=n, stratify=y.numpy(), random_state=seed)
    return np.sort(sub)


# ---------------------------------------------------------------------------------------------------- archs
def sample_archs(space: Any, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct valid (not dead) canonical samples, uniformly drawn with a fixed seed."""
    from mednas_nni.engines.records import arch_hash

    rng, values, out, seen = random.Random(seed), space.label_values(), [], set()
    while len(out) < n:
        s = space.canonicalize({k: rng.choice(v) for k, v in values.items()})
        h = arch_hash(s)
        if h not in seen and space.is_valid(s)[0]:
            seen.add(h)
            out.append(s)
    return out


def proxy_scores(space: Any, sample: dict[str, Any], x: Any, y: Any) -> dict[str, float]:
    from mednas_nni.strategies.zc_scoring import score_model

    return score_model(space.freeze(sample), x, y, PROXIES, "cpu", init_seed=0)


# ---------------------------------------------------------------------------------------------------- training
def evaluate(model: Any, x: Any, y: Any) -> dict[str, float]:
    import torch
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    model.eval()
    with torch.no_grad():
        p = torch.cat([torch.softmax(model(x[i:i + 512]), 1) for i in range(0, len(x), 512)]).numpy()
    yy = y.numpy()
    auc = roc_auc_score(yy, p[:, 1]) if p.shape[1] == 2 else roc_auc_score(yy, p, multi_class="ovr")
    return {"auc": float(auc), "bal_acc": float(balanced_accuracy_score(yy, p.argmax(1))),
            "acc": float((p.argmax(1) == yy).mean())}


def train(space: Any, sample: dict[str, Any], data: dict[str, Any], seed: int, epochs: int, short: int,
          batch_size: int = 128, max_epochs_timed: int | None = None) -> dict[str, Any]:
    """Train from scratch (seed ``seed``); test metrics after ``short`` and after ``epochs`` epochs."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = space.freeze(sample)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = data["train"]
    out: dict[str, Any] = {"epoch_seconds": []}
    for epoch in range(1, (max_epochs_timed or epochs) + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), batch_size):
            j = perm[i:i + batch_size]
            if len(j) < 2:
                continue
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xtr[j]), ytr[j])
            if not torch.isfinite(loss):
                out["diverged"] = epoch
                break
            loss.backward()
            opt.step()
        out["epoch_seconds"].append(time.perf_counter() - t0)
        if epoch == short:
            out["short"] = evaluate(model, *data["test"])
    out["long"] = evaluate(model, *data["test"])
    return out


def proxy_redundancy(archs: list, channels: int, space_kw: dict[str, Any], train: tuple, work: Path) -> dict:
    """Kendall tau (bootstrap CI) of each proxy with #params over every sampled architecture (BreastMNIST batch):
    a proxy that only measures size cannot beat #params. Scores are cached in ``work``."""
    import torch

    from mednas_nni.search_spaces.mstf_cell import MSTFCellSpace

    cache = work / f"zc_proxy_rank-proxies-C{channels}.json"
    scores = json.loads(cache.read_text()) if cache.exists() else []
    space = MSTFCellSpace(in_channels=1, out_channels=2, channels=channels, **space_kw)
    px, py = train
    pb = torch.randperm(len(px), generator=torch.Generator().manual_seed(0))[:64]
    for sample in archs[len(scores):]:
        scores.append(proxy_scores(space, sample, px[pb], py[pb]))
        cache.write_text(json.dumps(scores))
    ok = [r for r in scores if "error" not in r]
    size = np.array([r["params"] for r in ok])
    return {"n_archs": len(ok), **{p: corr_with_ci(np.array([r[p] for r in ok]), size)
                                   for p in PROXIES if p != "params"}}


# ---------------------------------------------------------------------------------------------------- budget
def calibrate(mode: dict[str, Any], space_kw: dict[str, Any], data: dict[str, dict[str, Any]], archs: list,
              budget_s: float, log: Any) -> dict[str, Any]:
    """Time one epoch per architecture (CPU time of this process, one thread: what an idle core would take, so the
    plan does not shrink because other jobs share the machine) and choose the width and the PneumoniaMNIST subset
    that fit ``budget_s`` of wall time on ``workers`` idle cores."""
    from mednas_nni.search_spaces.mstf_cell import MSTFCellSpace

    plan = dict(mode)
    n_train = {f: len(data[f]["train"][0]) for f in FLAGS}
    workers = max(1, int(mode["workers"]))
    for channels in sorted({mode["channels"], 8}, reverse=True):
        space = MSTFCellSpace(in_channels=1, out_channels=2, channels=channels, **space_kw)
        t = []
        for sample in archs[:3]:               # three architectures, one epoch each on BreastMNIST
            c0 = time.process_time()
            train(space, sample, data["breastmnist"], 0, 1, 0, max_epochs_timed=1)
            t.append(time.process_time() - c0)
        per_image = float(np.mean(t)) / n_train["breastmnist"]
        n_runs = mode["n_archs"] * len(mode["seeds"]) * mode["epochs"]
        breast_s = n_runs * per_image * n_train["breastmnist"] * 1.15 / workers    # + test evaluation, proxies
        left = budget_s - breast_s
        pneu = int(left * workers / (n_runs * per_image * 1.15)) if left > 0 else 0
        log(f"calibration (CPU time, {workers} worker(s)): C={channels}: {per_image * 1e3:.2f} ms per training "
            f"image; BreastMNIST needs {breast_s / 60:.1f} min; PneumoniaMNIST subset that fits: {pneu} images")
        plan.update(channels=channels, seconds_per_image=per_image)
        if pneu >= 300 or channels == 8:
            plan["pneumonia_train"] = int(min(max(pneu, 200), mode["pneumonia_train"] or n_train["pneumoniamnist"]))
            break
    return plan


def _subset_size(text: str) -> int:
    """``--pneumonia-train``: a stratified subset needs at least one image per class (2)."""
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or n < 2:
        raise argparse.ArgumentTypeError(f"expected a number of training images >= 2 (one per class), got {text!r}")
    return n


def _plan_from(path: Path) -> dict[str, Any]:
    """The ``plan`` of an earlier run's results JSON; one line naming the file when it has none."""
    keys = ("channels", "epochs", "short_epochs", "seeds", "pneumonia_train")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"--plan-from {path}: expected a zc_proxy_rank results JSON, could not read it ({e})")
    plan = data.get("plan") if isinstance(data, dict) else None
    missing = [k for k in keys if not isinstance(plan, dict) or k not in plan]
    if missing:
        raise SystemExit(f"--plan-from {path}: expected a zc_proxy_rank results JSON whose 'plan' has "
                         f"{', '.join(keys)}; got " + ("no 'plan'" if not isinstance(plan, dict) else
                                                      "no " + ", ".join(missing)))
    return plan


# ---------------------------------------------------------------------------------------------------- workers
_W: dict[str, Any] = {}


def _init_worker(root: str, plan: dict[str, Any], space_kw: dict[str, Any], pneu_idx: list[int]) -> None:
    import torch

    from mednas_nni.search_spaces.mstf_cell import MSTFCellSpace

    die_with_parent()
    torch.set_num_threads(1)
    data = {f: {s: load_split(Path(root), f, s) for s in ("train", "test")} for f in FLAGS}
    x, y = data["pneumoniamnist"]["train"]
    data["pneumoniamnist"]["train"] = (x[pneu_idx], y[pneu_idx])
    _W.update(data=data, plan=plan, space=MSTFCellSpace(in_channels=1, out_channels=2, channels=plan["channels"],
                                                        **space_kw))


def train_job(flag: str, index: int, sample: dict[str, Any]) -> dict[str, Any]:
    """Proxies and the trainings (every seed) of one architecture on one data set, in a worker process."""
    import torch

    data, plan, space = _W["data"], _W["plan"], _W["space"]
    px, py = data[flag]["train"]
    pb = torch.randperm(len(px), generator=torch.Generator().manual_seed(0))[:64]
    t0 = time.perf_counter()
    rec = {"flag": flag, "index": index, "sample": sample, "proxies": proxy_scores(space, sample, px[pb], py[pb]),
           "params": int(sum(p.numel() for p in space.freeze(sample).parameters())), "train": {}}
    for s in plan["seeds"]:
        rec["train"][str(s)] = train(space, sample, data[flag], s, plan["epochs"], plan["short_epochs"])
    rec["seconds"] = time.perf_counter() - t0
    return rec


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=list(MODES), default="cpu")
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "medmnist")
    ap.add_argument("--budget-min", type=float, default=None, help="wall-clock budget of --mode cpu (minutes)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mednas-bench")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results; smoke: work)")
    ap.add_argument("--report", action="store_true", help="write the tables from what has finished, train nothing")
    ap.add_argument("--arch-seed", type=int, default=0,
                    help="seed of the architecture sample (default 0; another seed is a held-out sample, written to "
                         "zc_proxy_rank_archseed<N>.{json,md})")
    ap.add_argument("--flags", nargs="+", choices=FLAGS, default=list(FLAGS), help="data sets (default: both)")
    ap.add_argument("--pneumonia-train", type=_subset_size, default=None,
                    help="PneumoniaMNIST training images (stratified subset; default: what the timing step fits); "
                         "results in <stem>_pneumonia<N>.{json,md}")
    ap.add_argument("--plan-from", type=Path, default=None, metavar="RESULTS_JSON",
                    help="train with the plan (width, epochs, seeds, subset) of an earlier run's results JSON instead "
                         "of a timing step: a held-out sample comparable with that run")
    args = ap.parse_args(argv)
    flags = [f for f in FLAGS if f in args.flags]
    stem = "zc_proxy_rank" if args.arch_seed == 0 else f"zc_proxy_rank_archseed{args.arch_seed}"
    if args.pneumonia_train is not None:    # another PneumoniaMNIST subset: its own files, never over another table
        stem += f"_pneumonia{args.pneumonia_train}"

    import torch

    from mednas_nni.search_spaces.mstf_cell import MSTFCellSpace

    mode = dict(MODES[args.mode])
    if mode["threads"]:
        torch.set_num_threads(mode["threads"])
    if args.budget_min is not None:
        mode["budget_min"] = args.budget_min
    out_dir = args.out or (args.work / "results" if args.mode == "smoke" else REPO / "benchmarks" / "results")
    args.work.mkdir(parents=True, exist_ok=True)
    log_path = args.work / f"{stem}-{args.mode}.jsonl"
    plan_path = args.work / f"{stem}-{args.mode}.plan.json"

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    t_start = time.perf_counter()
    space_kw = {"num_blocks": mode["num_blocks"], "num_nodes": mode["num_nodes"]}
    data = {f: {s: load_split(args.root, f, s) for s in ("train", "test")} for f in FLAGS}
    sampler_space = MSTFCellSpace(in_channels=1, out_channels=2, channels=4, **space_kw)
    archs = sample_archs(sampler_space, mode["n_archs"], seed=args.arch_seed)
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
        log(f"resuming with the plan of {plan_path}")
        if args.pneumonia_train is not None and plan.get("pneumonia_train") != args.pneumonia_train:
            raise SystemExit(f"--pneumonia-train {args.pneumonia_train}: the run in {plan_path} was planned with "
                             f"{plan.get('pneumonia_train')} PneumoniaMNIST images; use another --work to change it")
    else:
        if args.plan_from:
            plan = _plan_from(args.plan_from)
            log(f"the plan of {args.plan_from}: C={plan['channels']}, {plan['epochs']} epochs, seeds {plan['seeds']}")
        elif mode["budget_min"] and not args.report:
            plan = calibrate(mode, space_kw, data, archs, mode["budget_min"] * 60 - (time.perf_counter() - t_start),
                             log)
        else:
            plan = dict(mode)
        if args.pneumonia_train is not None:
            plan["pneumonia_train"] = args.pneumonia_train
        plan_path.write_text(json.dumps(plan))
    sub = stratified_subset(data["pneumoniamnist"]["train"][1], plan["pneumonia_train"])
    x, y = data["pneumoniamnist"]["train"]
    data["pneumoniamnist"]["train"] = (x[sub], y[sub])
    done = {}
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            r = json.loads(line)
            done[(r["flag"], r["index"])] = r
    if not args.report:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        jobs = [(f, i, a) for f in flags for i, a in enumerate(archs) if (f, i) not in done]
        with ProcessPoolExecutor(max_workers=max(1, int(plan.get("workers", 1))), mp_context=get_context("spawn"),
                                 initializer=_init_worker,
                                 initargs=(str(args.root), plan, space_kw, [int(i) for i in sub])) as pool:
            futures = [pool.submit(train_job, *job) for job in jobs]
            for fut in as_completed(futures):
                rec = fut.result()
                with log_path.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                done[(rec["flag"], rec["index"])] = rec
                aucs = [round(rec["train"][str(s)]["long"]["auc"], 3) for s in plan["seeds"]]
                log(f"{rec['flag']} arch {rec['index'] + 1}/{len(archs)}: test AUC {aucs} ({rec['seconds']:.0f} s; "
                    f"{len(done)}/{len(flags) * len(archs)} done, "
                    f"{(time.perf_counter() - t_start) / 60:.1f} min in all)")
    from mednas_nni.engines.records import arch_hash

    results = {}
    for flag in flags:
        rows = [done[(flag, i)] for i in range(len(archs)) if (flag, i) in done
                and "error" not in done[(flag, i)]["proxies"]]
        if len(rows) >= 4:
            results[flag] = analyse(rows, plan["seeds"])
    # cheap and independent of any training: how much of each proxy is the network's size (all sampled archs)
    proxy_vs_params = proxy_redundancy(archs, plan["channels"], space_kw, data["breastmnist"]["train"], work=args.work)
    payload = {"benchmark": "zc_proxy_rank", "arch_seed": args.arch_seed, "flags": flags,
               "proxy_vs_params": proxy_vs_params, "mode": args.mode, "plan": plan,
               "space": {"name": "mstf_cell", **space_kw, "channels": plan["channels"]},
               "n_train": {f: len(data[f]["train"][0]) for f in FLAGS},
               "n_test": {f: len(data[f]["test"][0]) for f in FLAGS},
               "machine": {**machine(), "load_avg_1m_at_end": os.getloadavg()[0]},
               "wall_seconds_this_session": time.perf_counter() - t_start,
               "results": results, "archs": [{"hash": arch_hash(a), "sample": a} for a in archs],
               "finished": {f: sum((f, i) in done for i in range(len(archs))) for f in flags}}
    write_results(out_dir, stem, payload, table(payload))
    print(table(payload))
    log(f"wrote {out_dir / (stem + '.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

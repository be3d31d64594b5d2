"""The markdown table of ``zc_nsga2_medmnist.py`` (means ± std over seeds, per-seed rows, proxy cost)."""
from __future__ import annotations

import statistics
from typing import Any

METHODS = ("zc_nsga2", "random", "params_only", "random_arch", "resnet18")


def _short(test: dict[str, Any]) -> str:
    return " ".join(f"{k} {test[k]:.3f}" for k in ("acc", "auc", "balanced_acc") if k in test)


def _mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def _layout(b: dict[str, Any]) -> str:
    fmt = (b.get("evaluator") or {}).get("memory_format")
    return f" (retrained in {fmt} layout)" if fmt and fmt != "contiguous" else ""


def _seed_row(flag: str, seed: int, name: str, x: dict[str, Any]) -> str:
    ev = f"{x['evaluated']} ({x['failed']})" if "evaluated" in x else "-"
    ss = f"{x['search_seconds']:.0f}" if "search_seconds" in x else "-"
    rt = (f"{x['retrained']}, {x['retrain_seconds']:.0f} ({x['epoch_seconds_median']:.1f})" if "retrained" in x
          else "-")
    return (f"| {flag} | {seed} | {name} | {x['test']['acc']:.3f} | {x['test']['auc']:.3f} | "
            f"{x['test'].get('balanced_acc', float('nan')):.3f} | {x['params']:,} | {ev} | {ss} | {rt} |")


def _layout_of_units(m: dict[str, Any]) -> str:
    if m.get("trained_here", True):
        return f"{m.get('workers', 1)} worker process(es) of {m['torch_threads']} thread(s)"
    return "table written from the state file: the units ran in earlier invocations, see the note for their layout"


def _paired(all_rows: list[dict[str, Any]], flags: list[str]) -> list[str]:
    """zc_nsga2 minus each baseline within a seed: with 3 seeds, the sign per seed says more than two overlapping stds."""
    lines = ["", "## zc_nsga2 minus each baseline, same data set and seed", "",
             "| data set | baseline | test AUC difference per seed | mean | zc_nsga2 higher (seeds) | "
             "bal. ACC difference per seed | zc_nsga2 higher (seeds) |", "|---|---|---|---|---|---|---|"]
    for flag in flags:
        rows = [r for r in all_rows if r["flag"] == flag and "zc_nsga2" in r]
        for name in [n for n in METHODS if n != "zc_nsga2" and rows and all(n in r for r in rows)]:
            d_auc = [r["zc_nsga2"]["test"]["auc"] - r[name]["test"]["auc"] for r in rows]
            d_bal = [r["zc_nsga2"]["test"].get("balanced_acc", float("nan"))
                     - r[name]["test"].get("balanced_acc", float("nan")) for r in rows]
            lines.append(f"| {flag} | {name} | {', '.join(f'{d:+.3f}' for d in d_auc)} | "
                         f"{statistics.mean(d_auc):+.3f} | {sum(d > 0 for d in d_auc)} of {len(d_auc)} | "
                         f"{', '.join(f'{d:+.3f}' for d in d_bal)} | {sum(d > 0 for d in d_bal)} of {len(d_bal)} |")
    return lines


def table(p: dict[str, Any]) -> str:
    m, b = p["machine"], p["budget"]
    lines = [f"# zc_nsga2 vs the baselines that isolate its parts, MedMNIST 28x28 ({p['mode']} mode)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores (shared with other jobs: times are inflated), torch "
             f"{m['torch']} ({_layout_of_units(m)}), CUDA: "
             f"{m['cuda'] or 'none'}; {m['date']}.",
             f"Budget: NSGA-II pop {b['pop_size']} x {b['generations']} generations; NNI Random scores as many "
             f"architectures; space {b['num_blocks']} blocks x {b['num_nodes']} nodes, **width C={b['channels']}** "
             f"(the paper's reproduction: C=128); retraining {b['epochs']} epochs (MedMNIST v2 recipe otherwise), "
             f"{b['top_k']}+knee finalists{_layout(b)}; seeds {b['seeds']}; **objectives** "
             f"{', '.join(b.get('objectives') or ['jacob_cov:max', 'log_synflow:max', 'flops:min'])} (NNI Random's "
             "finalists are chosen by the same rule over the same objectives).", "",
             "## Mean ± std over seeds (finished units only: " + ", ".join(
                 f"{f} seeds {sorted(r['seed'] for r in p['rows'] if r['flag'] == f)}"
                 for f in dict.fromkeys(r["flag"] for r in p["rows"])) + ")", "",
             "| data set | method | test ACC | test AUC | test bal. ACC | params (mean) |", "|---|---|---|---|---|---|"]
    flags = list(dict.fromkeys(r["flag"] for r in p["rows"]))
    for flag in flags:
        rows = [r for r in p["rows"] if r["flag"] == flag]
        for name in [n for n in METHODS if all(n in r for r in rows)]:
            t = [r[name]["test"] for r in rows]
            lines.append(f"| {flag} | {name} | {_mean_std([x['acc'] for x in t])} | {_mean_std([x['auc'] for x in t])}"
                         f" | {_mean_std([x.get('balanced_acc', float('nan')) for x in t])} | "
                         f"{int(statistics.mean(r[name]['params'] for r in rows)):,} |")
        maj = rows[0]["majority"]
        lines.append(f"| {flag} | majority class | {maj['acc']:.3f} | 0.500 | {maj.get('balanced_acc', 0.5):.3f} | - |")
        pp = rows[0]["paper"]
        if pp:
            lines.append(f"| {flag} | paper: MSTF-NAS / ResNet-18 (28), 100 epochs, C=128 | {pp['mstf_acc']:.3f} / "
                         f"{pp['rn18_acc']:.3f} | {pp['mstf_auc']:.3f} / {pp['rn18_auc']:.3f} | - | - |")
    lines += _paired(p["rows"], flags)
    lines += ["", "## Per seed", "",
              "| data set | seed | method | test ACC | test AUC | test bal. ACC | params | archs scored (failed) | "
              "search s | retrained: nets, s (median s/epoch) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        for name in [n for n in METHODS if n in r]:
            lines.append(_seed_row(r["flag"], r["seed"], name, r[name]))
    n_proxy = p["rows"][0]["proxy_cost"]["n_archs"] if p["rows"] else 5
    lines += ["", f"| data set | seed | archs scored / s | proxy cost / one fwd+bwd (median of {n_proxy}) |",
              "|---|---|---|---|"]
    for r in p["rows"]:
        c = r["proxy_cost"]
        lines.append(f"| {r['flag']} | {r['seed']} | {r['archs_per_second']:.2f} | {c['ratio_median']:.2f}x "
                     f"({c['proxy_seconds_median']:.2f} s / {c['fwd_bwd_seconds_median']:.2f} s) |")
    if p.get("note"):
        lines += ["", f"Note: {p['note']}"]
    if p.get("missing_units"):
        lines += ["", f"**Partial**: units (data set, seed) not finished: {p['missing_units']}; the methods they "
                      "finished (in the state file; a rerun resumes from it):", "",
                  "| data set | seed | method | test ACC | test AUC | test bal. ACC | params | archs scored (failed) | "
                  "search s | retrained: nets, s (median s/epoch) |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [_seed_row(st["flag"], st["seed"], st["step"], st["result"]) for st in p.get("partial_steps", [])
                  if "test" in st["result"]]
    if b["epochs"] >= 100:
        lines += ["", f"The paper's numbers come from the same 100-epoch recipe at C=128 (and a GPU); this run is at "
                      f"C={b['channels']}: the training budget is the paper's, the networks are narrower.", ""]
    else:
        lines += ["", "The paper's numbers come from 100-epoch training at C=128 (and a GPU); this run retrains for "
                      f"{b['epochs']} epochs at C={b['channels']}, so they are context, not a target met or missed.",
                  ""]
    return "\n".join(lines)

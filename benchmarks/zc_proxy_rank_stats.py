"""Statistics and the markdown table of ``zc_proxy_rank.py`` (rank correlations with bootstrap CIs, selection
percentiles, the NSGA-II finalist rules applied to a sample)."""
from __future__ import annotations

from typing import Any

import numpy as np

PROXIES = ["jacob_cov", "log_synflow", "grad_norm", "snip", "flops", "params"]
DEFAULT_OBJECTIVES = ["jacob_cov:max", "log_synflow:max", "flops:min"]   # the search's objectives before this study
#: objective sets whose NSGA-II rules are applied to the sample: the paper's, and the ones this study's answer allows
OBJECTIVE_SETS = {"paper": DEFAULT_OBJECTIVES, "no_synflow": ["jacob_cov:max", "flops:min"]}


def _tau(a: Any, b: Any) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)        # NaN for a constant resample: left out of the CI


def _rho(a: Any, b: Any) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def corr_with_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Kendall tau and Spearman rho with 95 % percentile-bootstrap CIs (resampling architectures). A constant ``a`` or
    ``b`` has no rank correlation: None (shown as n/a), never a measured 0."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"tau": None, "tau_ci": [None, None], "rho": None, "rho_ci": [None, None],
                "constant": "first" if np.ptp(a) == 0 else "second"}
    import warnings

    from scipy.stats import ConstantInputWarning

    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)      # a constant resample: NaN, counted below
        for _ in range(n_boot):
            i = rng.integers(0, len(a), len(a))
            taus.append(_tau(a[i], b[i]))
            rhos.append(_rho(a[i], b[i]))
    return {"tau": _tau(a, b), "tau_ci": [float(np.nanpercentile(taus, 2.5)), float(np.nanpercentile(taus, 97.5))],
            "rho": _rho(a, b), "rho_ci": [float(np.nanpercentile(rhos, 2.5)), float(np.nanpercentile(rhos, 97.5))],
            "constant_resamples": int(np.isnan(taus).sum())}


def percentile_of(metric: np.ndarray, i: int) -> float:
    """Share of the architectures whose metric is below architecture ``i``'s (ties count half): 1 = the best."""
    return float(((metric < metric[i]).sum() + 0.5 * ((metric == metric[i]).sum() - 1)) / max(len(metric) - 1, 1))


def nsga_scores(proxies: dict[str, np.ndarray], objectives: list[str] = DEFAULT_OBJECTIVES) -> tuple[np.ndarray, int]:
    """The NSGA-II finalist rules on the sample: minus the mean rank over ``objectives`` (higher = better) and the
    knee of the Pareto front (index), exactly as ``zc_nsga2`` chooses its finalists."""
    from mednas_nni.strategies.zc_nsga2 import Objective, choose_finalists, pareto_mask

    objs = [Objective(o) for o in objectives]
    F = np.column_stack([[o.to_min(v) for v in proxies[o.name]] for o in objs])
    ranks = np.argsort(np.argsort(F, axis=0, kind="stable"), axis=0, kind="stable").mean(1)
    front = np.flatnonzero(pareto_mask(F))
    knee = int(front[choose_finalists(F[front], knee=True, top_k=0, rank_col=None)[0]])
    return -ranks, knee


def analyse(rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Everything the tables show, for one data set (rows: one per architecture with every seed trained)."""
    prox = {p: np.array([r["proxies"][p] for r in rows]) for p in PROXIES}
    out: dict[str, Any] = {"n_archs": len(rows)}
    for metric in ("auc", "bal_acc"):
        per_seed = np.array([[r["train"][str(s)]["long"][metric] for s in seeds] for r in rows])
        target = per_seed.mean(1)
        res: dict[str, Any] = {
            "mean": float(target.mean()), "min": float(target.min()), "max": float(target.max()),
            "noise_ceiling": corr_with_ci(per_seed[:, 0], per_seed[:, 1]),
            "proxies": {p: corr_with_ci(prox[p], target) for p in PROXIES},
        }
        picks = {f"best {p}": int(np.argmax(prox[p])) for p in PROXIES}
        picks["smallest flops"] = int(np.argmin(prox["flops"]))
        picks["smallest params"] = int(np.argmin(prox["params"]))
        for objectives in OBJECTIVE_SETS.values():
            mean_rank, knee = nsga_scores(prox, objectives)
            label = ", ".join(objectives)
            res.setdefault("nsga2_mean_rank_by_set", {})[label] = corr_with_ci(mean_rank, target)
            picks[f"NSGA-II knee ({label})"] = knee
            picks[f"NSGA-II best mean rank ({label})"] = int(np.argmax(mean_rank))
        res["selection_percentile"] = {k: percentile_of(target, i) for k, i in picks.items()}
        res["selection_percentile"]["random pick (expected)"] = 0.5
        if all("short" in r["train"][str(s)] for r in rows for s in seeds):
            short = np.array([[r["train"][str(s)]["short"][metric] for s in seeds] for r in rows]).mean(1)
            res["short_vs_long"] = corr_with_ci(short, target)
        out[metric] = res
    return out


def _ci(d: dict[str, Any], key: str) -> str:
    if d[key] is None:
        return "n/a (every architecture has the same score)"
    lo, hi = d[f"{key}_ci"]
    return f"{d[key]:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def table(p: dict[str, Any]) -> str:
    m, plan, sp = p["machine"], p["plan"], p["space"]
    lines = [f"# Zero-cost proxies vs trained accuracy on mstf_cell ({p['mode']} mode)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores shared with other jobs (load {m['load_avg_1m_at_end']:.1f} "
             f"at the end), torch {m['torch']} ({m['torch_threads']} threads); {m['date']}.",
             f"Space: mstf_cell {sp['num_blocks']} blocks x {sp['num_nodes']} nodes, C={sp['channels']} (the paper's "
             "reproduction uses C=128); architectures: a fixed-seed uniform sample of valid (not dead) ones "
             f"(sample seed {p.get('arch_seed', 0)}{'' if p.get('arch_seed', 0) == 0 else ': a held-out sample'}).",
             f"Training: {plan['epochs']} epochs (short: {plan['short_epochs']}), seeds {plan['seeds']}, Adam 1e-3, "
             f"batch 128; train images {p['n_train']}, test images {p['n_test']} (PneumoniaMNIST: stratified "
             f"training subset of {plan['pneumonia_train'] or 'all'} images). Target: test metric after all epochs, "
             "mean of the seeds.",
             "Proxies at initialisation (weights from seed 0) on one batch of 64 training images. CIs: 95 % "
             "bootstrap over architectures (1000 resamples).", ""]
    fin = p.get("finished", {})
    if any(n < len(p["archs"]) for n in fin.values()):
        lines += [f"**Partial run**: finished trainings per data set {fin} of {len(p['archs'])} architectures "
                  "planned (the machine was shared; `--report` tabulates what has finished, the same command "
                  "resumes the rest).", ""]
    pv = p.get("proxy_vs_params")
    if pv:
        lines += [f"## How much of each proxy is network size ({pv['n_archs']} architectures, no training)", "",
                  "| proxy | Kendall tau with #params [95 % CI] | Spearman rho [95 % CI] |", "|---|---|---|"]
        lines += [f"| {k} | {_ci(v, 'tau')} | {_ci(v, 'rho')} |" for k, v in pv.items() if k != "n_archs"]
        lines.append("")
    for flag, r in p["results"].items():
        for metric, label in (("auc", "test AUC"), ("bal_acc", "test balanced accuracy")):
            x = r[metric]
            lines += [f"## {flag}: {label} ({r['n_archs']} architectures; {x['min']:.3f} .. {x['max']:.3f}, "
                      f"mean {x['mean']:.3f})", "",
                      "| score | Kendall tau [95 % CI] | Spearman rho [95 % CI] |", "|---|---|---|",
                      f"| **noise ceiling**: seed {plan['seeds'][0]} vs seed {plan['seeds'][1]} | "
                      f"{_ci(x['noise_ceiling'], 'tau')} | {_ci(x['noise_ceiling'], 'rho')} |"]
            for name, c in x["proxies"].items():
                lines.append(f"| {name}{' (baseline)' if name == 'params' else ''} | {_ci(c, 'tau')} | "
                             f"{_ci(c, 'rho')} |")
            for label, c in x["nsga2_mean_rank_by_set"].items():
                lines.append(f"| NSGA-II mean rank ({label}) | {_ci(c, 'tau')} | {_ci(c, 'rho')} |")
            if "short_vs_long" in x:
                lines.append(f"| fidelity: after {plan['short_epochs']} vs {plan['epochs']} epochs | "
                             f"{_ci(x['short_vs_long'], 'tau')} | {_ci(x['short_vs_long'], 'rho')} |")
            lines += ["", "| selection rule | percentile of its pick among the trained architectures (1 = best) |",
                      "|---|---|"]
            lines += [f"| {k} | {v:.2f} |" for k, v in x["selection_percentile"].items()]
            lines.append("")
    if not p["results"]:
        lines.append("No data set has enough finished trainings yet.")
    return "\n".join(lines) + "\n"

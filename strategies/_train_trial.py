"""The trial function of training-based multi-trial strategies (GeNAS-WF, random search).

One architecture = one short training through the task (:meth:`~mednas_nni.contracts.Task.train_curve`): every
epoch reports ``{"default": val_<select_by>, ...}`` to NNI (the task's selection metric, one meaning per
experiment), and the final dict holds ``default`` (the last epoch's selection metric), ``fitness`` (a function of
the whole validation curve, :data:`~mednas_nni.evaluators.fitness.FITNESS`), the last epoch's validation metrics,
the parameter count and the per-epoch history. A fitness function's ``metric`` that ``fitness_params`` leaves unset
is its own default (balanced accuracy) when the task reports it, else the task's selection metric (e.g. ``dice``
for segmentation); either is checked against the task before any training.
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["train_and_score", "training_trial_spec", "fitness_params_for"]


def fitness_params_for(fitness: str, fitness_params: dict[str, Any] | None, task: Any,
                       select_key: str) -> dict[str, Any]:
    """``fitness_params`` with ``metric`` resolved for ``task`` (see the module doc); ValueError if the task lacks
    it."""
    from mednas_nni.evaluators.fitness import FITNESS

    params = dict(fitness_params or {})
    arg = inspect.signature(FITNESS[fitness]).parameters.get("metric") if fitness in FITNESS else None
    if arg is None:
        return params
    names = tuple(task.metric_names)
    if "metric" not in params and arg.default not in names:
        params["metric"] = select_key
    metric = str(params.get("metric", arg.default)).removeprefix("val_")
    if metric not in names:
        raise ValueError(f"strategy.params.fitness_params.metric: expected a metric of the {task.name} task "
                         f"({', '.join(names)}), got {metric!r}")
    return params


def train_and_score(model: Any, sample: dict[str, Any], ctx: Any, report: Callable[[dict[str, Any]], None], *,
                    epochs: int, fitness: str = "genas_wf", fitness_params: dict[str, Any] | None = None, batch_size: int = 64,
                    lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0, augment: bool = False,
                    max_batches_per_epoch: int | None = None, torch_threads: int | None = None) -> dict[str, Any]:
    """Train ``model`` for ``epochs`` epochs and score its validation curve (see the module doc)."""
    import torch

    from mednas_nni.evaluators.fitness import get_fitness

    t0 = time.perf_counter()
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    key = f"val_{ctx.select_key}"
    score = get_fitness(fitness, fitness_params_for(fitness, fitness_params, ctx.task, ctx.select_key))

    def on_epoch(rec: dict[str, Any]) -> None:
        report({"default": rec[key], **{k: v for k, v in rec.items() if k != "seconds"}})

    history = ctx.task.train_curve(model, ctx.dataset, epochs=epochs, batch_size=batch_size, lr=lr,
                                   weight_decay=weight_decay, seed=seed, device=ctx.device, augment=augment,
                                   max_batches_per_epoch=max_batches_per_epoch, on_epoch=on_epoch)
    last = history[-1]
    return {"default": last[key], "fitness": score(history),
            **{k: v for k, v in last.items() if k.startswith("val_")},
            f"best_{key}": max(h[key] for h in history),
            "params": int(sum(p.numel() for p in model.parameters())),
            "seconds": time.perf_counter() - t0, "history": history}


def training_trial_spec(ctx: Any, p: Any) -> Any:
    """The :class:`~mednas_nni.contracts.TrialSpec` of :func:`train_and_score` from a strategy's params ``p``."""
    from mednas_nni.contracts import TrialSpec

    return TrialSpec(
        "mednas_nni.strategies._train_trial:train_and_score",
        kwargs=dict(epochs=p.epochs_per_trial, fitness=p.fitness, fitness_params=dict(p.fitness_params),
                    batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay, seed=int(ctx.cfg.run.seed),
                    augment=p.augment, max_batches_per_epoch=p.max_batches_per_epoch, torch_threads=p.torch_threads),
        default_meaning=(f"val_{ctx.select_key} of the task after each training epoch (final: the last epoch); "
                         f"the strategy ranks by 'fitness' ({p.fitness}) of that curve"))

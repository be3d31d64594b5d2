"""The one-shot engine: a Lightning fit of NNI's differentiable (DARTS) relaxation with what our methods add.

DARTS: Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, arXiv:1806.09055.
NNI's :class:`nni.nas.strategy.DARTS` turns every categorical choice of a ``ModelSpace`` into a softmax(α)-weighted
mixture, one α vector per label (``strategy._arch_parameters``, created in ``DARTS.mutate_model``; modules with
the same label share one α). This engine keeps that machinery (``mutate_model``, NNI's
``DartsLightningModule`` with its optimiser plumbing and ``export``) and replaces the training step so that:

* a **differentiable penalty** reaches α. NNI 3.0's own ``penalty=`` gets ``export_probs()`` (Python floats) and has
  no gradient (``../shared/NNI_NOTES.md`` §2, verified); ours is called with ``probs = {label: softmax(α_label)}``,
  tensors built from the very α the architecture optimiser updates, and is added to the **architecture** loss only;
* the first-order alternation runs **by step** (default, NNI/DARTS: every batch an α step on a batch of the held-out
  search split, then a weight step on a train batch) or **by epoch** (NAS-SCAM: a whole epoch of α steps or of weight
  steps, chosen by ``arch_epoch(epoch)``);
* the first ``warmup_epochs`` train the weights only (α frozen, ``requires_grad=False``);
* **drop-path**: every ``monai.networks.layers.DropPath`` inside the supernet gets ``drop_prob = drop_path_prob *
  epoch / epochs`` at the start of each epoch (the DARTS code's linear ramp);
* the weight optimiser is Adam or SGD (momentum), with a constant or cosine learning rate (stepped per epoch); the α
  optimiser is Adam(``arc_learning_rate``, betas (0.5, 0.999), ``arc_weight_decay``) as in the DARTS code;
* a **checkpoint per epoch** (``<run dir>/oneshot/last.ckpt``, :mod:`.oneshot_checkpoint`): a killed search resumes
  from its last finished epoch (Lightning's ``ckpt_path`` resume: epoch counter, optimisers, scheduler, α, weights
  and the recorder's rows), not from zero; the file loads with ``torch.load(weights_only=True)``;
* everything is **seeded** (``pl.seed_everything`` before α is drawn; seeded loaders);
* per epoch, ``oneshot_metrics.csv`` (train/arch loss, the supernet's val metrics, ``E_params``/``E_flops`` when the
  space knows its op costs, the penalty's own terms, ``p/<label>/<value>``), ``alpha.png`` (grouped panels) and, in an
  nnictl trial, ``nni.report_intermediate_result`` per epoch and ``nni.report_final_result`` at the end
  (:class:`~mednas_nni.engines.oneshot.OneShotRecorder`; the search runs as one trial, NNI_NOTES §4).

API for a strategy (how ``darts`` and ``cc_darts`` use it)::

    from mednas_nni.engines.oneshot_engine import OneShotHooks, OneShotParams, ExpectedCost, run_oneshot

    class MyParams(OneShotParams):          # every field below is a config key of strategy.params
        my_lambda: float = 0.0

    class MyStrategy(OneShotStrategy):
        name, Params = "mine", MyParams
        def __init__(self, **params): self.params = self.Params(**params)
        def search(self, space, task, data, ctx):
            costs = ExpectedCost.from_space(space)           # None when space.op_costs() is None
            def penalty(probs, model):                       # probs: {label: softmax(α) tensor, values order}
                e = costs(probs)                             # {"params": tensor, "flops": tensor}
                return self.params.my_lambda * e["params"] / costs.p0, {"E_params_rel": e["params"] / costs.p0}
            hooks = OneShotHooks(penalty=penalty, costs=costs,
                                 derive=space.derive,        # probs {label: {value: float}} -> sample; None: argmax
                                 label_groups=space.alpha_group,   # label -> panel of alpha.png; None: one per label
                                 arch_epoch=lambda e: e % 3 != 0,  # only with alternation="epoch"
                                 criterion=None,             # None: the task's loss; else an nn.Module(logits, target)
                                 train_transform=None,       # a callable on dict samples of the weight split (Cutout)
                                 train_batch_sampler=None,   # (dataset, batch_size, seed) -> batch sampler (NAS-SCAM)
                                 chosen_as="my argmax", title="my method")
            return run_oneshot(space, task, data, ctx, self.params, hooks, name="mine").finalists

``run_oneshot`` leaves ``space`` unchanged (the supernet is a deep copy) and returns a :class:`OneShotOutcome`
(``sample``, ``probs``, ``rows``, ``finalists`` ready for the core, ``seconds``, ``resumed_from``). The split used for
α is the data set's ``val`` split (``search_split``), the weights train on ``train``; the test split is never used.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
from nni.nas.strategy import DARTS
from torch import nn

from ..errors import ConfigError
from .expected_cost import ExpectedCost
from .oneshot import (ALPHA_PNG, METRICS_CSV, OneShotRecorder, finalists_from_export, fit_oneshot, make_loader,
                      plot_alpha, supernet_modules, trainer_device)
from .oneshot_checkpoint import AtomicCheckpointIO, checkpoint_epoch, checkpoint_path, last_checkpoint_callback
from .oneshot_hooks import OneShotHooks, OneShotOutcome, OneShotParams, Penalty

__all__ = ["OneShotParams", "OneShotHooks", "OneShotOutcome", "ExpectedCost", "OneShotSearchModule",
           "EngineDARTS", "run_oneshot", "Penalty"]

_logger = logging.getLogger(__name__)

class OneShotSearchModule(DartsLightningModule):
    """NNI's ``DartsLightningModule`` with our training step, optimisers, penalty, drop-path (see the module doc)."""

    def __init__(self, training_module: Any, *, params: OneShotParams, alphas: dict[str, nn.Parameter],
                 hooks: OneShotHooks):
        super().__init__(training_module, arc_learning_rate=params.arc_learning_rate,
                         gradient_clip_val=params.gradient_clip_val,
                         log_prob_every_n_step=params.log_prob_every_n_step, warmup_epochs=params.warmup_epochs)
        self.params, self.hooks = params, hooks
        self._alpha_labels = list(alphas)
        self._alphas = alphas          # the same nn.Parameter objects the supernet modules hold (NNI memo)
        #: names logged since the epoch started (Lightning keeps stale values of earlier epochs in
        #: ``callback_metrics``; the recorder must not report an α epoch's missing train loss from the epoch before)
        self.logged_this_epoch: set[str] = set()

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        self.logged_this_epoch.add(name)
        return super().log(name, value, *args, **kwargs)

    # ------------------------------------------------------------------ α as probabilities
    def arch_parameters(self) -> list[nn.Parameter]:
        """The α of the supernet in label order. NNI returns ``list(set(...))``, an order that changes from one
        construction to the next, so a resumed α optimiser would restore another α's Adam state by index (a crash
        when the sizes differ, silently wrong state when they agree)."""
        nni_order = super().arch_parameters()
        used = {id(p) for p in nni_order}
        ordered = [a for a in getattr(self, "_alphas", {}).values() if id(a) in used]
        known = {id(a) for a in ordered}
        return ordered + [p for p in nni_order if id(p) not in known]

    def alpha_by_label(self) -> dict[str, nn.Parameter]:
        """``{label: α}`` of every label the supernet actually relaxed (NNI_NOTES §2: the strategy's
        ``_arch_parameters`` intersected with the supernet modules' own α)."""
        used = {id(p) for p in self.arch_parameters()}
        return {k: a for k, a in self._alphas.items() if id(a) in used}

    def arch_probs(self) -> dict[str, torch.Tensor]:
        """``{label: softmax(α)}`` as tensors with gradient (values in the label's order)."""
        return {k: torch.softmax(a, dim=-1) for k, a in self.alpha_by_label().items()}

    # ------------------------------------------------------------------ one step
    def _is_arch_epoch(self, epoch: int) -> bool:
        if epoch < self.params.warmup_epochs:
            return False
        if self.params.alternation == "step":
            return True
        rule = self.hooks.arch_epoch or (lambda e: (e - self.params.warmup_epochs) % 2 == 1)
        return bool(rule(epoch))

    def _arch_step(self, val_batch: Any, batch_idx: int) -> None:
        arc_optim = self.architecture_optimizers()
        arc_optim.zero_grad()
        out = self.training_module.training_step(val_batch, 2 * batch_idx)
        loss = out["loss"] if isinstance(out, dict) else out
        if self.hooks.penalty is not None:
            term = self.hooks.penalty(self.arch_probs(), self.model)
            details: dict[str, Any] = {}
            if isinstance(term, tuple):
                term, details = term
            loss = loss + term
            n = len(val_batch["image"]) if isinstance(val_batch, dict) and "image" in val_batch else 1
            logs = {"penalty/term": term.detach()} | {f"penalty/{k}": torch.as_tensor(v).detach().float()
                                                     for k, v in details.items()}
            self.log_dict(logs, on_step=False, on_epoch=True, batch_size=n)
        self.manual_backward(loss)
        arc_optim.step()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        epoch = self.trainer.current_epoch
        arch = self._is_arch_epoch(epoch)
        if arch:
            self.resample()
            self._arch_step(batch["val"], batch_idx)
            if self.params.alternation == "epoch":       # an α epoch trains α only
                return None
        self.resample()
        out = self.training_module.training_step(batch["train"], 2 * batch_idx + 1)
        loss = out["loss"] if isinstance(out, dict) else out
        self.advance_optimization(loss, batch_idx, self.gradient_clip_val)
        if batch_idx % self.log_prob_every_n_step == 0:
            self.log_probs(self.export_probs())
        return out

    # ------------------------------------------------------------------ epochs
    def on_train_epoch_start(self) -> None:
        epoch, p = self.trainer.current_epoch, self.params
        self.logged_this_epoch = set()
        arch = self._is_arch_epoch(epoch)
        for a in self.arch_parameters():
            a.requires_grad_(arch)
        if p.drop_path_prob > 0:
            from monai.networks.layers import DropPath

            prob = p.drop_path_prob * epoch / p.epochs
            for m in self.model.modules():
                if isinstance(m, DropPath):
                    m.drop_prob = prob
        return self.training_module.on_train_epoch_start()

    def on_train_epoch_end(self) -> None:
        sched = self.lr_schedulers()
        if sched is not None and not (self.params.alternation == "epoch"
                                      and self._is_arch_epoch(self.trainer.current_epoch)):
            sched.step()
        return self.training_module.on_train_epoch_end()

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> Any:
        p = self.params
        arch_ids = {id(a) for a in self.arch_parameters()}
        if not arch_ids:
            raise ValueError("No architecture parameters found. Nothing to search.")
        weights = [w for w in self.training_module.parameters() if id(w) not in arch_ids]
        if p.optimizer == "sgd":
            w_opt = torch.optim.SGD(weights, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        else:
            w_opt = torch.optim.Adam(weights, lr=p.lr, weight_decay=p.weight_decay)
        a_opt = torch.optim.Adam(self.arch_parameters(), lr=p.arc_learning_rate, betas=(0.5, 0.999),
                                 weight_decay=p.arc_weight_decay)
        a_opt.is_arch_optimizer = True      # NNI's filter in advance_optimization / architecture_optimizers
        if p.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=p.epochs, eta_min=p.lr_min)
            return [w_opt, a_opt], [{"scheduler": sched, "interval": "epoch"}]
        return [w_opt, a_opt]


class EngineDARTS(DARTS):
    """NNI's ``DARTS`` strategy object whose one-shot module is :class:`OneShotSearchModule`."""

    def __init__(self, params: OneShotParams, hooks: OneShotHooks):
        super().__init__(arc_learning_rate=params.arc_learning_rate, gradient_clip_val=params.gradient_clip_val,
                         log_prob_every_n_step=params.log_prob_every_n_step, warmup_epochs=params.warmup_epochs)
        self.params, self.hooks = params, hooks

    def configure_oneshot_module(self, training_module: Any) -> OneShotSearchModule:
        return OneShotSearchModule(training_module, params=self.params, alphas=dict(self._arch_parameters),
                                   hooks=self.hooks)


class _Transformed(torch.utils.data.Dataset):
    """A data set of dict samples with ``transform`` applied to each sample (e.g. Cutout on the weight split)."""

    def __init__(self, base: Any, transform: Callable[[dict[str, Any]], dict[str, Any]]):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.transform(dict(self.base[i]))


def _space_name(space: Any) -> str:
    return getattr(space, "name", type(space).__name__)


def _relax(strategy: EngineDARTS, space: Any, name: str) -> Any:
    try:
        supernet = strategy.mutate_model(copy.deepcopy(space))   # α initialised here: after seeding
    except TypeError as e:  # NNI: "dangling mutables", "only support categorical variables", Cell merge_op
        raise ConfigError(f"strategy {name}: search space '{_space_name(space)}' has choices DARTS cannot relax; "
                          "expected LayerChoice, InputChoice, Repeat, Cell or categorical Mutable* ops, got: "
                          f"{str(e).splitlines()[0]}") from None
    if not supernet_modules(supernet):
        # e.g. choices registered with add_mutable on the space itself, which no one-shot hook replaces
        raise ConfigError(f"strategy {name}: search space '{_space_name(space)}' has no choice DARTS can relax; "
                          "expected LayerChoice, InputChoice, Repeat, Cell or categorical Mutable* ops inside the "
                          f"network, got only {sorted(space.simplify())}")
    return supernet


def _report_final(row: dict[str, Any], default_key: str | None) -> None:
    import nni

    default = row.get(default_key) if default_key else None
    if default is None:
        default = -float(row.get("train_loss", row.get("arch_loss", float("nan"))))
    nni.report_final_result({"default": default, **{k: v for k, v in row.items()
                                                    if k != "epoch" and not k.startswith("p/")}})


def run_oneshot(space: Any, task: Any, data: Any, ctx: Any, params: OneShotParams, hooks: OneShotHooks | None = None,
                *, name: str = "darts") -> OneShotOutcome:
    """Train the relaxed supernet of ``space`` for ``task`` on ``data`` and derive one architecture.

    Args:
        space: the search space (a ``ModelSpace`` + :class:`~mednas_nni.contracts.SearchSpace`); left unchanged.
        task: the task (its Lightning module trains the weights, its loss is the search loss unless
            ``hooks.criterion``), ``data`` the data set plugin, ``ctx`` the run context (run dir, device, seed).
        params: :class:`OneShotParams` (or a subclass).
        hooks: :class:`OneShotHooks`; None: plain first-order DARTS.
        name: the strategy's name, for messages and logs.

    Returns:
        :class:`OneShotOutcome`; ``finalists`` is what a strategy's ``search`` returns to the core.

    Raises:
        ConfigError: the space has nothing DARTS can relax.
    """
    import pytorch_lightning as pl
    from nni.nas.evaluator.pytorch import Lightning, Trainer

    hooks = hooks or OneShotHooks()
    p = params
    seed = ctx.cfg.run.seed if p.seed is None else p.seed
    pl.seed_everything(seed, workers=True, verbose=False)
    train_ds = data.dataset("train", augment=p.augment)
    if hooks.train_transform is not None:
        train_ds = _Transformed(train_ds, hooks.train_transform)
    val_ds = data.dataset("val", augment=False)
    if hooks.train_batch_sampler is not None:
        from nni.nas.evaluator.pytorch import DataLoader

        train_loader = DataLoader(train_ds, batch_sampler=hooks.train_batch_sampler(train_ds, p.batch_size, seed),
                                  num_workers=p.num_workers, persistent_workers=p.num_workers > 0)
    else:
        train_loader = make_loader(train_ds, p.batch_size, shuffle=True, seed=seed, num_workers=p.num_workers)
    arch_loader = make_loader(val_ds, p.batch_size, shuffle=True, seed=seed + 1, num_workers=p.num_workers)

    strategy = EngineDARTS(p, hooks)
    supernet = _relax(strategy, space, name)
    costs = hooks.costs

    evaluate, default_key = None, None
    if p.val_every_epoch:
        eval_loader = make_loader(val_ds, p.batch_size, shuffle=False, seed=seed, num_workers=p.num_workers)
        default_key = f"val_{task.select_key(ctx.cfg.evaluator.select_by)}"

        def evaluate(_module: Any) -> dict[str, float]:
            return task.evaluate(supernet, eval_loader, device=ctx.device, max_batches=p.max_val_batches)

    def extra(module: Any) -> dict[str, float]:
        if costs is None or not hasattr(module, "arch_probs"):
            return {}
        with torch.no_grad():
            e = costs(module.arch_probs())
        return {"E_params": float(e["params"]), "E_flops": float(e["flops"])}

    def log_epoch(row: dict[str, Any]) -> None:
        if row["epoch"] == 0:
            return
        nums = {k: v for k, v in row.items() if k != "epoch" and not k.startswith("p/")}
        _logger.info("%s epoch %d/%d: %s", hooks.log_name, row["epoch"], p.epochs,
                     ", ".join(f"{k}={v:.4g}" for k, v in nums.items()))

    recorder = OneShotRecorder(ctx.run_dir / METRICS_CSV, evaluate=evaluate, default_key=default_key,
                               on_epoch=log_epoch, extra=extra)
    callbacks: list[Any] = [recorder]
    fit_kwargs: dict[str, Any] = {}
    resumed_from = 0
    if p.checkpoint:
        callbacks.append(last_checkpoint_callback(ctx.run_dir))
        last = checkpoint_path(ctx.run_dir)
        if last.is_file():
            resumed_from = checkpoint_epoch(last)
            fit_kwargs["ckpt_path"] = str(last)
            _logger.info("%s: resuming the one-shot search from %s (%d of %d epochs done)", hooks.log_name, last,
                         resumed_from, p.epochs)
    trainer = Trainer(max_epochs=p.epochs, default_root_dir=str(ctx.run_dir.path), logger=False,
                      enable_checkpointing=False, enable_progress_bar=bool(ctx.progress),
                      enable_model_summary=False, num_sanity_val_steps=0, limit_train_batches=p.max_batches_per_epoch,
                      callbacks=callbacks, plugins=[AtomicCheckpointIO()] if p.checkpoint else None,
                      **trainer_device(ctx.device))
    module = task.lightning_module(lr=p.lr, weight_decay=p.weight_decay, dataset=data)
    if hooks.criterion is not None:
        module.criterion = hooks.criterion
    evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=arch_loader,
                          fit_kwargs=fit_kwargs)
    oneshot = strategy.mutate_evaluator(evaluator)
    _logger.info("%s: %d labels, %d epochs on %d train / %d search images (first-order, alternation by %s)",
                 hooks.log_name, len(space.simplify()), p.epochs, len(train_ds), len(val_ds), p.alternation)
    t0 = time.perf_counter()
    fit_oneshot(oneshot, supernet)
    seconds = time.perf_counter() - t0
    probs = OneShotRecorder.probs(oneshot.module)
    sample = hooks.derive(probs) if hooks.derive is not None else oneshot.module.export()
    _logger.info("%s done in %.1f s: %s", hooks.log_name, seconds, sample)
    task_name = getattr(task, "name", type(task).__name__)
    plot_alpha(recorder.rows, ctx.run_dir / ALPHA_PNG, title=f"{hooks.title}: softmax(α), {task_name} task",
               groups=hooks.label_groups)
    if recorder.report_to_nni and recorder.rows:
        _report_final(recorder.rows[-1], default_key)
    finalists = finalists_from_export(space, sample, hooks.chosen_as, probs)
    if costs is not None:
        finalists[0]["searched_cost"] = costs.of_sample(sample)
    return OneShotOutcome(sample=sample, probs=probs, rows=recorder.rows, finalists=finalists, seconds=seconds,
                          resumed_from=resumed_from)

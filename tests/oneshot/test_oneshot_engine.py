"""The one-shot engine (``mednas_nni.engines.oneshot_engine``): penalty gradient, alternation, warm-up, checkpoint and
resume from the last epoch, on the tiny segmentation space of ``_oneshot_helpers`` (disc images, a real run dir)."""
from __future__ import annotations

import csv

import pytest
import torch
from _oneshot_helpers import one_torch_thread  # noqa: F401 (autouse fixture: torch on one thread)
from _oneshot_helpers import DiscSegmentation, SegmentationTask, TinySegmenterSpace, make_ctx

from mednas_nni.engines.oneshot_checkpoint import checkpoint_path
from mednas_nni.engines.oneshot_engine import (EngineDARTS, ExpectedCost, OneShotHooks, OneShotParams,
                                               OneShotSearchModule, run_oneshot)



def _costs(space: TinySegmenterSpace) -> ExpectedCost:
    """Real parameter counts of the two candidates of ``mid`` (conv5x2 is the expensive one)."""
    n = {name: sum(p.numel() for p in space.mid[name].parameters()) for name in ("conv3", "conv5x2")}
    return ExpectedCost({"mid": {v: {"params": n[v], "flops": 1024 * n[v]} for v in n}}, space.label_values())


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_penalty_gradient_is_nonzero_and_points_to_the_cheaper_op():
    torch.manual_seed(0)
    space = TinySegmenterSpace()
    costs = _costs(space)
    strategy = EngineDARTS(OneShotParams(epochs=1), OneShotHooks())
    supernet = strategy.mutate_model(space)
    module = OneShotSearchModule(SegmentationTask(DiscSegmentation(4, 2).info).lightning_module(),
                                 params=strategy.params, alphas=dict(strategy._arch_parameters), hooks=strategy.hooks)
    module.training_module.set_model(supernet)
    alpha = module.alpha_by_label()["mid"]
    e = costs(module.arch_probs())
    (e["params"] / costs.p0 + e["flops"] / costs.f0).backward()
    values = ["conv3", "conv5x2"]
    g = dict(zip(values, alpha.grad.tolist()))
    assert g["conv5x2"] > 0 > g["conv3"]            # gradient descent moves probability to the cheaper op
    assert costs.p0 == pytest.approx((costs.params["mid"].sum() / 2).item())


def test_large_penalty_moves_alpha_to_the_cheap_op_and_csv_has_expected_costs(tmp_path):
    data = DiscSegmentation(n_train=16, n_val=8)
    task = SegmentationTask(data.info)
    chosen = {}
    for lam in (0.0, 50.0):
        torch.manual_seed(0)
        space = TinySegmenterSpace()
        costs = _costs(space)
        ctx = make_ctx(tmp_path / str(lam), data, task, seed=0)

        def penalty(probs, model, lam=lam, costs=costs):
            e = costs(probs)
            return lam * e["params"] / costs.p0, {"E_params_rel": e["params"] / costs.p0}

        params = OneShotParams(epochs=2, batch_size=8, arc_learning_rate=0.3, val_every_epoch=False,
                               checkpoint=False)
        out = run_oneshot(space, task, data, ctx, params, OneShotHooks(penalty=penalty, costs=costs))
        chosen[lam] = out.probs["mid"]["conv3"]
        rows = _rows(ctx.run_dir / "oneshot_metrics.csv")
        assert {"E_params", "E_flops", "penalty/term", "penalty/E_params_rel"} <= set(rows[-1])
        assert float(rows[0]["E_params"]) == pytest.approx(costs.p0, rel=1e-3)   # uniform α at the start
    assert chosen[50.0] > 0.9 > chosen[0.0]


def test_epoch_alternation_with_warmup_trains_alpha_only_in_alpha_epochs(tmp_path):
    data = DiscSegmentation(n_train=16, n_val=8)
    task = SegmentationTask(data.info)
    torch.manual_seed(0)
    ctx = make_ctx(tmp_path, data, task, seed=1)
    params = OneShotParams(epochs=4, batch_size=8, arc_learning_rate=0.1, warmup_epochs=1, alternation="epoch",
                           val_every_epoch=False, checkpoint=False, optimizer="sgd", lr=0.01,
                           lr_schedule="cosine")
    out = run_oneshot(TinySegmenterSpace(), task, data, ctx, params,
                      OneShotHooks(arch_epoch=lambda e: e == 2))
    p = [r["p/mid/conv3"] for r in out.rows]
    assert p[0] == p[1] == p[2] != p[3] == p[4]     # epochs 1-2 weights only (warm-up, weight epoch), 3 α only
    assert "train_loss" in out.rows[2] and "arch_loss" not in out.rows[2]
    assert "arch_loss" in out.rows[3] and "train_loss" not in out.rows[3]


class _Stop(RuntimeError):
    pass


def test_interrupted_search_resumes_from_its_last_epoch_checkpoint(tmp_path):
    """Epoch 3 of 4 dies; the checkpoint (weights_only-loadable) holds 2 epochs; the rerun trains epochs 3-4 only."""
    data = DiscSegmentation(n_train=16, n_val=8)
    task = SegmentationTask(data.info)
    ctx = make_ctx(tmp_path, data, task, seed=2)
    calls = {"epochs": []}
    params = OneShotParams(epochs=4, batch_size=8, arc_learning_rate=0.05, val_every_epoch=False)
    hooks = OneShotHooks()
    boom = {"at": 2}
    orig = OneShotSearchModule.on_train_epoch_start

    def dying_epoch_start(self):
        calls["epochs"].append(self.trainer.current_epoch)
        if self.trainer.current_epoch == boom["at"]:
            raise _Stop("killed")
        return orig(self)

    OneShotSearchModule.on_train_epoch_start = dying_epoch_start
    try:
        torch.manual_seed(0)
        with pytest.raises(_Stop):
            run_oneshot(TinySegmenterSpace(), task, data, ctx, params, hooks)
        ckpt = torch.load(checkpoint_path(ctx.run_dir), weights_only=True)     # no pickled objects
        assert ckpt["epoch"] == 1 and any(k.endswith("_arch_alpha") for k in ckpt["state_dict"])
        alpha_saved = next(v for k, v in ckpt["state_dict"].items() if k.endswith("_arch_alpha")).clone()
        assert [int(r["epoch"]) for r in _rows(ctx.run_dir / "oneshot_metrics.csv")] == [0, 1, 2]

        boom["at"] = None
        calls["epochs"] = []
        torch.manual_seed(0)
        out = run_oneshot(TinySegmenterSpace(), task, data, ctx, params, hooks)
    finally:
        OneShotSearchModule.on_train_epoch_start = orig
    assert out.resumed_from == 2
    assert calls["epochs"] == [2, 3]               # no epoch ran twice
    assert [int(r["epoch"]) for r in out.rows] == [0, 1, 2, 3, 4]
    assert [int(r["epoch"]) for r in _rows(ctx.run_dir / "oneshot_metrics.csv")] == [0, 1, 2, 3, 4]
    assert out.rows[2]["p/mid/conv3"] == pytest.approx(torch.softmax(alpha_saved, -1)[0].item(), abs=1e-6)
    assert torch.load(checkpoint_path(ctx.run_dir), weights_only=True)["epoch"] == 3


def test_in_an_nnictl_trial_every_epoch_and_the_end_reach_nni(tmp_path, monkeypatch):
    """The search as one nnictl trial (NNI_NOTES §4): intermediate dicts per epoch, one final dict at the end."""
    import nni

    import mednas_nni.engines.oneshot as oneshot
    from mednas_nni.engines.oneshot_trial import overrides_from_parameters

    sent = {"intermediate": [], "final": []}
    monkeypatch.setattr(oneshot, "in_nni_trial", lambda: True)
    monkeypatch.setattr(nni, "report_intermediate_result", lambda m: sent["intermediate"].append(m))
    monkeypatch.setattr(nni, "report_final_result", lambda m: sent["final"].append(m))
    data = DiscSegmentation(n_train=8, n_val=8)
    task = SegmentationTask(data.info)
    space = TinySegmenterSpace()
    ctx = make_ctx(tmp_path, data, task, seed=0)
    run_oneshot(space, task, data, ctx, OneShotParams(epochs=2, batch_size=8, checkpoint=False, max_val_batches=1),
                OneShotHooks(costs=_costs(space)))
    assert len(sent["intermediate"]) == 2 and len(sent["final"]) == 1
    last = sent["intermediate"][-1]
    assert last["default"] == last["val_dice"] and {"E_params", "p/mid/conv3", "train_loss"} <= set(last)
    assert sent["final"][0]["default"] == last["default"] and "p/mid/conv3" not in sent["final"][0]
    assert overrides_from_parameters({"lambda_params": 0.015, "space.params.channels": 8}) == [
        "strategy.params.lambda_params=0.015", "space.params.channels=8"]

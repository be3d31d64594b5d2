"""NAS-SCAM strategy (``scam``) on the shared one-shot engine: warm-up freezes α, then α and the weights both train
(by epoch and by step), kill + resume continues from the last epoch, the exponential-log Dice loss and the
class-balanced sampler (binary and 3-class masks), figures and the derived finalist.

The space is the real ``scam_unet`` at root width 4 with a reduced op set (the full 6/8-op cells are covered by
tests/search_spaces/test_scam_unet.py), on 16x16 disc images (``_oneshot_helpers``), so every search takes seconds.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from _oneshot_helpers import one_torch_thread  # noqa: F401 (autouse fixture: torch on one thread)
from _oneshot_helpers import DiscSegmentation, SegmentationTask, make_ctx

from mednas_nni.engines.oneshot_engine import OneShotSearchModule
from mednas_nni.search_spaces.scam_unet import SCAMUNetSpace
from mednas_nni.strategies.scam import NASSCAMSearch, SCAMParams
from mednas_nni.strategies.scam_figures import CELLS_PNG
from mednas_nni.strategies.scam_sampler import ClassBalancedBatchSampler, classes_present
from mednas_nni.tasks.seg_losses_explog import ExpLogDiceLoss

OPS = dict(sam_ops=["none", "conv1", "conv3"], cam_ops=["none", "conv3"])
FAST = dict(batch_size=4, val_every_epoch=False, arc_learning_rate=0.05, lr=3e-3, max_batches_per_epoch=2)



class RingSegmentation(DiscSegmentation):
    """3 classes: the disc's outer ring is class 1, its core class 2 (cytoplasm / nucleus-like)."""

    def __init__(self, n_train: int = 8, n_val: int = 4, size: int = 16, seed: int = 0):
        super().__init__(n_train, n_val, size, seed)
        for split, (imgs, masks) in self._arrays.items():
            core = np.zeros_like(masks)
            for i, m in enumerate(masks):
                ys, xs = np.nonzero(m)
                cy, cx = ys.mean(), xs.mean()
                yy, xx = np.mgrid[:size, :size]
                core[i] = m & (((yy - cy) ** 2 + (xx - cx) ** 2) < 4)
            self._arrays[split] = (np.clip(imgs.astype(int) + 60 * core, 0, 255).astype(np.uint8),
                                   masks + core)

    @property
    def info(self):
        info = super().info
        info.num_classes, info.label_names = 3, ["background", "ring", "core"]
        return info


def _space(data, **kw):
    return SCAMUNetSpace(in_channels=1, out_channels=data.info.num_classes, root_width=4, **OPS, **kw)


class _Probe:
    """Records α and one weight tensor at the end of every training epoch (a patched engine hook)."""

    def __init__(self):
        self.alpha, self.weight = [], []

    def __enter__(self):
        orig = self.orig = OneShotSearchModule.on_train_epoch_end
        probe = self

        def record(module):
            a = module.alpha_by_label()["down1/sam/node1_in0"]
            probe.alpha.append(a.detach().clone())
            probe.weight.append(module.model.unet.conv_0.conv_0.conv.weight.detach().clone())
            return orig(module)

        OneShotSearchModule.on_train_epoch_end = record
        return self

    def __exit__(self, *exc):
        OneShotSearchModule.on_train_epoch_end = self.orig


def _changed(a: torch.Tensor, b: torch.Tensor) -> bool:
    return not torch.equal(a, b)


@pytest.mark.parametrize("alternation", ["epoch", "step"])
def test_warmup_freezes_alpha_then_alpha_and_weights_train(tmp_path, alternation):
    data = DiscSegmentation(n_train=8, n_val=4, size=16)
    task = SegmentationTask(data.info)
    ctx = make_ctx(tmp_path, data, task, seed=0)
    epochs = 4 if alternation == "epoch" else 3
    strategy = NASSCAMSearch(epochs=epochs, warmup_epochs=2, weight_every=3, alternation=alternation,
                             checkpoint=False, figures=alternation == "epoch", **FAST)
    torch.manual_seed(0)
    space = _space(data)
    alpha0 = None
    with _Probe() as probe:
        finalists = strategy.search(space, task, data, ctx)
    rows = list(csv.DictReader(open(ctx.run_dir / "oneshot_metrics.csv")))
    col = "p/down1/sam/node1_in0/conv3"
    alpha0 = float(rows[0][col])
    a, w = probe.alpha, probe.weight
    # warm-up (epochs 0, 1): α exactly as initialised, weights trained
    assert float(rows[1][col]) == float(rows[2][col]) == alpha0
    assert not _changed(a[0], a[1]) and _changed(w[0], w[1])
    if alternation == "epoch":
        # epoch 2 (2 % 3 != 0): α only; epoch 3 (3 % 3 == 0): weights only
        assert _changed(a[1], a[2]) and not _changed(w[1], w[2])
        assert not _changed(a[2], a[3]) and _changed(w[2], w[3])
        assert float(rows[3][col]) != alpha0
    else:
        # after warm-up every epoch trains both
        assert _changed(a[1], a[2]) and _changed(w[1], w[2])
    sample = finalists[0]["sample"]
    assert set(sample) == set(space.label_values()) and finalists[0]["chosen_as"] == "NAS-SCAM argmax"
    probs = finalists[0]["alpha"]
    assert all(sample[k] == max(probs[k], key=probs[k].get) for k in sample)      # argmax per edge
    names = ("alpha.png", CELLS_PNG, "alpha_down1.png", "alpha_up4.png")
    for name in names if alternation == "epoch" else names[:1]:
        assert (ctx.run_dir.path / name).read_bytes()[:4] == b"\x89PNG"


class _Stop(RuntimeError):
    pass


def test_killed_search_resumes_from_its_last_epoch(tmp_path):
    data = DiscSegmentation(n_train=8, n_val=4, size=16)
    task = SegmentationTask(data.info)
    ctx = make_ctx(tmp_path, data, task, seed=1)
    params = dict(epochs=4, warmup_epochs=1, weight_every=3, figures=False, **FAST)
    seen: list[int] = []
    boom = {"at": 2}
    orig = OneShotSearchModule.on_train_epoch_start

    def dying(self):
        seen.append(self.trainer.current_epoch)
        if self.trainer.current_epoch == boom["at"]:
            raise _Stop("killed")
        return orig(self)

    OneShotSearchModule.on_train_epoch_start = dying
    try:
        torch.manual_seed(0)
        with pytest.raises(_Stop):
            NASSCAMSearch(**params).search(_space(data), task, data, ctx)
        assert seen == [0, 1, 2]
        boom["at"], seen[:] = None, []
        torch.manual_seed(0)
        finalists = NASSCAMSearch(**params).search(_space(data), task, data, ctx)
    finally:
        OneShotSearchModule.on_train_epoch_start = orig
    assert seen == [2, 3]                                    # continued from the last finished epoch
    rows = list(csv.DictReader(open(ctx.run_dir / "oneshot_metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert finalists and finalists[0]["chosen_as"] == "NAS-SCAM argmax"


def test_explog_loss_and_balanced_sampler_on_three_classes(tmp_path, monkeypatch):
    data = RingSegmentation()
    task = SegmentationTask(data.info)
    ctx = make_ctx(tmp_path, data, task, seed=0)
    used = {}
    orig_step = OneShotSearchModule.training_step

    def spy(self, batch, batch_idx):
        used["criterion"] = self.training_module.criterion
        used.setdefault("labels", []).append(batch["train"]["label"].clone())
        return orig_step(self, batch, batch_idx)

    monkeypatch.setattr(OneShotSearchModule, "training_step", spy)
    strategy = NASSCAMSearch(epochs=2, warmup_epochs=1, weight_every=2, loss="explog", balanced_sampler=True,
                             checkpoint=False, figures=False, **FAST)
    finalists = strategy.search(_space(data), task, data, ctx)
    assert isinstance(used["criterion"], ExpLogDiceLoss) and finalists
    for y in used["labels"]:                                 # every weight batch holds both foreground classes
        assert {1, 2} <= set(torch.unique(y).tolist())


def test_class_balanced_sampler_puts_every_class_in_every_batch():
    masks = np.zeros((10, 4, 4), dtype=np.uint8)
    masks[0, 0, 0] = 3                                       # class 3 is rare: one image of ten
    masks[1:6, 1, 1] = 1
    masks[6:9, 2, 2] = 2                                     # image 9: background only, never drawn
    present = classes_present(masks, 4)
    sampler = ClassBalancedBatchSampler(present, batch_size=3, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4
    for b in batches:
        assert {c for i in b for c in range(1, 4) if present[i, c]} == {1, 2, 3}
        assert 9 not in b
    sampler.set_epoch(0)
    assert list(sampler) == batches                          # same epoch, same batches (resume)
    with pytest.raises(ValueError, match="background-only"):
        ClassBalancedBatchSampler(np.zeros((3, 2), dtype=bool) | np.array([[True, False]] * 3), 2)


def test_explog_dice_is_mean_of_powered_negative_log_dice():
    logits = torch.tensor([[[[4.0, -4.0], [-4.0, 4.0]], [[-4.0, 4.0], [4.0, -4.0]]]])   # (1, 2, 2, 2)
    target = torch.tensor([[[[0, 1], [1, 1]]]])
    p = torch.softmax(logits, 1)
    onehot = torch.stack([(target[:, 0] == c).float() for c in range(2)], 1)
    dice = (2 * (p * onehot).sum((0, 2, 3)) + 1e-5) / (p.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1e-5)
    expected = (-torch.log(dice)).pow(0.3).mean()
    torch.testing.assert_close(ExpLogDiceLoss()(logits, target), expected)
    fg = ExpLogDiceLoss(include_background=False)(logits, target)
    torch.testing.assert_close(fg, (-torch.log(dice[1])).pow(0.3))


def test_params_need_an_alpha_epoch_and_a_segmentation_task():
    with pytest.raises(ValueError, match="at least one α epoch"):
        SCAMParams(epochs=4, warmup_epochs=3, weight_every=3)
    assert SCAMParams(epochs=4, warmup_epochs=3, weight_every=3, alternation="step").alternation == "step"


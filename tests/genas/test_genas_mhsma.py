"""The ``mhsma`` data plugin (real MHSMA files from ../shared/data/mhsma) and the GeNAS trial function."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from _genas_helpers import one_torch_thread  # noqa: F401 (autouse fixture)
from conftest import require_data
from mednas_nni.config import load_config
from mednas_nni.data.mhsma import MHSMADataset, MHSMAParams, oversample_indices
from mednas_nni.errors import ConfigError, DataError
from mednas_nni.registry import get_plugin
from mednas_nni.search_spaces.genas_cnn import GeNASCNNSpace
from mednas_nni.strategies._utils import arch_hash

pytestmark = pytest.mark.data

# abnormal counts (label 1) per split, from the upstream README / shared/data/README.md
ABNORMAL = {"acrosome": (301, 66, 87), "head": (273, 64, 81), "vacuole": (170, 31, 38), "tail": (46, 7, 16)}


@pytest.fixture(scope="module")
def root():
    return require_data("mhsma")


@pytest.mark.parametrize("label", sorted(ABNORMAL))
def test_official_splits_and_labels(root, label) -> None:
    ds = get_plugin("datasets", "mhsma")(root=root, label=label)
    for split, n, k in zip(("train", "val", "test"), (1000, 240, 300), ABNORMAL[label]):
        x, y = ds.arrays(split)
        assert x.shape == (n, 64, 64) and x.dtype == np.uint8
        assert y.shape == (n, 1) and int(y.sum()) == k          # 1 = abnormal
    info = ds.info
    assert info.task == "classification" and info.task_type == "binary-class" and info.num_classes == 2 and info.label_names == ["normal", "abnormal"]
    assert info.licence == "CC BY-NC-SA 4.0" and "10.1016/j.compbiomed.2019.04.030" in info.citation
    assert info.split_sizes == {"train": 1000, "val": 240, "test": 300} and info.image_size == 64


def test_oversampling_balances_train_only(root) -> None:
    ds = MHSMADataset(root=root, label="vacuole")
    y = ds.arrays("train")[1].reshape(-1)
    idx = oversample_indices(y, seed=0)
    counts = np.bincount(y[idx])
    assert counts[0] == counts[1] == 830 and set(np.flatnonzero(y == 1)) <= set(idx)
    assert np.array_equal(idx, oversample_indices(y, seed=0))
    train = ds.dataset("train")
    assert len(train) == 1660 and len(ds.dataset("val")) == 240
    img, lab = train[0]["image"], train[0]["label"]
    assert img.shape == (1, 64, 64) and img.dtype == torch.float32 and lab.shape == (1,)
    assert len(MHSMADataset(root=root, label="vacuole", imbalance="none").dataset("train")) == 1000
    w = MHSMADataset(root=root, label="vacuole", imbalance="weighted_loss")
    assert w.loss_weights()[1] > w.loss_weights()[0] and ds.loss_weights() is None


def test_augmented_pipeline_runs(root) -> None:
    ds = MHSMADataset(root=root, label="head", imbalance="none").dataset("train", augment=True)
    assert ds[3]["image"].shape == (1, 64, 64)


def test_missing_files_give_one_line_errors(root, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"x_128_train\.npy .*only x_128_valid\.npy"):
        MHSMADataset.check_params(MHSMAParams(root=root, size=128))
    with pytest.raises(DataError, match=r"x_128_train\.npy"):
        MHSMADataset(root=root, size=128).arrays("train")
    assert MHSMADataset(root=root, size=128).arrays("val")[0].shape == (240, 128, 128)
    with pytest.raises(ConfigError, match="no download exists"):
        MHSMADataset.check_params(MHSMAParams(root=tmp_path / "nope"))
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in ("x_64_train.npy", "x_64_valid.npy", "x_64_test.npy", "y_head_train.npy", "y_head_valid.npy"):
        shutil.copy(root / f, partial / f)
    with pytest.raises(ConfigError, match=r"y_head_test\.npy"):
        MHSMADataset.check_params(MHSMAParams(root=partial))
    np.save(partial / "y_head_test.npy", np.full(300, 2, dtype=np.uint8))
    with pytest.raises(DataError, match="expected labels 0/1"):
        MHSMADataset(root=partial).arrays("test")
    with pytest.raises(ValueError, match="split"):
        MHSMADataset(root=root).arrays("valid")


def test_example_config_validates(root) -> None:
    cfg = load_config("examples/genas_mhsma.yml")
    assert (cfg.data.name, cfg.space.name, cfg.strategy.name) == ("mhsma", "genas_cnn", "genas_wf")
    with pytest.raises(ConfigError, match="x_128_train.npy"):
        load_config("examples/genas_mhsma.yml", ["data.params.size=128"])


def test_f05_positive_class_is_abnormal() -> None:
    from mednas_nni.tasks.classification import classification_metrics

    y = np.array([0, 0, 0, 1, 1])[:, None]
    p1 = np.array([0.1, 0.2, 0.9, 0.8, 0.3])
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), "binary-class")
    assert m["acc"] == pytest.approx(0.6) and m["balanced_acc"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    p, r = 1 / 2, 1 / 2                                     # abnormal: precision 1/2, recall 1/2
    assert m["f05"] == pytest.approx(1.25 * p * r / (0.25 * p + r)) and 0 <= m["auc"] <= 1


def test_trial_trains_reports_and_records_failures(root, tmp_path) -> None:
    """The GeNAS-WF trial (task training + fitness) through the core's trial runner, as an NNI trial runs it."""
    from mednas_nni.engines.trial import TRIAL_ERRORS, run_trial, trial_error
    from mednas_nni.experiment import RunContext
    from mednas_nni.io import RunDir

    cfg = load_config("examples/genas_mhsma.yml", [f"data.params.root={root}", "run.device=cpu",
                                                   "run.progress=false"])
    rd = RunDir(tmp_path)
    (rd / RunDir.CONFIG).write_text("# not read: the context is built here\n")
    from mednas_nni.engines.trial import register_context

    register_context(RunContext.build(cfg, rd))
    space = GeNASCNNSpace(image_size=64, max_depth=3, filters=[4], kernels=[3, 7], strides=[2], pools=["max"],
                          dropouts=[0.0])
    good = space.canonicalize({**{k: v[0] for k, v in space.label_values().items()}, "depth": 2})
    kwargs = dict(epochs=2, max_batches_per_epoch=2, seed=0)
    fn = "mednas_nni.strategies._train_trial:train_and_score"
    final = run_trial(space.freeze(good), sample=good, run_dir=str(tmp_path), trial_function=fn, trial_kwargs=kwargs)
    # default = the task's selection metric of the example config (val balanced accuracy), last epoch
    assert len(final["history"]) == 2 and final["default"] == final["history"][-1]["val_balanced_acc"]
    assert {"fitness", "val_balanced_acc", "val_acc", "val_f05", "val_auc", "best_val_balanced_acc",
            "params"} <= set(final)
    again = run_trial(space.freeze(good), sample=good, run_dir=str(tmp_path), trial_function=fn, trial_kwargs=kwargs)
    assert again["history"][-1]["val_auc"] == final["history"][-1]["val_auc"]     # seeded: same weights, same curve
    bad = space.canonicalize({**good, "depth": 3, "layer0/kernel": 7, "layer1/kernel": 7, "layer2/kernel": 7})
    assert not space.is_valid(bad)[0]                        # 64 -> 29 -> 5 -> < 0: pruned before any training
    with pytest.raises(RuntimeError):
        run_trial(space.freeze(bad), sample=bad, run_dir=str(tmp_path), trial_function=fn, trial_kwargs=kwargs)
    assert (tmp_path / TRIAL_ERRORS / f"{arch_hash(bad)}.txt").exists()
    assert trial_error(tmp_path, arch_hash(bad)).startswith("RuntimeError")

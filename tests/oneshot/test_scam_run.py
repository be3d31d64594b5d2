"""NAS-SCAM end to end on real WBC images (3 classes): ``mednas search examples/scam_wbc.yml`` at a tiny budget ->
run directory (best_arch.json, best.pt, metrics.json per class, overlays.png, the α CSV) -> ``mednas export`` ->
``mednas predict`` class-index masks equal to the PyTorch argmax."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_data
from mednas_nni.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.params.size=32", "data.params.max_images=24", "space.params.root_width=4",
        "space.params.hidden_channels=4",
        'strategy.params={"epochs": 3, "warmup_epochs": 1, "batch_size": 4, "max_batches_per_epoch": 2, '
        '"max_val_batches": 1, "figures": false, "torch_threads": 1}',
        "evaluator.epochs=1", "evaluator.max_batches_per_epoch=2", "evaluator.batch_size=4", "export=null",
        "run.progress=false"]


@pytest.mark.slow
@pytest.mark.data
def test_scam_search_export_predict_on_wbc(tmp_path, monkeypatch, capsys):
    root = require_data("wbc_seg")
    monkeypatch.chdir(tmp_path)
    args = ["search", str(REPO / "examples" / "scam_wbc.yml"), f"data.params.root={root}",
            f"run.out_dir={tmp_path / 'runs'}", *TINY]
    assert main(args) == 0
    run = next((tmp_path / "runs").iterdir())
    arch = json.loads((run / "best_arch.json").read_text())
    assert len(arch.get("sample", arch)) >= 96
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"dice", "dice_cytoplasm", "dice_nucleus", "hd95"} <= set(metrics["test"])
    assert (run / "overlays.png").is_file() and (run / "alpha.png").is_file()
    assert set(torch.load(run / "best.pt", weights_only=True))          # a plain state_dict
    rows = list(csv.DictReader(open(run / "oneshot_metrics.csv")))
    assert len(rows) == 4 and any(c.startswith("p/up4/cam/node3_in2/") for c in rows[0])

    assert main(["export", str(run)]) == 0
    bundle = run / "bundle"
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity["task"] == "segmentation" and parity["mask_dice_ort_vs_pytorch"] == 1.0
    from mednas_nni.experiment import load_trained

    trained = load_trained(run)
    raw, _ = trained.dataset.arrays("test")
    from PIL import Image

    files = []
    for i in range(2):
        Image.fromarray(raw[i]).save(tmp_path / f"wbc{i}.png")
        files.append(str(tmp_path / f"wbc{i}.png"))
    ds = trained.dataset.dataset("test")
    with torch.no_grad():
        ref = trained.model(torch.stack([ds[i]["image"] for i in range(2)]).float()).argmax(1).numpy()
    capsys.readouterr()
    assert main(["predict", str(bundle), *files, "--mask-dir", str(tmp_path / "masks")]) == 0
    for i in range(2):
        mask = np.asarray(Image.open(tmp_path / "masks" / f"wbc{i}_mask.png"))
        np.testing.assert_array_equal(mask, ref[i])
        assert set(np.unique(mask)) <= {0, 1, 2}

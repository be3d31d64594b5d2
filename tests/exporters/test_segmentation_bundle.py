"""The segmentation path of ``predict`` on a tiny hand-made ONNX model (no segmentation run exists yet)."""
from __future__ import annotations

import json

import numpy as np

from mednas_nni.cli import main
from mednas_nni.deploy_runtime import Bundle, predict_files

from deploy_fixtures import make_bundle  # noqa: F401 - pytest fixture


def test_segmentation_bundle_writes_class_index_masks(make_bundle, tmp_path, capsys):
    from PIL import Image

    # 1x1 conv: class 1 wins where the pixel is brighter than 127.5 (x = pixel / 255 > 0.5)
    d = make_bundle(task="segmentation", channels=1, size=16, classes=2,
                    output={"name": "logits", "activation": "softmax", "label_names": ["background", "lesion"]})
    img = np.zeros((32, 40), np.uint8)
    img[:, 20:] = 200  # right half bright
    Image.fromarray(img).save(tmp_path / "scan.png")
    out = tmp_path / "pred.json"
    records = predict_files(Bundle(d), [tmp_path / "scan.png"], out=out)
    (rec,) = records
    mask = np.asarray(Image.open(rec["mask"]))
    assert rec["mask"] == str(tmp_path / "pred_masks" / "scan_mask.png")
    assert mask.shape == (32, 40) and mask.dtype == np.uint8  # back at the source size
    assert set(np.unique(mask)) == {0, 1}
    assert (mask[:, :18] == 0).all() and (mask[:, 22:] == 1).all()
    assert rec["class_pixels"] == {"background": int((mask == 0).sum()), "lesion": int((mask == 1).sum())}
    assert any("resized from 32x40 to 16x16" in n for n in rec["notes"])
    assert json.loads(out.read_text())["predictions"][0]["mask"] == rec["mask"]

    # through the CLI, with an explicit mask folder and a stack of two images
    np.save(tmp_path / "stack.npy", np.stack([img, 255 - img]))
    assert main(["predict", str(d), str(tmp_path / "stack.npy"), "--mask-dir", str(tmp_path / "m")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    a, b = (np.asarray(Image.open(r["mask"])) for r in lines)
    assert [r["index"] for r in lines] == [0, 1] and (a == 1 - b).all()


def test_segmentation_with_one_sigmoid_channel(make_bundle, tmp_path):
    from PIL import Image

    d = make_bundle(task="segmentation", channels=1, size=8, classes=1,
                    output={"name": "logits", "activation": "sigmoid", "threshold": 0.5,
                            "label_names": ["background", "lesion"]})
    img = np.full((8, 8), 255, np.uint8)  # x = 1: the single logit is -(1 - 0.5) < 0 -> background
    img[:4] = 0
    (rec,) = predict_files(Bundle(d), [_save(tmp_path, img)], mask_dir=tmp_path / "m")
    mask = np.asarray(Image.open(rec["mask"]))
    assert (mask[:4] == 1).all() and (mask[4:] == 0).all()


def _save(tmp_path, img):
    from PIL import Image

    p = tmp_path / "img.png"
    Image.fromarray(img).save(p)
    return p

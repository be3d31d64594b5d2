"""The layout of an exported bundle: file names and format version (standard library only).

A bundle is a folder written by ``mednas export``::

    model.onnx           fp32 model: input ``image`` (batch, C, H, W) float32, output ``logits``
                         (classification: (batch, K); segmentation: (batch, K, H, W))
    model.int8.onnx      optional, statically quantised (QDQ) copy
    preprocessing.json   everything needed to turn a file into the model input and the output into an answer
                         (schema: :class:`mednas_nni.deploy.preprocessing.Preprocessing`)
    model_card.md        intended use, data, metrics, architecture, latency
    parity.json          onnxruntime vs PyTorch on the test split
    gradcam/             classification: Grad-CAM PNGs + index.json (segmentation: overlays.png)

Format versions: 1 (before Core v2: ``task`` held the MedMNIST task type, e.g. ``binary-class``) and 2 (``task``
names the task plugin, ``classification`` or ``segmentation``; the MedMNIST type moved to ``task_type``) and 3
(adds ``acquisition``, ``input_statistics`` and the binary ``output.positive_class`` / ``operating_point``; the
bundle may hold ``gradcam/`` or ``overlays.png``, linked from the model card). Readers accept every version up to
:data:`BUNDLE_VERSION`.
"""
from __future__ import annotations

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "MODEL_FILE", "MODEL_INT8_FILE", "PREPROCESSING_FILE",
           "MODEL_CARD_FILE", "PARITY_FILE", "INPUT_NAME", "OUTPUT_NAME", "GRADCAM_DIR", "HASHED_FILES"]

BUNDLE_FORMAT = "mednas-bundle"
BUNDLE_VERSION = 3
MODEL_FILE = "model.onnx"
MODEL_INT8_FILE = "model.int8.onnx"
PREPROCESSING_FILE = "preprocessing.json"
MODEL_CARD_FILE = "model_card.md"
PARITY_FILE = "parity.json"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
GRADCAM_DIR = "gradcam"
# The files whose bytes make up a bundle's hash (the model card and pictures describe it, they are not part of it).
HASHED_FILES = (MODEL_FILE, MODEL_INT8_FILE, PREPROCESSING_FILE)

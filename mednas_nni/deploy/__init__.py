"""Run an exported bundle with onnxruntime only (no torch, no nni): what ``mednas predict`` uses on a device.

Modules: :mod:`~mednas_nni.deploy.layout` (file names, format version), :mod:`~mednas_nni.deploy.readers` (input
files -> 2-D images), :mod:`~mednas_nni.deploy.preprocessing` (the ``preprocessing.json`` schema, written by the
exporter and read here, and how it is applied), :mod:`~mednas_nni.deploy.bundle` (the onnxruntime session,
probabilities, masks) and :mod:`~mednas_nni.deploy.predict` (files in, records and mask PNGs out).

Example::

    from mednas_nni.deploy import Bundle, predict_files
    records = predict_files(Bundle("runs/.../bundle"), ["scan.dcm"], out="pred.json")
"""
from __future__ import annotations

from .bundle import Bundle, masks_from_logits, sigmoid, softmax
from .layout import (BUNDLE_FORMAT, BUNDLE_VERSION, INPUT_NAME, MODEL_CARD_FILE, MODEL_FILE, MODEL_INT8_FILE,
                     OUTPUT_NAME, PARITY_FILE, PREPROCESSING_FILE)
from .predict import predict_files, predict_images
from .preprocessing import Preprocessing, preprocess
from .readers import (ARRAY_SUFFIXES, DICOM_SUFFIXES, IMAGE_SUFFIXES, SUPPORTED_SUFFIXES, VOLUME_SUFFIXES,
                      InputImage, read_images)

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_VERSION", "MODEL_FILE", "MODEL_INT8_FILE", "PREPROCESSING_FILE", "MODEL_CARD_FILE",
    "PARITY_FILE", "INPUT_NAME", "OUTPUT_NAME", "IMAGE_SUFFIXES", "ARRAY_SUFFIXES", "DICOM_SUFFIXES",
    "VOLUME_SUFFIXES", "SUPPORTED_SUFFIXES", "InputImage", "read_images", "Preprocessing", "preprocess", "Bundle",
    "softmax", "sigmoid", "masks_from_logits", "predict_images", "predict_files",
]

"""Run an exported bundle with onnxruntime only (no torch, no nni): what ``mednas predict`` uses on a device.

Modules: :mod:`~mednas_nni.deploy.layout` (file names, format version), :mod:`~mednas_nni.deploy.inputs` (files,
folders, DICOM series and globs -> input items), :mod:`~mednas_nni.deploy.readers` and
:mod:`~mednas_nni.deploy.dicom` (input files -> 2-D images), :mod:`~mednas_nni.deploy.preprocessing` (the
``preprocessing.json`` schema, written by the exporter and read here, and how it is applied),
:mod:`~mednas_nni.deploy.ood` (does an input look like the training images?), :mod:`~mednas_nni.deploy.bundle`
(the onnxruntime session, probabilities, masks, the bundle's hash) and :mod:`~mednas_nni.deploy.predict` (inputs
in, records and mask PNGs out).

Example::

    from mednas_nni.deploy import Bundle, predict_files
    records = predict_files(Bundle("runs/.../bundle"), ["scan.dcm", "series/"], out="pred.json", skip_errors=True)
"""
from __future__ import annotations

from .bundle import Bundle, bundle_hash, masks_from_logits, sigmoid, softmax
from .image import InputImage
from .inputs import expand_inputs
from .layout import (BUNDLE_FORMAT, BUNDLE_VERSION, GRADCAM_DIR, INPUT_NAME, MODEL_CARD_FILE, MODEL_FILE,
                     MODEL_INT8_FILE, OUTPUT_NAME, PARITY_FILE, PREPROCESSING_FILE)
from .ood import ood_reasons, training_statistics
from .predict import predict_files, predict_images
from .preprocessing import Preprocessing, preprocess
from .readers import (ARRAY_SUFFIXES, DICOM_SUFFIXES, IMAGE_SUFFIXES, SUPPORTED_SUFFIXES, VOLUME_SUFFIXES,
                      read_images)

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_VERSION", "MODEL_FILE", "MODEL_INT8_FILE", "PREPROCESSING_FILE", "MODEL_CARD_FILE",
    "PARITY_FILE", "INPUT_NAME", "OUTPUT_NAME", "GRADCAM_DIR", "IMAGE_SUFFIXES", "ARRAY_SUFFIXES",
    "DICOM_SUFFIXES", "VOLUME_SUFFIXES", "SUPPORTED_SUFFIXES", "InputImage", "read_images", "expand_inputs",
    "Preprocessing", "preprocess", "ood_reasons", "training_statistics", "Bundle", "bundle_hash", "softmax",
    "sigmoid", "masks_from_logits", "predict_images", "predict_files",
]

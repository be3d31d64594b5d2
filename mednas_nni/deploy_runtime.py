"""Run an exported bundle with onnxruntime only: read images, apply ``preprocessing.json``, predict.

This module is what ``mednas predict`` uses on a device. It imports only the standard library, numpy,
onnxruntime and PIL (plus pydicom / SimpleITK, lazily, for DICOM / NIfTI / MHA inputs: the ``io`` extra),
never torch or nni, so a bundle runs where only ``onnxruntime`` is installed.

A bundle is a folder written by ``mednas export``::

    model.onnx           fp32 model: input ``image`` (batch, C, H, W) float32, output ``logits``
    model.int8.onnx      optional, statically quantised (QDQ) copy
    preprocessing.json   everything needed to turn a file into the model input (see :func:`preprocess`)
    model_card.md        intended use, data, metrics, architecture, latency
    parity.json          onnxruntime vs PyTorch on the test split

Input files and how they are read (:func:`read_images`):

* PNG / JPEG / BMP / TIFF (PIL): grayscale stays one channel, palette/RGBA/CMYK images become RGB
  (an alpha channel is dropped, and the record says so).
* ``.npy`` / ``.npz``: channels-last like MedMNIST: ``(H, W)``, ``(H, W, C)``, or a stack ``(N, H, W)`` /
  ``(N, H, W, C)``; a last axis of length <= 4 is read as channels (1 or 3 are usable). A ``.npz`` must hold
  one array, or one named ``image`` / ``images``. Channels-first arrays are not guessed: a ``(3, 28, 28)``
  array is read as three gray images.
* DICOM (pydicom ``dcmread``): ``pixel_array``; a multi-frame file gives its middle frame; MONOCHROME1 is
  inverted so that bright means dense, as for MONOCHROME2.
* NIfTI / MHA / MHD / NRRD (SimpleITK): a 3-D volume ``(Z, Y, X)`` gives its middle slice along Z (the slowest
  axis of the file; no reorientation), a 4-D series its first volume's middle slice; the record says so.

Intensity: images that are not ``uint8`` (16-bit PNG, DICOM, NIfTI, float arrays) are min-max scaled to
0..255 first (a constant image becomes all zeros), because the model was trained on 8-bit MedMNIST images;
then every image goes through the bundle's ``x / 255`` and ``(x - mean[c]) / std[c]``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .io import atomic_write_bytes  # standard library only: keeps this module torch-free

__all__ = [
    "BUNDLE_FORMAT", "BUNDLE_VERSION", "MODEL_FILE", "MODEL_INT8_FILE", "PREPROCESSING_FILE", "MODEL_CARD_FILE",
    "PARITY_FILE", "IMAGE_SUFFIXES", "ARRAY_SUFFIXES", "DICOM_SUFFIXES", "VOLUME_SUFFIXES", "SUPPORTED_SUFFIXES",
    "InputImage", "Bundle", "read_images", "preprocess", "predict_files", "softmax", "sigmoid",
]

_logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "mednas-bundle"
BUNDLE_VERSION = 1
MODEL_FILE = "model.onnx"
MODEL_INT8_FILE = "model.int8.onnx"
PREPROCESSING_FILE = "preprocessing.json"
MODEL_CARD_FILE = "model_card.md"
PARITY_FILE = "parity.json"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
DICOM_SUFFIXES = (".dcm", ".dicom")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + ARRAY_SUFFIXES + DICOM_SUFFIXES + VOLUME_SUFFIXES

# ITU-R 601-2 luma, the weights PIL uses for RGB -> L.
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


# ------------------------------------------------------------------------------------------------------------
# Reading input files
# ------------------------------------------------------------------------------------------------------------

@dataclass
class InputImage:
    """One 2-D image read from a file: ``pixels`` is ``(H, W)`` or ``(H, W, C)`` in its source dtype."""

    source: str
    index: int | None
    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.source if self.index is None else f"{self.source}[{self.index}]"


def _read_pil(path: Path) -> list[InputImage]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            notes = []
            if im.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(im.convert("L") if im.mode == "1" else im)
            elif im.mode in ("LA", "La"):
                arr, notes = np.asarray(im.convert("L")), ["alpha channel dropped"]
            else:
                if "A" in im.mode:
                    notes.append("alpha channel dropped")
                if im.mode not in ("RGB", "RGBA"):
                    notes.append(f"{im.mode} image converted to RGB")
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: expected a readable {path.suffix.lstrip('.').upper()} image, got an unreadable "
                        f"file ({_one_line(e)})") from None
    return [InputImage(str(path), None, arr, notes)]


def _split_array(path: Path, arr: np.ndarray, what: str) -> list[InputImage]:
    """Channels-last single image or stack -> images (see the module docstring for the rules)."""
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{path}: {what}: expected a numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise DataError(f"{path}: {what}: expected a non-empty image array, got shape {arr.shape}")
    if arr.ndim == 2:
        return [InputImage(str(path), None, arr)]
    # A last axis of at most 4 is a channel axis (no real image is 4 pixels wide); the channel count itself is
    # checked against the bundle later, so (H, W, 4) fails there with a clear message.
    if arr.ndim == 3 and arr.shape[-1] <= 4:
        return [InputImage(str(path), None, arr)]
    if arr.ndim == 3:
        return [InputImage(str(path), i, arr[i]) for i in range(arr.shape[0])]
    if arr.ndim == 4 and arr.shape[-1] <= 4:
        return [InputImage(str(path), i, arr[i]) for i in range(arr.shape[0])]
    raise DataError(f"{path}: {what}: expected (H, W), (H, W, C), (N, H, W) or (N, H, W, C) with C <= 4 "
                    f"(channels last), got shape {arr.shape}")


def _read_numpy(path: Path) -> list[InputImage]:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: expected a numpy {_suffix(path)} file, got an unreadable file ({_one_line(e)})"
                        ) from None
    if isinstance(data, np.ndarray):
        return _split_array(path, data, "array")
    with data:
        keys = list(data.files)
        if len(keys) == 1:
            key = keys[0]
        else:
            key = next((k for k in ("image", "images") if k in keys), None)
            if key is None:
                raise DataError(f"{path}: expected one array or an array named 'image'/'images', got arrays "
                                f"{', '.join(keys) or '(none)'}")
        arr = data[key]
    return _split_array(path, arr, f"array '{key}'")


def _read_dicom(path: Path) -> list[InputImage]:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise DataError(f"{path}: reading DICOM needs pydicom; expected it installed "
                        "(pip install 'mednas-nni[io]'), got ImportError") from None
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: expected a DICOM file, got an unreadable file ({_one_line(e)})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{path}: DICOM without pixel data; expected an image (PixelData element), got none "
                        f"(SOP class {getattr(ds, 'SOPClassUID', '?')})")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for unsupported/compressed pixel data
        raise DataError(f"{path}: DICOM pixel data cannot be decoded; expected uncompressed or a transfer syntax "
                        f"with an installed decoder, got {_one_line(e)}") from None
    notes: list[str] = []
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    rgb = getattr(ds, "SamplesPerPixel", 1) == 3
    if frames > 1:
        k = frames // 2
        arr = arr[k]
        notes.append(f"multi-frame DICOM ({frames} frames): used the middle frame {k}")
    if not rgb and str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        arr = arr.max() - arr
        notes.append("MONOCHROME1 inverted")
    return [InputImage(str(path), None, arr, notes)]


def _read_volume(path: Path) -> list[InputImage]:
    try:
        import SimpleITK as sitk
    except ImportError:
        raise DataError(f"{path}: reading {_suffix(path)} needs SimpleITK; expected it installed "
                        "(pip install 'mednas-nni[io]'), got ImportError") from None
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        msg = str(e).strip().splitlines()
        raise DataError(f"{path}: expected a readable {_suffix(path)} image, got an unreadable file "
                        f"({msg[-1][:200] if msg else 'RuntimeError'})") from None
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X) [+ components]; (T, Z, Y, X) for 4-D
    comps = img.GetNumberOfComponentsPerPixel()
    spatial = arr.ndim - (1 if comps > 1 else 0)
    notes: list[str] = []
    if spatial == 4:
        arr = arr[0]
        spatial = 3
        notes.append(f"4-D series ({img.GetSize()[3]} volumes): used the first volume")
    if spatial == 3:
        z = arr.shape[0]
        k = z // 2
        arr = arr[k]
        notes.append(f"3-D volume ({z} x {arr.shape[0]} x {arr.shape[1]}, Z x Y x X): used the middle slice z={k}")
    if spatial not in (2, 3) or (comps > 1 and comps not in (1, 3)):
        raise DataError(f"{path}: expected a 2-D image or a 3-D/4-D volume with 1 or 3 components, got size "
                        f"{img.GetSize()} with {comps} components")
    return [InputImage(str(path), None, arr, notes)]


def read_images(path: str | os.PathLike) -> list[InputImage]:
    """Read one input file into one or more 2-D images (a stack gives several).

    Raises:
        DataError: the file is missing, of an unsupported type, unreadable, or holds no usable image.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: input file not found; expected an image file "
                        f"({', '.join(SUPPORTED_SUFFIXES)}), got {'a folder' if p.exists() else 'nothing'}")
    suf = _suffix(p)
    if suf in IMAGE_SUFFIXES:
        return _read_pil(p)
    if suf in ARRAY_SUFFIXES:
        return _read_numpy(p)
    if suf in DICOM_SUFFIXES:
        return _read_dicom(p)
    if suf in VOLUME_SUFFIXES:
        return _read_volume(p)
    with open(p, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":  # DICOM files often have no suffix
        return _read_dicom(p)
    raise DataError(f"{p}: unsupported input file type '{suf or '(no suffix)'}'; expected one of "
                    f"{', '.join(SUPPORTED_SUFFIXES)} or a DICOM file")


# ------------------------------------------------------------------------------------------------------------
# Preprocessing
# ------------------------------------------------------------------------------------------------------------

def _to_channels_last_float(img: InputImage) -> tuple[np.ndarray, bool]:
    """``(H, W, C)`` float32 in 0..255 and whether the source was uint8."""
    arr = img.pixels
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"{img.name}: expected a 2-D image (H, W) or (H, W, C), got shape {img.pixels.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32), True
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"{img.name}: expected finite pixel values, got NaN or inf")
    lo, hi = float(a.min()), float(a.max())
    if hi > lo:
        a = (a - lo) / (hi - lo) * 255.0
        img.notes.append(f"{arr.dtype} intensities min-max scaled from [{lo:g}, {hi:g}] to [0, 255]")
    else:
        a = np.zeros_like(a)
        img.notes.append(f"constant {arr.dtype} image ({lo:g}) mapped to 0")
    return a.astype(np.float32), False


def _convert_channels(img: InputImage, a: np.ndarray, channels: int, prep: dict[str, Any],
                      source: str) -> np.ndarray:
    have = a.shape[-1]
    conv = prep.get("channel_conversion", {})
    if have == channels:
        return a
    if have == 1 and channels == 3 and conv.get("gray_to_rgb", False):
        img.notes.append("gray image repeated to 3 channels")
        return np.repeat(a, 3, axis=-1)
    if have == 3 and channels == 1 and conv.get("rgb_to_gray", False):
        img.notes.append("RGB image converted to gray (ITU-R 601-2 luma)")
        return (a @ _LUMA)[..., None]
    raise DataError(f"{img.name}: expected an image with {channels} channel(s) (or one that {source} allows "
                    f"converting), got {have} channel(s)")


def _resize(img: InputImage, a: np.ndarray, height: int, width: int, uint8: bool) -> np.ndarray:
    from PIL import Image

    h, w = a.shape[:2]
    if (h, w) == (height, width):
        return a
    img.notes.append(f"resized from {h}x{w} to {height}x{width} (bilinear)")
    out = []
    for c in range(a.shape[-1]):
        ch = a[..., c]
        if uint8:  # exactly what a device resizing an 8-bit image with PIL gets
            im = Image.fromarray(np.clip(np.rint(ch), 0, 255).astype(np.uint8))  # mode L
        else:
            im = Image.fromarray(np.ascontiguousarray(ch, dtype=np.float32))  # mode F
        out.append(np.asarray(im.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32))
    return np.stack(out, axis=-1)


def preprocess(img: InputImage, prep: dict[str, Any], source: str = PREPROCESSING_FILE) -> np.ndarray:
    """Apply a bundle's ``preprocessing.json`` to one image; returns ``(C, H, W)`` float32.

    Steps: non-uint8 intensities min-max scaled to 0..255; gray<->RGB conversion only where
    ``channel_conversion`` allows it; bilinear resize (PIL) to the input size; ``x * scale`` (1/255) and
    ``(x - mean[c]) / std[c]``.

    Raises:
        DataError: the image cannot be converted to the model's channels or shape.
    """
    inp = prep["input"]
    channels, height, width = int(inp["channels"]), int(inp["height"]), int(inp["width"])
    a, uint8 = _to_channels_last_float(img)
    a = _convert_channels(img, a, channels, prep, source)
    a = _resize(img, a, height, width, uint8 and bool(np.array_equal(a, np.rint(a))))
    norm = prep["intensity"]
    mean = np.asarray(norm["mean"], dtype=np.float32).reshape(1, 1, -1)
    std = np.asarray(norm["std"], dtype=np.float32).reshape(1, 1, -1)
    x = (a * np.float32(norm["scale"]) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


# ------------------------------------------------------------------------------------------------------------
# The bundle
# ------------------------------------------------------------------------------------------------------------

_REQUIRED_KEYS = {"format": str, "version": int, "task": str, "input": dict, "intensity": dict, "output": dict}


class Bundle:
    """An exported bundle folder opened for inference (onnxruntime, CPU).

    Args:
        path: the bundle folder.
        int8: run ``model.int8.onnx`` instead of ``model.onnx``.
        threads: onnxruntime ``intra_op_num_threads`` (0 = onnxruntime's default).

    Raises:
        DataError: a file is missing or damaged, or the files disagree (input size, channels, classes).
    """

    def __init__(self, path: str | os.PathLike, int8: bool = False, threads: int = 0):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: not a bundle; expected a folder written by 'mednas export', got "
                            + ("a file" if self.path.exists() else "nothing at that path"))
        self.prep = self._read_preprocessing()
        model_file = self.path / (MODEL_INT8_FILE if int8 else MODEL_FILE)
        if not model_file.is_file():
            hint = "; export with --int8" if int8 else ""
            raise DataError(f"{model_file}: file not found; expected the bundle's model (written by "
                            f"'mednas export'){hint}")
        self.model_file = model_file
        self.session = self._open_session(model_file, threads)
        self._check_model()

    # -- loading and consistency checks
    def _read_preprocessing(self) -> dict[str, Any]:
        f = self.path / PREPROCESSING_FILE
        if not f.is_file():
            raise DataError(f"{f}: file not found; expected the bundle's preprocessing description "
                            "(written by 'mednas export')")
        try:
            prep = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{f}: expected JSON, got a damaged file ({_one_line(e)})") from None
        if not isinstance(prep, dict):
            raise DataError(f"{f}: expected a JSON object, got {type(prep).__name__}")
        for key, typ in _REQUIRED_KEYS.items():
            if not isinstance(prep.get(key), typ):
                raise DataError(f"{f}: {key}: expected a {typ.__name__}, got {prep.get(key)!r}")
        if prep["format"] != BUNDLE_FORMAT or prep["version"] > BUNDLE_VERSION:
            raise DataError(f"{f}: expected format {BUNDLE_FORMAT!r} version <= {BUNDLE_VERSION}, got "
                            f"{prep['format']!r} version {prep['version']}")
        inp, norm, out = prep["input"], prep["intensity"], prep["output"]
        for key in ("channels", "height", "width"):
            if not isinstance(inp.get(key), int) or inp[key] < 1:
                raise DataError(f"{f}: input.{key}: expected a positive integer, got {inp.get(key)!r}")
        if inp.get("layout", "NCHW") != "NCHW" or inp.get("dtype", "float32") != "float32":
            raise DataError(f"{f}: input: expected layout NCHW and dtype float32, got {inp.get('layout')} "
                            f"{inp.get('dtype')}")
        for key in ("mean", "std"):
            v = norm.get(key)
            if not isinstance(v, list) or len(v) != inp["channels"]:
                raise DataError(f"{f}: intensity.{key}: expected {inp['channels']} value(s) (one per channel), "
                                f"got {v!r}")
        if any(s == 0 for s in norm["std"]) or not isinstance(norm.get("scale"), (int, float)):
            raise DataError(f"{f}: intensity: expected a numeric scale and non-zero std, got scale "
                            f"{norm.get('scale')!r} std {norm['std']!r}")
        names = out.get("label_names")
        if not isinstance(names, list) or not names:
            raise DataError(f"{f}: output.label_names: expected a non-empty list, got {names!r}")
        if out.get("activation") not in ("softmax", "sigmoid"):
            raise DataError(f"{f}: output.activation: expected 'softmax' or 'sigmoid', got "
                            f"{out.get('activation')!r}")
        return prep

    def _open_session(self, model_file: Path, threads: int) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            return ort.InferenceSession(str(model_file), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DataError(f"{model_file}: expected a loadable ONNX model, got {_one_line(e)}") from None

    def _check_model(self) -> None:
        f = self.path / PREPROCESSING_FILE
        inp, out = self.prep["input"], self.prep["output"]
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1:
            raise DataError(f"{self.model_file}: expected one input, got {len(ins)} ({[i.name for i in ins]})")
        self.input_name = ins[0].name
        if inp.get("name", self.input_name) != self.input_name:
            raise DataError(f"{f}: input.name {inp.get('name')!r} disagrees with {self.model_file.name}; expected "
                            f"{self.input_name!r}")
        shape = list(ins[0].shape)
        want = [inp["channels"], inp["height"], inp["width"]]
        if len(shape) != 4 or any(isinstance(s, int) and s != w for s, w in zip(shape[1:], want)):
            raise DataError(f"{f}: input {want[0]}x{want[1]}x{want[2]} (CxHxW) disagrees with "
                            f"{self.model_file.name} input shape {shape}; expected the same size")
        self.output_name = outs[0].name
        k = len(out["label_names"])
        oshape = list(outs[0].shape)
        one_sigmoid = oshape[1:2] == [1] and out["activation"] == "sigmoid" and k == 2  # background/foreground
        if len(oshape) >= 2 and isinstance(oshape[1], int) and oshape[1] != k and not one_sigmoid:
            raise DataError(f"{f}: output.label_names has {k} names but {self.model_file.name} gives {oshape[1]} "
                            f"outputs (shape {oshape}); expected the same number")

    # -- properties
    @property
    def task(self) -> str:
        return str(self.prep["task"])

    @property
    def label_names(self) -> list[str]:
        return [str(n) for n in self.prep["output"]["label_names"]]

    # -- inference
    def run(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw model outputs (logits) for a float32 ``(N, C, H, W)`` batch."""
        outs = [self.session.run([self.output_name], {self.input_name: x[i:i + batch_size]})[0]
                for i in range(0, len(x), batch_size)]
        return np.concatenate(outs, axis=0)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Apply the bundle's output activation (softmax over classes, or sigmoid for multi-label)."""
        if self.prep["output"]["activation"] == "sigmoid":
            return sigmoid(logits)
        return softmax(logits, axis=1)

    def preprocess(self, img: InputImage) -> np.ndarray:
        return preprocess(img, self.prep, str(self.path / PREPROCESSING_FILE))

    def predict_images(self, images: list[InputImage]) -> list[dict[str, Any]]:
        """Preprocess and predict; one JSON-able record per image (segmentation: see :meth:`_mask_records`)."""
        if not images:
            return []
        x = np.stack([self.preprocess(im) for im in images])
        logits = self.run(x)
        if self.task == "segmentation":
            return self._mask_records(images, logits)
        probs = self.probabilities(logits)
        names = self.label_names
        out = self.prep["output"]
        records = []
        for im, p in zip(images, probs):
            rec: dict[str, Any] = {"file": im.source}
            if im.index is not None:
                rec["index"] = im.index
            if out["activation"] == "sigmoid":  # multi-label: every label above the threshold
                thr = float(out.get("threshold", 0.5))
                rec["classes"] = [n for n, q in zip(names, p) if q >= thr]
                rec["class"] = ", ".join(rec["classes"]) or "(none)"
            else:
                k = int(np.argmax(p))
                rec["class_index"], rec["class"] = k, names[k]
            rec["probabilities"] = {n: round(float(q), 6) for n, q in zip(names, p)}
            if im.notes:
                rec["notes"] = list(im.notes)
            records.append(rec)
        return records

    def _mask_records(self, images: list[InputImage], logits: np.ndarray) -> list[dict[str, Any]]:
        """Segmentation: per-pixel argmax (softmax) or threshold (one sigmoid channel) -> class-index masks.

        The mask is resized back to the source image size (nearest neighbour). :func:`predict_files` writes it
        as an 8-bit PNG whose pixel values are class indices.
        """
        from PIL import Image

        out = self.prep["output"]
        names = self.label_names
        records = []
        for im, z in zip(images, logits):
            if z.ndim != 3:
                raise DataError(f"{self.model_file}: expected segmentation logits (N, K, H, W), got a "
                                f"{z.ndim + 1}-D output")
            if out["activation"] == "sigmoid" or z.shape[0] == 1:
                mask = (sigmoid(z[0]) >= float(out.get("threshold", 0.5))).astype(np.uint8)
            else:
                mask = np.argmax(z, axis=0).astype(np.uint8)
            h, w = im.pixels.shape[:2]
            if mask.shape != (h, w):
                mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST))
            counts = np.bincount(mask.reshape(-1), minlength=len(names))
            rec: dict[str, Any] = {"file": im.source}
            if im.index is not None:
                rec["index"] = im.index
            rec["mask_shape"] = [int(h), int(w)]
            rec["class_pixels"] = {names[i] if i < len(names) else str(i): int(c) for i, c in enumerate(counts)}
            rec["_mask"] = mask
            if im.notes:
                rec["notes"] = list(im.notes)
            records.append(rec)
        return records


# ------------------------------------------------------------------------------------------------------------
# Files in, records out
# ------------------------------------------------------------------------------------------------------------

def predict_files(bundle: Bundle, inputs: list[str | os.PathLike], out: str | os.PathLike | None = None,
                  mask_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Read every input, predict with ``bundle`` and (optionally) write ``out`` as JSON.

    Every file is read and checked before anything is written, so a bad input leaves no partial output.
    Segmentation bundles write one mask PNG per image into ``mask_dir`` (default: ``<out stem>_masks`` next to
    ``out``, else ``masks`` in the current folder) and put its path in the record.

    Raises:
        DataError: an input cannot be read or converted (the message names the file).
    """
    images: list[InputImage] = []
    for p in inputs:
        images.extend(read_images(p))
    records = bundle.predict_images(images)  # preprocesses every image before running the model
    if bundle.task == "segmentation":
        from io import BytesIO

        from PIL import Image

        mdir = Path(mask_dir) if mask_dir is not None else (
            Path(out).with_name(Path(out).stem + "_masks") if out is not None else Path("masks"))
        for rec in records:
            mask = rec.pop("_mask")
            stem = Path(rec["file"]).name.split(".")[0]
            name = f"{stem}_mask.png" if "index" not in rec else f"{stem}_{rec['index']}_mask.png"
            buf = BytesIO()
            Image.fromarray(mask).save(buf, format="PNG")
            atomic_write_bytes(mdir / name, buf.getvalue())
            rec["mask"] = str(mdir / name)
    if out is not None:
        doc = {"bundle": str(bundle.path), "model": bundle.model_file.name, "task": bundle.task,
               "dataset": bundle.prep.get("dataset"), "predictions": records}
        atomic_write_bytes(Path(out), (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return records

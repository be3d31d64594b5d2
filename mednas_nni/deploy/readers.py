"""Input readers of ``mednas predict``: one file in, one or more 2-D images out (numpy, PIL; pydicom / SimpleITK
lazily for DICOM / NIfTI / MHA inputs: the ``io`` extra). Never imports torch.

* PNG / JPEG / BMP / TIFF (PIL): grayscale stays one channel, palette/RGBA/CMYK images become RGB
  (an alpha channel is dropped, and the record says so).
* ``.npy`` / ``.npz``: channels-last like MedMNIST: ``(H, W)``, ``(H, W, C)``, or a stack ``(N, H, W)`` /
  ``(N, H, W, C)``; a last axis of length <= 4 is read as channels (1 or 3 are usable). A ``.npz`` must hold
  one array, or one named ``image`` / ``images``. Channels-first arrays are not guessed: a ``(3, 28, 28)``
  array is read as three gray images. Arrays are loaded with ``allow_pickle=False``.
* DICOM (:mod:`~mednas_nni.deploy.dicom`): pydicom with the Modality and VOI LUTs applied; a multi-frame file
  gives its middle frame; MONOCHROME1 is inverted so that bright means dense, as for MONOCHROME2.
* NIfTI / MHA / MHD / NRRD (SimpleITK): a 3-D volume ``(Z, Y, X)`` gives its middle slice along Z (the slowest
  axis of the file; no reorientation), a 4-D series its first volume's middle slice; the record says so.

Folders, DICOM series and globs are expanded into these files by :mod:`~mednas_nni.deploy.inputs`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._util import one_line, suffix
from .image import InputImage

__all__ = ["IMAGE_SUFFIXES", "ARRAY_SUFFIXES", "DICOM_SUFFIXES", "VOLUME_SUFFIXES", "SUPPORTED_SUFFIXES",
           "InputImage", "read_images", "is_dicom_file"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
DICOM_SUFFIXES = (".dcm", ".dicom")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + ARRAY_SUFFIXES + DICOM_SUFFIXES + VOLUME_SUFFIXES


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
                        f"file ({one_line(e)})") from None
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
        raise DataError(f"{path}: expected a numpy {suffix(path)} file, got an unreadable file ({one_line(e)})"
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
    from .dicom import read_dicom

    try:
        return [read_dicom(path)]
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def _read_volume(path: Path) -> list[InputImage]:
    try:
        import SimpleITK as sitk
    except ImportError:
        raise DataError(f"{path}: reading {suffix(path)} needs SimpleITK; expected it installed "
                        "(pip install 'mednas-nni[io]'), got ImportError") from None
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        msg = str(e).strip().splitlines()
        raise DataError(f"{path}: expected a readable {suffix(path)} image, got an unreadable file "
                        f"({msg[-1][:200] if msg else 'RuntimeError'})") from None
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X) [+ components]; (T, Z, Y, X) for 4-D
    comps = img.GetNumberOfComponentsPerPixel()
    spatial = arr.ndim - (1 if comps > 1 else 0)
    notes: list[str] = []
    z = 1
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
    return [InputImage(str(path), None, arr, notes, from_volume=spatial == 3 and z > 1)]


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or a file of another name with the DICOM preamble (``DICM`` at byte 128)."""
    if suffix(path) in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_images(path: str | os.PathLike) -> list[InputImage]:
    """Read one input file into one or more 2-D images (a stack gives several).

    Raises:
        DataError: the file is missing, of an unsupported type, unreadable, or holds no usable image.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: input file not found; expected an image file "
                        f"({', '.join(SUPPORTED_SUFFIXES)}), got {'a folder' if p.exists() else 'nothing'}")
    suf = suffix(p)
    if suf in IMAGE_SUFFIXES:
        return _read_pil(p)
    if suf in ARRAY_SUFFIXES:
        return _read_numpy(p)
    if suf in DICOM_SUFFIXES:
        return _read_dicom(p)
    if suf in VOLUME_SUFFIXES:
        return _read_volume(p)
    if is_dicom_file(p):  # DICOM files often have no suffix
        return _read_dicom(p)
    raise DataError(f"{p}: unsupported input file type '{suf or '(no suffix)'}'; expected one of "
                    f"{', '.join(SUPPORTED_SUFFIXES)} or a DICOM file")

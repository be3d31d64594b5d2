"""DICOM inputs of ``mednas predict``: one file, or one series (a folder of slices) given by its sorted files.

pydicom reads the pixels and applies the Modality LUT (``apply_modality_lut``: Rescale Slope/Intercept, e.g. CT
in HU) and then the VOI LUT (``apply_voi_lut``: the file's window centre/width or VOI LUT Sequence). A window
maps onto a known output range, so that range, not the image's own min/max, becomes 0..255 (:attr:`InputImage.
value_range`): an image shown by its window looks the same on the device as on a DICOM viewer. Without a VOI LUT
the values are min-max scaled later (:mod:`~mednas_nni.deploy.preprocessing`). MONOCHROME1 is inverted so that
bright means dense. A multi-frame file gives its middle frame.

A series (several files with one SeriesInstanceUID and several slice positions) is ordered by SimpleITK
(``ImageSeriesReader.GetGDCMSeriesFileNames``: GDCM's sort by image position along the slice normal) and its
middle slice is read like a single file. The record keeps Modality, SOPInstanceUID and SeriesInstanceUID.
pydicom and SimpleITK are imported only here (the ``io`` extra); never torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._util import one_line
from .image import InputImage

__all__ = ["read_dicom", "read_dicom_series", "dicom_header", "series_groups"]

_UIDS = {"Modality": "modality", "SOPInstanceUID": "sop_instance_uid", "SeriesInstanceUID": "series_instance_uid"}


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise DataError("reading DICOM needs pydicom; expected it installed (pip install 'mednas-nni[io]'), got "
                        "ImportError") from None
    return pydicom


def dicom_header(path: Path) -> Any | None:
    """The DICOM header of ``path`` without pixel data, or None when it is not a readable DICOM file."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - pydicom raises many types for files that are not DICOM
        return None


def _display_range(ds: Any, values: np.ndarray) -> tuple[np.ndarray, tuple[float, float] | None, str | None]:
    """Apply the VOI LUT; return the values, the output range the LUT maps onto, and a note (None: no VOI LUT)."""
    from pydicom.pixels import apply_voi_lut

    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    has_lut = "VOILUTSequence" in ds
    if not (has_window or has_lut):
        return values, None, None
    out = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
    # The LUT's own output range: pydicom clips inputs beyond the window (or the LUT's first/last entry) to
    # the ends of that range, so two extreme inputs give it.
    lo, hi = (float(v) for v in np.asarray(apply_voi_lut(np.asarray([-1e12, 1e12]), ds), dtype=np.float64))
    if has_lut and not has_window:
        what = "VOI LUT Sequence"
    else:
        c, w = ds.WindowCenter, ds.WindowWidth
        c = c[0] if not isinstance(c, (int, float)) and hasattr(c, "__getitem__") else c
        w = w[0] if not isinstance(w, (int, float)) and hasattr(w, "__getitem__") else w
        what = f"VOI window centre {float(c):g} width {float(w):g}"
    if not hi > lo:
        return out, None, f"{what} applied (pydicom apply_voi_lut)"
    shown = "the window" if has_window else f"its output range [{lo:g}, {hi:g}]"
    return out, (lo, hi), f"{what} applied (pydicom apply_voi_lut); {shown} is mapped to 0..255"


def read_dicom(path: Path, series_note: str | None = None, from_volume: bool = False) -> InputImage:
    """One DICOM file -> one 2-D image with the Modality and VOI LUTs applied (see the module docstring).

    Raises:
        DataError: not a DICOM file, no pixel data, or pixel data that cannot be decoded.
    """
    pydicom = _pydicom()
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001 - a damaged file can raise struct/Key/Index errors as well as these
        raise DataError(f"{path}: expected a DICOM file, got an unreadable file ({one_line(e)})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{path}: DICOM without pixel data; expected an image (PixelData element), got none "
                        f"(SOP class {getattr(ds, 'SOPClassUID', '?')})")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for unsupported/compressed pixel data
        raise DataError(f"{path}: DICOM pixel data cannot be decoded; expected uncompressed or a transfer syntax "
                        f"with an installed decoder, got {one_line(e)}") from None
    notes: list[str] = [series_note] if series_note else []
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    rgb = int(getattr(ds, "SamplesPerPixel", 1) or 1) == 3
    if frames > 1:
        k = frames // 2
        arr = arr[k]
        notes.append(f"multi-frame DICOM ({frames} frames): used the middle frame {k}")
    value_range = None
    if not rgb:
        try:
            modality = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
            arr, value_range, voi_note = _display_range(ds, modality)
        except Exception as e:  # noqa: BLE001 - malformed LUT elements
            raise DataError(f"{path}: expected valid DICOM Modality/VOI LUT elements, got {one_line(e)}") from None
        if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
            notes.append(f"Modality LUT applied (pydicom apply_modality_lut: slope {getattr(ds, 'RescaleSlope', 1)}"
                         f", intercept {getattr(ds, 'RescaleIntercept', 0)})")
        if voi_note:
            notes.append(voi_note)
        if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
            lo, hi = value_range if value_range else (float(arr.min()), float(arr.max()))
            arr = lo + hi - arr
            notes.append("MONOCHROME1 inverted")
    meta = {key: str(ds.get(tag)) for tag, key in _UIDS.items() if ds.get(tag) not in (None, "")}
    return InputImage(str(path), None, arr, notes, meta=meta, value_range=value_range,
                      from_volume=from_volume or frames > 1 and not rgb and _is_volume_frames(ds))


def _is_volume_frames(ds: Any) -> bool:
    """A multi-frame CT/MR/PET-style file is a volume (a cine ultrasound loop is not)."""
    return str(getattr(ds, "Modality", "")) in ("CT", "MR", "PT", "NM")


def series_groups(files: list[Path]) -> tuple[list[list[Path]], list[Path]]:
    """Split DICOM ``files`` (of one folder) into series volumes and single images.

    A series volume is a SeriesInstanceUID with at least two files at distinct ImagePositionPatient; anything
    else (one file per series, several views at one position) is read file by file.
    """
    by_series: dict[str, list[tuple[Path, Any]]] = {}
    singles: list[Path] = []
    for f in files:
        ds = dicom_header(f)
        uid = str(ds.get("SeriesInstanceUID", "")) if ds is not None else ""
        if not uid:
            singles.append(f)
            continue
        by_series.setdefault(uid, []).append((f, ds.get("ImagePositionPatient")))
    volumes = []
    for members in by_series.values():
        positions = {tuple(round(float(v), 3) for v in pos) for _, pos in members if pos is not None}
        if len(members) >= 2 and len(positions) >= 2:
            volumes.append([f for f, _ in members])
        else:
            singles.extend(f for f, _ in members)
    return volumes, sorted(singles)


def read_dicom_series(folder: Path, files: list[Path]) -> InputImage:
    """The middle slice of the DICOM series made of ``files`` (in ``folder``), ordered by SimpleITK/GDCM.

    Raises:
        DataError: SimpleITK is missing or cannot order the series.
    """
    try:
        import SimpleITK as sitk
    except ImportError:
        raise DataError(f"{folder}: reading a DICOM series needs SimpleITK; expected it installed "
                        "(pip install 'mednas-nni[io]'), got ImportError") from None
    header = dicom_header(files[0])
    uid = str(header.get("SeriesInstanceUID", "")) if header is not None else ""
    try:
        ordered = [Path(p) for p in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)]
    except RuntimeError as e:
        raise DataError(f"{folder}: expected a DICOM series SimpleITK can order, got {one_line(e)}") from None
    wanted = {p.resolve() for p in files}
    ordered = [p for p in ordered if p.resolve() in wanted] or sorted(files)
    k = len(ordered) // 2
    note = (f"DICOM series {uid} ({len(ordered)} slices in {folder}, ordered by position with SimpleITK/GDCM): "
            f"used the middle slice {k} ({ordered[k].name})")
    img = read_dicom(ordered[k], series_note=note, from_volume=True)
    img.source = str(folder)
    img.meta["series_file"] = str(ordered[k])
    img.meta["series_slices"] = len(ordered)
    return img

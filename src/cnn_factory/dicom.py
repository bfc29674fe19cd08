"""One DICOM file as an image (an X-ray, a mammogram, a slide), as viewers show it, and what its
header says (the patient, the pixel size); scans (series, multi-frame files, SEG label files) are
dicom_scans.py's.

    image = read_image(Path("xrays/0001.dcm"))     # (H, W) uint8 through its window, or (H, W, 3) colour
    found = header(Path("xrays/0001.dcm"))          # the header without the pixels; None for another file
    patient_id(found), pixel_mm(found)              # for make-csv's columns patient and pixel_mm

A DICOM file is known by its `DICM` marker after the 128-byte preamble (`is_file`), whatever its
name (a UID, no suffix). A file pydicom cannot decode (a compression without its decoder: it reads
RLE, JPEG baseline, JPEG Lossless, JPEG-LS and JPEG 2000 through Pillow and GDCM) or of several
frames is a DicomImageError saying why.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np


class DicomImageError(ValueError):
    """A DICOM file that is no image this reads: the message says why and what to do."""


def read_image(source: str | Path | bytes, values: bool = False) -> np.ndarray:
    """One DICOM file's image (an X-ray, a mammogram, a slide, one slice of a series), from the file
    or its bytes. Grey: its stored values through the rescale (RescaleSlope, RescaleIntercept)
    and the first VOI window (WindowCenter, WindowWidth; without one, the image's own range) to
    (H, W) uint8, MONOCHROME1 (its lowest value shown white) inverted, as viewers show it. Colour (RGB,
    YCbCr): (H, W, 3) as stored. With `values`, the stored values as they are (a label map).
    DicomImageError says what cannot be read."""
    import pydicom
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_modality_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)
        pixels = dataset.pixel_array
    except Exception as err:  # pydicom raises many types: a damaged file, a compression without its decoder
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DicomImageError(f"cannot be read as a DICOM image ({detail}); export it uncompressed") from None
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomImageError(f"holds {frames} frames (a multi-frame file); expected one image per file")
    if values or int(getattr(dataset, "SamplesPerPixel", 1)) > 1:  # a label map's values; colour as stored
        return pixels
    grey = apply_modality_lut(pixels, dataset).astype(np.float64)
    center, width = getattr(dataset, "WindowCenter", None), getattr(dataset, "WindowWidth", None)
    if center is not None and width is not None:  # DICOM's linear window (PS3.3 C.11.2.1.2.1)
        center, width = (float(v[0] if isinstance(v, MultiValue) else v) for v in (center, width))
        low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    else:
        low, high = float(grey.min()), float(grey.max())
    scaled = np.clip((grey - low) / max(high - low, 1e-6), 0, 1)
    if str(getattr(dataset, "PhotometricInterpretation", "")) == "MONOCHROME1":  # its lowest value shown white
        scaled = 1 - scaled
    return np.round(scaled * 255).astype(np.uint8)


def header(source: Path | bytes) -> Any:
    """A DICOM file's header without its pixels (of its bytes, or of a series folder's first
    slice); None for another file, and for a damaged header (prepare says what is wrong with it)."""
    import pydicom

    if not isinstance(source, bytes) and is_series(source):
        source = next(p for p in sorted(source.iterdir()) if is_file(p))
    elif not is_file(source):
        return None
    try:
        return pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source, stop_before_pixels=True)
    except Exception:  # a damaged header: prepare says what is wrong with the file
        return None


def patient_id(header: Any) -> str | None:
    """The PatientID a `header` names; None without a header or one."""
    found = header.get("PatientID") if header is not None else None
    return (str(found).strip() or None) if found else None


def pixel_mm(header: Any) -> float | None:
    """An image's mm per pixel from its `header`, where its pixels are square: its PixelSpacing (in
    the patient), else its ImagerPixelSpacing (at a radiograph's detector) over its estimated
    magnification (PS3.3 C.8.11.7), else an ultrasound image's first region measured in cm; None
    without a header or one (a series' slices: read_series gives the scan's spacing)."""
    if header is None:
        return None
    regions = [r for r in header.get("SequenceOfUltrasoundRegions", []) if r.get("PhysicalUnitsXDirection") == 3]
    if "PixelSpacing" in header:
        sizes = [float(v) for v in header.PixelSpacing]
    elif "ImagerPixelSpacing" in header:
        magnification = float(header.get("EstimatedRadiographicMagnificationFactor") or 1)
        sizes = [float(v) / magnification for v in header.ImagerPixelSpacing]
    elif regions and regions[0].get("PhysicalUnitsYDirection") == 3:  # cm per pixel
        sizes = [10 * float(regions[0].PhysicalDeltaY), 10 * float(regions[0].PhysicalDeltaX)]
    else:
        return None
    square = len(sizes) == 2 and min(sizes) > 0 and max(sizes) - min(sizes) <= 1e-3 * max(sizes)
    return sizes[1] if square else None


def is_file(source: str | Path | bytes) -> bool:
    """A DICOM file (or its bytes): the `DICM` marker after the 128-byte preamble."""
    if isinstance(source, bytes):
        return source[128:132] == b"DICM"
    if not Path(source).is_file():
        return False
    with open(source, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def is_series(path: Path) -> bool:
    """A folder holding at least one DICOM file (by the `DICM` marker after the 128-byte preamble)."""
    return path.is_dir() and any(is_file(p) for p in sorted(path.iterdir())[:50])

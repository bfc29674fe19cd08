"""DICOM scans as volumes: a folder holding one series' slices, as PACS and scanners hand them over,
or one multi-frame file (Enhanced CT or MR); and a DICOM SEG as a label volume on its series' grid,
or as the label map of a 2-D DICOM image.

    array, spacing, affine = read_series(Path("scans/patient-7"), "data.csv: row 2, column 'scan'")
    # (1, D, H, W) intensities (int16 Hounsfield units for CT), mm per (D, H, W), 4x4 affine
    array, spacing, affine = read_frames(Path("scans/patient-8.dcm"), where)  # all slices in one file
    write_series(Path("scans/patient-7"), values, affine, intercept=-1024.0)  # (D, H, W) values, a file per slice
    labels = read_segmentation(Path("labels/patient-7.dcm"), (d, h, w), affine, where)  # a DICOM SEG, on its grid
    labels = read_image_segmentation(Path("labels/xray-3.dcm"), (h, w), where)  # a SEG of an X-ray: (H, W)

The slices are ordered by their position along the slice normal (ImagePositionPatient projected
on the cross product of ImageOrientationPatient's row and column directions), not by file name or
InstanceNumber. Each slice's stored values are mapped by its RescaleSlope and RescaleIntercept.
The affine follows volumes.py's convention: voxel (d, h, w, 1) to world (x, y, z, 1) in mm, in
NIfTI's RAS+ axes (DICOM's patient coordinates are LPS+: x and y change sign), so a series and the
NIfTI file a converter such as dcm2niix writes from it read to the same array, spacing and affine.
Height runs down the columns (a slice's rows), width along a row; depth along the normal.

What a series cannot be read for (several series, a missing slice, ...: docs/volumes.md lists them)
is a UserError of one line naming `where` and the folder.

`write_series` writes a series `read_series` reads back: a CT slice per file, int16 stored values
that its rescale maps back exactly, and the grid in DICOM's decimal strings of 16 characters (a
position under a metre to 11 decimals, a spacing under 10 mm to 14): within 1e-11 mm of the
affine, not to its last bit.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from cnn_factory.dicom import header, is_file
from cnn_factory.errors import UserError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse: RAS+ to LPS+ too
GAP_TOLERANCE = 0.1  # a step may differ from the median step by this share before a slice counts as missing


def read_series(folder: Path, where: str) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """The series' (1, D, H, W) values (`_voxels`), mm per (D, H, W) axis and (d, h, w) affine (RAS+)."""
    import pydicom

    files = [p for p in sorted(folder.iterdir()) if is_file(p)]
    if not files:
        raise UserError(f"{where}: {folder} holds no DICOM file; expected the slices of one series")
    try:
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    except Exception as err:  # pydicom raises many types for a damaged file
        raise UserError(f"{where}: {folder}: a file cannot be read as DICOM ({type(err).__name__}: {err})") from None
    _one_series(headers, folder, where)
    positions = np.asarray([[float(v) for v in h.ImagePositionPatient] for h in headers])
    order, spacing, affine = _grid(
        positions, headers[0].ImageOrientationPatient, headers[0].PixelSpacing, folder, where
    )
    return _voxels([files[i] for i in order], folder, where)[None], spacing, affine


def read_frames(source: Path | bytes, where: str) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """A multi-frame DICOM file (Enhanced CT or MR, as recent scanners export a scan in one file) as
    `read_series` reads a series: (1, D, H, W) values, mm per axis, RAS+ affine; the frames ordered
    by their positions, each through its own rescale."""
    import pydicom

    shown = source if isinstance(source, Path) else Path("the uploaded file")
    try:
        dataset = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)
        pixels = dataset.pixel_array.reshape(-1, int(dataset.Rows), int(dataset.Columns))
        frames = list(dataset.PerFrameFunctionalGroupsSequence)
        positions = np.asarray(
            [[float(v) for v in _group(dataset, f, "PlanePositionSequence").ImagePositionPatient] for f in frames]
        )
        orientations = {tuple(_group(dataset, f, "PlaneOrientationSequence").ImageOrientationPatient) for f in frames}
        measures = _group(dataset, frames[0], "PixelMeasuresSequence")
    except Exception as err:  # pydicom raises many types; a single-frame file lacks the functional groups
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{where}: {shown} cannot be read as a multi-frame DICOM scan ({detail}); expected an Enhanced CT or MR "
            "file, or a folder holding a series' slices"
        ) from None
    if len(orientations) > 1:
        raise UserError(f"{where}: {shown}: its frames differ in orientation; expected the slices of one scan")
    order, spacing, affine = _grid(positions, next(iter(orientations)), measures.PixelSpacing, shown, where)
    values = []
    for i in order:
        scaling = _group(dataset, frames[i], "PixelValueTransformationSequence", default=dataset)
        slope, intercept = float(scaling.get("RescaleSlope", 1)), float(scaling.get("RescaleIntercept", 0))
        values.append(pixels[i].astype(np.float64) * slope + intercept)
    return _whole(np.stack(values))[None], spacing, affine


def _grid(
    positions: np.ndarray, orientation: Any, pixel_spacing: Any, source: Path, where: str
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """The slices' order along their normal, mm per (D, H, W) axis and the RAS+ affine, from each
    slice's ImagePositionPatient, their ImageOrientationPatient and PixelSpacing."""
    rows, columns = _direction(orientation, source, where)
    normal = np.cross(rows, columns)
    order = np.argsort([float(np.dot(p, normal)) for p in positions])
    positions = positions[order]
    step = _slice_step(positions, normal, source, where)
    row_spacing, column_spacing = (float(v) for v in pixel_spacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = step, columns * row_spacing, rows * column_spacing
    lps[:3, 3] = positions[0]
    return order, (float(np.linalg.norm(step)), row_spacing, column_spacing), LPS_TO_RAS @ lps


SEGMENTATIONS = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


def is_segmentation(path: Path) -> bool:
    """A DICOM SEG file: segments of a series, as annotation tools export them."""
    found = header(path) if is_file(path) else None
    return found is not None and str(found.get("SOPClassUID", "")) in SEGMENTATIONS


def segment_labels(path: Path) -> dict[int, str]:
    """A DICOM SEG's segments: number -> label (SegmentLabel), as its header lists them; {} for
    another file."""
    found = header(path) if is_file(path) else None
    if found is None or str(found.get("SOPClassUID", "")) not in SEGMENTATIONS:
        return {}
    return {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in found.get("SegmentSequence", [])}


def read_segmentation(path: Path, shape: tuple[int, int, int], affine: np.ndarray, where: str) -> np.ndarray:
    """A DICOM SEG as a (D, H, W) label volume on the grid of its series (`shape`, RAS+ `affine`): each
    voxel the number of the segment that holds it, 0 none; where segments overlap, the smallest
    wins (a tumour in its organ stays a tumour). FRACTIONAL segments hold where over half; a LABELMAP
    segmentation's pixels are their segment's number. Frames that lie off the series' voxels
    (another series, a resampled segmentation) are a UserError."""
    dataset, frames = _segment_frames(path, where)
    to_voxel = np.linalg.inv(affine) @ LPS_TO_RAS
    masks: dict[int, np.ndarray] = {}
    for frame, pixels in frames:
        try:
            depth = _frame_depth(dataset, frame, to_voxel, pixels.shape, shape)
        except (KeyError, AttributeError, ValueError) as err:  # a frame without its position
            raise UserError(
                f"{where}: {path}: a frame lacks its geometry or segment ({err}); export it again"
            ) from None
        if depth is None:
            raise UserError(
                f"{where}: {path}: a frame lies off the voxels of the row's series ({shape[0]}x{shape[1]}x"
                f"{shape[2]}); expected a segmentation drawn on that series"
            )
        _add_segments(masks, pixels, shape, depth)
    return _smallest_last(masks, shape)


def read_image_segmentation(path: Path, size: tuple[int, ...], where: str) -> np.ndarray:
    """A DICOM SEG drawn on a 2-D image (an X-ray, a mammogram: a DICOM file without slices) as its
    (H, W) label map, segments numbered and overlapping as `read_segmentation`'s. Every frame lies
    on the whole image: one of another size is a UserError."""
    _, frames = _segment_frames(path, where)
    masks: dict[int, np.ndarray] = {}
    for _, pixels in frames:
        if pixels.shape != tuple(size):
            raise UserError(
                f"{where}: {path}: a frame of {pixels.shape[1]}x{pixels.shape[0]} pixels for the row's image of "
                f"{size[1]}x{size[0]}; expected a segmentation drawn on that image"
            )
        _add_segments(masks, pixels, (1, *size), 0)
    return _smallest_last(masks, (1, *size))[0]


def _segment_frames(path: Path, where: str) -> tuple[Any, list[tuple[Any, np.ndarray]]]:
    """The SEG's dataset and its frames, each with its functional groups and its pixels as segment
    numbers (0 none)."""
    import pydicom

    dataset = pydicom.dcmread(path)
    try:
        frames = dataset.pixel_array.reshape(-1, int(dataset.Rows), int(dataset.Columns))
    except Exception as err:  # pydicom raises many types: a damaged file, no pixel data
        raise UserError(f"{where}: {path}: its segments cannot be read ({type(err).__name__}: {err})") from None
    kind = str(dataset.get("SegmentationType", "BINARY"))
    if kind == "FRACTIONAL":
        frames = frames > int(dataset.get("MaximumFractionalValue", 255)) / 2
    groups = list(dataset.get("PerFrameFunctionalGroupsSequence", [])) or [{}] * len(frames)
    numbered = []
    for frame, pixels in zip(groups, frames):
        if kind != "LABELMAP":  # a frame of one segment (a LABELMAP frame's pixels are segment numbers)
            try:
                segment = int(_group(dataset, frame, "SegmentIdentificationSequence").ReferencedSegmentNumber)
            except (KeyError, AttributeError, ValueError) as err:
                raise UserError(
                    f"{where}: {path}: a frame lacks its geometry or segment ({err}); export it again"
                ) from None
            pixels = np.where(pixels > 0, segment, 0)
        numbered.append((frame, pixels))
    return dataset, numbered


def _add_segments(masks: dict[int, np.ndarray], pixels: np.ndarray, shape: tuple[int, ...], depth: int) -> None:
    for segment in np.unique(pixels[pixels > 0]).tolist():
        masks.setdefault(segment, np.zeros(shape, bool))[depth] |= pixels == segment


def _smallest_last(masks: dict[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The label array of the segments' masks, drawn largest first: where they overlap, the smallest wins."""
    labels = np.zeros(shape, np.uint8 if max(masks, default=0) < 256 else np.uint16)
    for segment, mask in sorted(masks.items(), key=lambda item: -int(item[1].sum())):
        labels[mask] = segment
    return labels


def _group(dataset: Any, frame: Any, name: str, default: Any = None) -> Any:
    """A frame's functional group `name`: its own, else the one its frames share, else `default`
    (None: a KeyError)."""
    groups = frame.get(name) or dataset.get("SharedFunctionalGroupsSequence", [{}])[0].get(name)
    if not groups and default is None:
        raise KeyError(f"no {name}")
    return groups[0] if groups else default


def _frame_depth(dataset: Any, frame: Any, to_voxel: np.ndarray, size: tuple, shape: tuple) -> int | None:
    """The series' slice a frame of `size` pixels lies on, voxel for voxel (its rows and columns the
    slice's); None where it lies anywhere else. `to_voxel`: LPS+ mm to the series' (d, h, w)."""
    cosines = np.asarray([float(v) for v in _group(dataset, frame, "PlaneOrientationSequence").ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in _group(dataset, frame, "PixelMeasuresSequence").PixelSpacing)
    position = [float(v) for v in _group(dataset, frame, "PlanePositionSequence").ImagePositionPatient]
    corner = to_voxel @ [*position, 1.0]
    down = to_voxel[:3, :3] @ (cosines[3:] * row_spacing)  # one pixel down a column, in the series' voxels
    along = to_voxel[:3, :3] @ (cosines[:3] * column_spacing)  # one pixel along a row
    depth = int(round(corner[0]))
    on_grid = np.allclose(down, [0, 1, 0], atol=1e-3) and np.allclose(along, [0, 0, 1], atol=1e-3)
    on_slice = np.allclose(corner[:3], [depth, 0, 0], atol=1e-3) and 0 <= depth < shape[0]
    return depth if on_grid and on_slice and tuple(size) == tuple(shape[1:]) else None


def _one_series(headers: list, folder: Path, where: str) -> None:
    """A UserError unless the slices are one series on one grid, each with its position."""
    series = {str(getattr(h, "SeriesInstanceUID", "")) for h in headers}
    if len(series) > 1:
        raise UserError(
            f"{where}: {folder} holds {len(series)} series (SeriesInstanceUID); put each series in a folder of its own"
        )
    for key in ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient"):
        values = {str(getattr(h, key, None)) for h in headers}
        if len(values) > 1:
            raise UserError(f"{where}: {folder}: its slices differ in {key} ({', '.join(sorted(values)[:3])}); "
                            "expected one series of slices on one grid")  # fmt: skip
        if "None" in values:
            raise UserError(f"{where}: {folder}: its slices lack {key}; expected an image series with its geometry")
    if any(getattr(h, "ImagePositionPatient", None) is None for h in headers):
        raise UserError(f"{where}: {folder}: a slice lacks ImagePositionPatient; expected an image series")


def _direction(orientation: Any, folder: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The unit vectors along a row (width) and down a column (height), LPS+, of ImageOrientationPatient."""
    cosines = np.asarray([float(v) for v in orientation])
    rows, columns = cosines[:3], cosines[3:]
    if not (np.isclose(np.linalg.norm(rows), 1, atol=1e-3) and np.isclose(np.linalg.norm(columns), 1, atol=1e-3)):
        raise UserError(f"{where}: {folder}: ImageOrientationPatient {list(cosines)} holds no unit directions")
    return rows / np.linalg.norm(rows), columns / np.linalg.norm(columns)


def _slice_step(positions: np.ndarray, normal: np.ndarray, folder: Path, where: str) -> np.ndarray:
    """The vector from one slice to the next; UserError for a single slice, a repeat or a gap."""
    if len(positions) < 2:
        raise UserError(f"{where}: {folder} holds one slice; expected a series of slices (a volume)")
    along = positions @ normal
    steps = np.diff(along)
    median = float(np.median(steps))
    if np.any(steps <= 1e-6 * max(abs(median), 1.0)):
        raise UserError(f"{where}: {folder}: two slices lie at one position; expected one series, each slice once")
    if np.any(np.abs(steps - median) > GAP_TOLERANCE * median):
        at = int(np.argmax(np.abs(steps - median)))
        raise UserError(
            f"{where}: {folder}: the slices are {median:.3g} mm apart but {steps[at]:.3g} mm after slice {at + 1} "
            f"of {len(positions)}: a slice is missing (or the spacing varies); export the whole series"
        )
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def _voxels(files: list[Path], folder: Path, where: str) -> np.ndarray:
    """(D, H, W): each slice's stored values times its RescaleSlope plus its RescaleIntercept (`_whole`)."""
    import pydicom

    slices = []
    for path in files:
        dataset = pydicom.dcmread(path)
        try:
            pixels = dataset.pixel_array
        except Exception as err:  # no PixelData, or a compression without its decoder
            raise UserError(
                f"{where}: {path}: its pixel data cannot be read ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else 'none'}); export the series uncompressed"
            ) from None
        slope, intercept = float(getattr(dataset, "RescaleSlope", 1)), float(getattr(dataset, "RescaleIntercept", 0))
        slices.append(pixels.astype(np.float64) * slope + intercept)
    return _whole(np.stack(slices))


def _whole(volume: np.ndarray) -> np.ndarray:
    """int16 where every value is a whole number in its range (CT's Hounsfield units, as NIfTI
    converters store them), else float32."""
    whole = np.array_equal(volume, np.round(volume)) and volume.min() >= -32768 and volume.max() <= 32767
    return volume.astype(np.int16 if whole else np.float32)


def write_series(
    folder: Path, values: np.ndarray, affine: np.ndarray, slope: float = 1.0, intercept: float = 0.0
) -> Path:
    """Writes (D, H, W) `values` on the grid of the (d, h, w) RAS+ `affine` as one CT series in
    `folder`, slice-000.dcm on: each slice's position, orientation, pixel spacing and thickness from
    the affine, its int16 stored values such that slope x stored + intercept gives `values` (a
    ValueError where that is not a whole number in int16's range). UIDs are derived from the
    values and the affine, so the same scan writes the same files."""
    from pydicom.uid import generate_uid

    stored = (np.asarray(values, np.float64) - intercept) / slope
    if not (np.array_equal(stored, np.round(stored)) and stored.min() >= -32768 and stored.max() <= 32767):
        raise ValueError(f"(values - {intercept}) / {slope} are not all whole numbers in int16's range")
    lps = LPS_TO_RAS @ np.asarray(affine, np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)  # mm per (d, h, w)
    across, down = lps[:3, 2] / spacing[2], lps[:3, 1] / spacing[1]  # along a row (width), down a column
    digest = hashlib.sha256(stored.astype(np.int16).tobytes() + lps.tobytes()).hexdigest()
    series = generate_uid(entropy_srcs=[digest])
    folder.mkdir(parents=True, exist_ok=True)
    for k, plane in enumerate(stored.astype(np.int16)):
        dataset = _slice(plane, generate_uid(entropy_srcs=[digest, str(k)]), series)
        dataset.InstanceNumber = k + 1
        dataset.ImagePositionPatient = _decimals(lps[:3, 3] + k * lps[:3, 0])
        dataset.ImageOrientationPatient = _decimals([*across, *down])
        dataset.PixelSpacing = _decimals(spacing[1:])  # between rows (height), then between columns (width)
        dataset.SliceThickness = _decimals(spacing[:1])[0]
        dataset.RescaleSlope, dataset.RescaleIntercept = _decimals([slope, intercept])
        dataset.save_as(folder / f"slice-{k:03d}.dcm", enforce_file_format=True)
    return folder


def _decimals(values) -> list:
    """DICOM decimal strings (DS) holding `values` as closely as their 16 characters allow."""
    from pydicom.valuerep import DSfloat

    return [DSfloat(float(v), auto_format=True) for v in values]


def _slice(plane: np.ndarray, instance: str, series: str):
    """A CT image dataset of one (H, W) int16 slice, without its geometry."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID, dataset.SeriesInstanceUID = CTImageStorage, instance, series
    dataset.Modality, dataset.RescaleType = "CT", "HU"
    dataset.Rows, dataset.Columns = plane.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 1  # signed
    dataset.PixelData = np.ascontiguousarray(plane, "<i2").tobytes()
    return dataset

"""Reading and writing volumes: NIfTI files, TIFF stacks and DICOM scans (series and multi-frame
files: dicom_scans.py) as (C, D, H, W) arrays with their voxel spacing.

    scan = read_volume(Path("scan.nii.gz"), "data.csv: row 2, column 'scan'")
    scan.array, scan.spacing, scan.affine        # (C, D, H, W); mm per (D, H, W) axis; 4x4
    labels = read_label_volume(Path("labels.nii.gz"), "data.csv: row 2, column 'labels'")
    same_grid(scan, labels, Path("labels.nii.gz"), "data.csv: row 2, column 'labels'")
    write_volume(Path("mask.nii.gz"), mask, scan.affine)   # (D, H, W) or (C, D, H, W) on the scan's grid
    write_volume(Path("new.nii.gz"), voxels, spacing_affine((3.0, 0.8, 0.8)))  # an axis-aligned grid
    scan = read_volume(upload, "input 'image'")   # a file's bytes (`cnn-factory serve`): the format from its content
    data = volume_bytes(mask, scan.affine)         # the .nii.gz file write_volume writes, in memory

Depth is the file's slowest axis, width its fastest: a NIfTI array's (i, j, k[, c]) reversed, a
TIFF stack's pages (axis Z, or tifffile's I/Q) as depth, its channels an ImageJ C axis or the
samples of each pixel. `affine` maps a voxel index (d, h, w, 1) to world coordinates (x, y, z, 1)
in mm (NIfTI's sform, else its qform, else its pixdim scaling, as nibabel chooses; a TIFF stack's
is axis-aligned); `spacing` is the length of its step along each axis, a TIFF stack's from its
ImageJ calibration (`_tiff_spacing`), else the `default_spacing` the caller passes, else an error.
docs/volumes.md ("Axes" and the table of formats) says it at length.

Every problem is a UserError that names `where` (the CSV row and column), the file, and what to do.
A file's bytes are read in memory: a gzip'd NIfTI file is unzipped up to the end of the voxels its
header states, no further.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_factory.dicom import is_file
from cnn_factory.dicom_scans import read_frames, read_series
from cnn_factory.errors import UserError
from cnn_factory.images import TIFF, TIFF_MAGIC

NIFTI = (".nii", ".nii.gz")
TO_MM = {"mm": 1.0, "millimeter": 1.0, "meter": 1000.0, "m": 1000.0, "cm": 10.0, "micron": 1e-3, "um": 1e-3}
# ImageJ may write the micro sign escaped; NIfTI's "unknown" unit is read as mm, as nibabel and ITK do
TO_MM |= {"\u00b5m": 1e-3, "\\u00b5m": 1e-3, "nm": 1e-6, "unknown": 1.0}
DEPTH_AXES, CHANNEL_AXES = "ZQI", "CS"  # tifffile's axis letters
GZIP_MAGIC = b"\x1f\x8b"
Source = Path | bytes  # a file, or a file's bytes (an upload to `cnn-factory serve`)


@dataclass(frozen=True)
class Volume:
    """A scan's voxels ((C, D, H, W) intensities, or (D, H, W) label values), mm per (D, H, W)
    axis, and the 4x4 affine from (d, h, w, 1) to (x, y, z, 1) in mm."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """(D, H, W), whatever the channels."""
        d, h, w = self.array.shape[-3:]
        return d, h, w


def read_volume(
    source: Source, where: str, channels: int | None = None, default_spacing: tuple[float, float, float] | None = None
) -> Volume:
    """The scan's (C, D, H, W) voxels in the file's dtype, its spacing and affine; `channels`, when
    given, the number it must have (1: a 3-D volume); `default_spacing` (mm per D, H, W) for a
    TIFF stack without ImageJ calibration."""
    array, spacing, affine = _read(source, where, default_spacing)
    path = _shown(source)
    if channels is not None and array.shape[0] != channels:
        if channels == 1:
            raise UserError(
                f"{where}: {path} is a 4-D file of {array.shape[0]} channels of {_size(array)} voxels; "
                "expected a 3-D volume: save one channel per file"
            )
        raise UserError(f"{where}: {path} has {array.shape[0]} channels; expected {channels}")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise UserError(
            f"{where}: {path} has {int(np.isnan(array).sum())} NaN voxels; replace them with a value "
            "(e.g. the background's) before training"
        )
    return Volume(array, spacing, affine)


def volume_grid(path: Path, where: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """A volume's (D, H, W) and spacing, from a NIfTI file's header alone (a TIFF stack is read)."""
    if not path.name.lower().endswith(NIFTI):
        scan = read_volume(path, where)
        return scan.shape, scan.spacing
    import nibabel as nib

    try:
        image = nib.load(path)
        if not isinstance(image, nib.Nifti1Image):  # NIfTI-2 images are NIfTI-1 images to nibabel
            raise TypeError(f"a {type(image).__name__}")
        shape = image.shape
    except Exception as err:  # as _read_nifti: any failure means "not a readable NIfTI file"
        raise UserError(f"{where}: {path} cannot be read as NIfTI ({type(err).__name__}: {err})") from None
    if len(shape) < 3:
        raise UserError(f"{where}: {path} is a 2-D image; expected a volume")
    return (int(shape[2]), int(shape[1]), int(shape[0])), _nifti_spacing(image, _stored_header(path, image))


def stated_voxels(data: bytes) -> int | None:
    """The number of values (voxels times channels) a NIfTI file's or TIFF stack's bytes hold by their
    header, read before the voxels are; None where there is no header to read (read_volume says why)."""
    try:
        if data[:4] in TIFF_MAGIC:
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                return int(np.prod(tif.series[0].shape))
        return int(np.prod(_nifti_header(data).get_data_shape()))
    except Exception:  # not a volume's header: read_volume's message says why
        return None


def read_label_volume(source: Source, where: str, default_spacing: tuple[float, float, float] | None = None) -> Volume:
    """A label volume: (D, H, W) integer label values (whole-number floats, as many tools save
    label maps, become integers), its spacing and affine."""
    array, spacing, affine = _read(source, where, default_spacing)
    path = _shown(source)
    if array.shape[0] != 1:
        raise UserError(
            f"{where}: {path} is a 4-D file of {array.shape[0]} channels of {_size(array)} voxels; "
            "expected a 3-D label volume"
        )
    labels = array[0]
    if not np.issubdtype(labels.dtype, np.integer):  # NaN is a non-integer value too
        fractional = ~np.isfinite(labels) | (labels != np.round(labels))
        if fractional.any():
            example = labels[fractional].flat[0]
            raise UserError(
                f"{where}: {path} holds non-integer label values (e.g. {example}); expected a label "
                "map of whole numbers: save it with an integer type, without interpolation"
            )
        labels = labels.astype(np.min_scalar_type(int(labels.max())) if labels.min() >= 0 else np.int64)
    return Volume(labels, spacing, affine)


def same_grid(image: Volume, labels: Volume, source: Source, where: str) -> None:
    """A UserError unless the label volume from `source` lies on the image's voxels: same (D, H, W), same affine."""
    path = _shown(source)
    if image.shape != labels.shape:
        raise UserError(
            f"{where}: {path} has {_size(labels.array)} voxels, its image {_size(image.array)}; "
            "a label volume must cover its image voxel for voxel"
        )
    if not np.allclose(image.affine, labels.affine, rtol=0, atol=1e-3):  # 1 micron: float32 headers agree to that
        raise UserError(
            f"{where}: {path} is placed differently from its image (affines differ: "
            f"{_affine_text(labels.affine)} against {_affine_text(image.affine)}); resample it onto the image's grid"
        )


def write_volume(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Writes (D, H, W) or (C, D, H, W) voxels as NIfTI (.nii or .nii.gz by the name), spacing in mm."""
    path.write_bytes(volume_bytes(array, affine, compress=path.name.lower().endswith(".gz")))


def volume_bytes(array: np.ndarray, affine: np.ndarray, compress: bool = True) -> bytes:
    """The NIfTI file write_volume writes, in memory: gzip'd (.nii.gz) unless `compress` is False."""
    import nibabel as nib

    data = (array[0] if array.ndim == 4 and len(array) == 1 else array).T  # (i, j, k) or (i, j, k, c)
    image = nib.Nifti1Image(np.ascontiguousarray(data), _reorder(affine))
    image.header.set_xyzt_units("mm")
    # nibabel's own level; no time or name in the gzip header, so equal voxels give equal bytes
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0) if compress else image.to_bytes()


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """mm per (D, H, W) axis of a (d, h, w) affine: the length of its step along each axis."""
    d, h, w = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    return float(d), float(h), float(w)


def spacing_affine(spacing: tuple[float, ...], origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The affine of an axis-aligned grid of (D, H, W) `spacing` mm: x along the width, y along the
    height, z along the depth, voxel (0, 0, 0) at `origin` (x, y, z) mm."""
    affine = _reorder(np.diag([spacing[2], spacing[1], spacing[0], 1.0]))  # NIfTI's diagonal, (i, j, k) = (w, h, d)
    affine[:3, 3] = origin
    return affine


def _reorder(affine: np.ndarray) -> np.ndarray:
    """The affine's columns from (i, j, k) to (d, h, w) order, or back (the swap is its own inverse)."""
    return np.asarray(affine, float)[:, [2, 1, 0, 3]]


def _size(array: np.ndarray) -> str:
    return "x".join(str(n) for n in array.shape[-3:])


def _affine_text(affine: np.ndarray) -> str:
    return "[" + "; ".join(" ".join(f"{v:g}" for v in row) for row in np.round(affine[:3], 3)) + "]"


def _shown(source: Source) -> str:
    """How a message names the file: its path, or the upload."""
    return str(source) if isinstance(source, Path) else "the uploaded file"


def _format(source: Source) -> str | None:
    """ "nifti", "tiff", "dicom" (a series' folder) or "frames" (a multi-frame DICOM file): by the
    name of a file (a DICOM file's by its content), by the content of a file's bytes."""
    if isinstance(source, Path):
        name = source.name.lower()
        if source.is_dir():
            return "dicom"  # a folder of one series' slices
        if name.endswith(NIFTI):
            return "nifti"
        if name.endswith(TIFF):
            return "tiff"
    elif source[:4] in TIFF_MAGIC:
        return "tiff"
    if is_file(source):
        return "frames"
    return "nifti" if isinstance(source, bytes) and (source[:2] == GZIP_MAGIC or _nifti_size(source)) else None


def _read(source: Source, where: str, default_spacing) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    path, kind = _shown(source), _format(source)
    if kind == "nifti":
        array, spacing, affine = _read_nifti(source, where)
    elif kind == "tiff":
        array, spacing, affine = _read_tiff(source, where, default_spacing)
    elif kind == "dicom" and isinstance(source, Path):
        array, spacing, affine = read_series(source, where)
    elif kind == "frames":
        array, spacing, affine = read_frames(source, where)
    else:
        last = (
            ", a multi-frame DICOM file or a folder holding a DICOM series"
            if isinstance(source, Path)
            else (" or a multi-frame DICOM file")
        )
        raise UserError(f"{where}: {path} is not a volume file; expected NIfTI (.nii, .nii.gz), a TIFF stack{last}")
    if array.shape[1] < 2:
        raise UserError(f"{where}: {path} is a 2-D image (one slice of {_size(array)}); expected a volume")
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise UserError(
            f"{where}: {path} has voxel spacing ({', '.join(f'{s:.4g}' for s in spacing)}) mm; every axis needs a "
            "size > 0: set it in the file's header (NIfTI pixdim, ImageJ calibration)"
        )
    return array, spacing, affine


def _read_nifti(source: Source, where: str):
    import nibabel as nib

    path = _shown(source)
    try:
        if isinstance(source, Path):
            image = nib.load(source)
        else:  # the file's bytes, unzipped; NIfTI-2's header is 540 bytes long, NIfTI-1's 348
            source = _unzipped(source)
            image = (nib.Nifti2Image if _nifti_size(source) == 540 else nib.Nifti1Image).from_bytes(source)
        if not isinstance(image, nib.Nifti1Image):  # NIfTI-2 images are NIfTI-1 images to nibabel
            raise TypeError(f"a {type(image).__name__}")
        data = np.asanyarray(image.dataobj)  # the voxels are read (and unzipped) here
    except Exception as err:  # nibabel and zlib raise many types; all mean "not a readable NIfTI file"
        if isinstance(err, EOFError) or _gzip_ends_early(source):  # cut in the voxels, or in the header
            raise UserError(f"{where}: {path} ends early (a truncated gzip stream); copy or export it again") from None
        raise UserError(f"{where}: {path} cannot be read as NIfTI ({type(err).__name__}: {err})") from None
    if data.ndim == 2:
        raise UserError(f"{where}: {path} is a 2-D image of {data.shape[1]}x{data.shape[0]}; expected a volume")
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI's vector convention: (i, j, k, t = 1, c)
        data = data[:, :, :, 0]
    if data.ndim > 4:
        raise UserError(
            f"{where}: {path} has {data.ndim} axes {data.shape}; expected i, j, k and at most a channel axis"
        )
    data = data[..., None] if data.ndim == 3 else data
    stored = _stored_header(source, image)
    return np.ascontiguousarray(data.transpose(3, 2, 1, 0)), _nifti_spacing(image, stored), _nifti_affine(image)


def _nifti_affine(image) -> np.ndarray:
    affine = _reorder(image.affine)
    affine[:3] *= TO_MM.get(image.header.get_xyzt_units()[0], 1.0)
    return affine


def _nifti_spacing(image, stored) -> tuple[float, float, float]:
    """mm per (D, H, W) axis: each step's length (the `stored` header's own pixdims where nibabel replaced a zero)."""
    if stored["sform_code"] == 0 and not all(p > 0 for p in stored["pixdim"][1:4]):
        # no sform, and the qform (or the plain scaling) takes the pixdims nibabel has set from 0 to 1
        scale = TO_MM.get(image.header.get_xyzt_units()[0], 1.0)
        d, h, w = (float(p) * scale for p in stored["pixdim"][3:0:-1])
        return d, h, w
    return affine_spacing(_nifti_affine(image))


def _nifti_size(data: bytes) -> int:
    """The header size a NIfTI file's (unzipped) bytes start with: 348 (NIfTI-1), 540 (NIfTI-2), else 0."""
    for order in ("little", "big"):
        size = int.from_bytes(data[:4], order)
        if size in (348, 540):
            return size
    return 0


def _nifti_header(data: bytes):
    """The header of a NIfTI file's bytes, gzip'd or not: their first 540 bytes, unzipped."""
    import nibabel as nib

    head = gzip.GzipFile(fileobj=io.BytesIO(data)).read(540) if data[:2] == GZIP_MAGIC else data[:540]
    header = nib.Nifti2Header if _nifti_size(head) == 540 else nib.Nifti1Header
    return header.from_fileobj(io.BytesIO(head), check=False)


def _unzipped(data: bytes) -> bytes:
    """A NIfTI file's bytes, unzipped up to the end of the voxels its header states (a gzip stream
    that unzips to more, a "gzip bomb", stops there)."""
    if data[:2] != GZIP_MAGIC:
        return data
    header = _nifti_header(data)
    end = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    return gzip.GzipFile(fileobj=io.BytesIO(data)).read(end)


def _gzip_ends_early(source: Source) -> bool:
    if not isinstance(source, Path) or not source.name.lower().endswith(".gz"):
        return False  # bytes are unzipped first: a truncated stream raised EOFError there
    try:
        with gzip.open(source) as f:
            while f.read(1 << 24):
                pass
    except EOFError:
        return True
    except Exception:  # not gzip at all, or damaged otherwise: nibabel's reason says it
        return False
    return False


def _stored_header(source: Source, image):
    """The header as the file holds it: nibabel sets a zero pixdim to 1 as it loads, which would hide it."""
    if not isinstance(source, Path):
        return type(image.header).from_fileobj(io.BytesIO(source), check=False)
    from nibabel.openers import ImageOpener

    with ImageOpener(str(source)) as f:
        return type(image.header).from_fileobj(f, check=False)


def _read_tiff(source: Source, where: str, default_spacing):
    import tifffile

    path = _shown(source)
    try:
        with tifffile.TiffFile(io.BytesIO(source) if isinstance(source, bytes) else source) as tif:
            series, imagej = tif.series[0], tif.imagej_metadata or {}
            data, axes, page = series.asarray(), series.axes, tif.pages.first
            resolution = page.resolution if "XResolution" in page.tags else None
    except Exception as err:  # tifffile raises many types; all mean "not a readable TIFF"
        raise UserError(f"{where}: {path} cannot be read as TIFF ({type(err).__name__}: {err})") from None
    kept = [a for a, n in zip(axes, data.shape) if n > 1 or a in "YX"]
    data = data.reshape([n for a, n in zip(axes, data.shape) if a in kept])  # tifffile's axes are distinct letters
    depth, channel = [a for a in kept if a in DEPTH_AXES], [a for a in kept if a in CHANNEL_AXES]
    if not depth:
        raise UserError(f"{where}: {path} is a 2-D image ({'x'.join(map(str, data.shape))}); expected a TIFF stack")
    if len(depth) > 1 or len(channel) > 1 or len(kept) != 3 + len(channel):
        raise UserError(
            f"{where}: {path} has axes {''.join(kept)} {data.shape}; expected pages (Z), rows (Y), "
            "columns (X) and at most one channel axis (C or S)"
        )
    data = data.transpose([kept.index(a) for a in (*channel, depth[0], "Y", "X")])
    data = data if channel else data[None]
    spacing = _tiff_spacing(imagej, resolution) or default_spacing
    if spacing is None:
        raise UserError(
            f"{where}: {path} has no voxel spacing (no ImageJ calibration); calibrate it in ImageJ "
            "(Image > Properties) or give its spacing (params.yaml: inputs.*.spacing as [depth, height, width] mm)"
        )
    return np.ascontiguousarray(data), tuple(float(s) for s in spacing), spacing_affine(spacing)


def _tiff_spacing(imagej: dict, resolution) -> tuple[float, float, float] | None:
    """(D, H, W) mm from ImageJ's calibration: `spacing` between pages, resolution tags (pixels
    per unit) in plane, in its `unit`; None where it is missing or in pixels."""
    scale = TO_MM.get(str(imagej.get("unit", "")).lower())
    if scale is None or "spacing" not in imagej or resolution is None:
        return None
    x, y = resolution
    if not (x and y):
        return (0.0, 0.0, 0.0)  # said as a zero spacing
    return float(imagej["spacing"]) * scale, scale / float(y), scale / float(x)

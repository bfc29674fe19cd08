"""A generated volume data set: small anisotropic scans of an organ with a tumour, generated deterministically.

    make_volume_example(Path("data/volumes"), rows=40, size=(24, 48, 48), seed=0)
    make_volume_example(Path("data/volumes"), rows=40, format="dicom")  # the scans as DICOM series

Each scan is a 16-bit NIfTI volume of about `size` voxels (each axis drawn within a sixth of it),
its slices 2.5-4 mm apart and its pixels 0.8-1.2 mm, on a smooth uneven background with noise
and a slight blur. Label values: 1 an ellipsoid organ, 2 a round tumour inside it, 3 a darker
box-shaped cyst elsewhere in the organ (in about two scans of three). Shapes are drawn in mm, so
the same tumour spans fewer slices at a coarser spacing. `grade` is `low` (a tumour of even
brightness) or `high` (brighter and speckled); `tumour_ml`, the tumour's volume in mL, is
counted from the label map and the spacing, as a reader of the files would compute it.

Writes out/images/*.nii.gz, out/labels/*.nii.gz and out/data.csv (image, labels, grade,
tumour_ml), paths relative to `out` as in the 2-D example's CSV; an existing `out` is replaced.
With `format="dicom"` each scan is a DICOM series instead, out/images/0000/slice-000.dcm on (a
CSV cell names the folder), the same voxels on the same grid: int16 stored values with
RescaleIntercept -1024 (every voxel maps back exactly), the geometry of the NIfTI file's float32
header in DICOM's decimal strings (within 1e-11 mm of it); the label volumes stay NIfTI.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from cnn_factory.data.example import write_data_set
from cnn_factory.dicom_scans import write_series
from cnn_factory.volumes import spacing_affine, write_volume

GRADES = ("low", "high")
FORMATS = ("nifti", "dicom")  # how the scans are written; label volumes are NIfTI either way
DICOM_INTERCEPT = -1024.0  # stored values from 0 up for the scans' -1000 and up, as CT scanners store them
Spacing = tuple[float, float, float]


def _ellipsoid(grid: Sequence[np.ndarray], centre, radii) -> np.ndarray:
    """Voxels whose centres (mm) lie inside the ellipsoid of `radii` mm about `centre` mm."""
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


def make_scan(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: Spacing
) -> tuple[np.ndarray, np.ndarray, str]:
    """One (int16 (D, H, W) intensities, uint8 (D, H, W) label map, grade) triple."""
    grid = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")  # voxel centres, mm
    extent = np.array(shape) * spacing
    trend = sum(rng.uniform(-1, 1) * g / e for g, e in zip(grid, extent))
    image = 100 + 60 * trend + 20 * np.sin(grid[1] / rng.uniform(8, 16))  # uneven background
    labels = np.zeros(shape, np.uint8)
    organ_radii = extent * rng.uniform(0.3, 0.4, 3)
    organ_centre = extent / 2 + rng.uniform(-0.05, 0.05, 3) * extent
    organ = _ellipsoid(grid, organ_centre, organ_radii)
    labels[organ], image[organ] = 1, image[organ] + 200
    radius = rng.uniform(0.3, 0.55) * organ_radii.min()
    centre = organ_centre + rng.uniform(-1, 1, 3) * (organ_radii - radius) * 0.4
    tumour = _ellipsoid(grid, centre, [radius] * 3)
    high = bool(rng.integers(0, 2))
    labels[tumour] = 2
    image[tumour] += 450 + rng.normal(0, 120, int(tumour.sum())) if high else 250
    if rng.random() < 0.65:  # a cyst: a box in the organ, away from the tumour
        side = rng.uniform(0.25, 0.4) * organ_radii
        corner = organ_centre - np.sign(centre - organ_centre) * organ_radii * 0.45 - side / 2
        cyst = organ & np.all([(g >= c) & (g < c + s) for g, c, s in zip(grid, corner, side)], axis=0)
        cyst &= labels == 1  # never over the tumour
        labels[cyst], image[cyst] = 3, image[cyst] - 160  # darker than the organ around it
    image = gaussian_filter(image, 0.6) + rng.normal(0, 15, shape)  # the scanner's blur, then its noise
    return np.clip(image, -1000, 3000).astype(np.int16), labels, GRADES[high]


def tumour_ml(labels: np.ndarray, spacing: Spacing) -> float:
    """The volume of label 2 in mL: its voxels times a voxel's mm^3, over 1000."""
    return float(np.count_nonzero(labels == 2) * np.prod(spacing) / 1000)


def write_dicom_scan(folder: Path, scan: tuple[np.ndarray, np.ndarray]) -> None:
    """A (voxels, affine) scan as the DICOM series of the NIfTI file write_volume writes: its grid
    as that file's header holds it (float32), so that both read to the same arrays and grid."""
    voxels, affine = scan
    write_series(folder, voxels, affine.astype(np.float32).astype(np.float64), intercept=DICOM_INTERCEPT)


def make_volume_example(
    out: Path, rows: int, size: tuple[int, int, int] = (24, 48, 48), seed: int = 0, format: str = "nifti"
) -> None:
    """Writes `rows` scans (`format`: nifti or dicom), their label maps and data.csv under `out`
    (the module's docstring)."""
    if format not in FORMATS:
        raise ValueError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    rng = np.random.default_rng(seed)

    def samples() -> Iterator[tuple[tuple, tuple, tuple[str, str]]]:  # ((voxels, affine), (labels, affine), values)
        for _ in range(rows):
            d, h, w = (int(rng.integers(n - n // 6, n + n // 6 + 1)) for n in size)
            inplane = float(rng.uniform(0.8, 1.2))
            spacing: Spacing = (float(rng.uniform(2.5, 4.0)), inplane, inplane)
            image, labels, grade = make_scan(rng, (d, h, w), spacing)
            x, y, z = (float(v) for v in rng.uniform(-50, 50, 3))  # where the scanner put voxel (0, 0, 0)
            affine = spacing_affine(spacing, origin=(x, y, z))
            yield (image, affine), (labels, affine), (grade, f"{tumour_ml(labels, spacing):.3f}")

    images = ("", write_dicom_scan) if format == "dicom" else None  # a series' folder, named without a suffix
    write_data_set(
        out, ("grade", "tumour_ml"), samples(), ".nii.gz", lambda path, scan: write_volume(path, *scan), images
    )

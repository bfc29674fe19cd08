"""The generated volume example reads back through volumes.py with its spacing, grid and per-scan columns."""

from __future__ import annotations

import csv

import numpy as np
import pydicom
import pytest

from cnn_factory.data.volumes_example import DICOM_INTERCEPT, make_volume_example
from cnn_factory.volumes import read_label_volume, read_volume, same_grid, spacing_affine


def rows_of(folder) -> list[dict[str, str]]:
    with open(folder / "data.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_scans_read_back_with_their_spacing_labels_and_columns(tmp_path):
    make_volume_example(tmp_path / "vol", rows=3, size=(16, 24, 24), seed=0)
    rows = rows_of(tmp_path / "vol")
    assert len(rows) == 3 and list(rows[0]) == ["image", "labels", "grade", "tumour_ml"]
    for number, row in enumerate(rows, 2):
        where = f"data.csv: row {number}, column 'image'"
        scan = read_volume(tmp_path / "vol" / row["image"], where, channels=1)
        labels = read_label_volume(tmp_path / "vol" / row["labels"], where)
        same_grid(scan, labels, tmp_path / "vol" / row["labels"], where)
        assert scan.array.dtype == np.int16 and all(13 <= n <= 28 for n in scan.shape)
        depth, height, width = scan.spacing
        assert 2.5 <= depth <= 4.0 and 0.8 <= height <= 1.2 and height == pytest.approx(width)
        assert np.allclose(scan.affine, spacing_affine(scan.spacing, tuple(scan.affine[:3, 3])), atol=1e-5)
        assert np.all(np.abs(scan.affine[:3, 3]) <= 50)
        assert {1, 2} <= set(np.unique(labels.array)) <= {0, 1, 2, 3} and row["grade"] in ("low", "high")
        counted = np.count_nonzero(labels.array == 2) * np.prod(scan.spacing) / 1000  # mL from the files alone
        assert float(row["tumour_ml"]) == pytest.approx(counted, abs=1e-3) and counted > 0
        tumour, organ = scan.array[0][labels.array == 2], scan.array[0][labels.array == 1]
        assert tumour.mean() > organ.mean() + 150  # what a network has to see


def test_the_same_seed_writes_the_same_scans(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        make_volume_example(tmp_path / name, rows=2, size=(16, 24, 24), seed=seed)
    first, again, other = (read_volume(tmp_path / n / "images" / "0001.nii.gz", "") for n in "abc")
    assert np.array_equal(first.array, again.array) and first.spacing == again.spacing
    assert rows_of(tmp_path / "a") == rows_of(tmp_path / "b") != rows_of(tmp_path / "c")
    assert first.array.shape != other.array.shape or not np.array_equal(first.array, other.array)


def test_the_dicom_example_reads_to_the_nifti_examples_voxels_and_grid(tmp_path):
    """format dicom writes the same scans as series: equal int16 voxels (stored from 0 up, RescaleIntercept
    -1024), the NIfTI header's float32 grid in DICOM's 16-character decimals (so within 1e-11 mm, not to the
    bit); the label volumes and the CSV's other cells as format nifti writes them; the same seed, the same files."""
    for name, scans in (("nifti", "nifti"), ("dicom", "dicom"), ("again", "dicom")):
        make_volume_example(tmp_path / name, rows=3, size=(16, 24, 24), seed=0, format=scans)
    for theirs, ours in zip(rows_of(tmp_path / "nifti"), rows_of(tmp_path / "dicom")):
        assert ours["image"] == theirs["image"].removesuffix(".nii.gz") and ours["image"].startswith("images/")
        assert {**ours, "image": ""} == {**theirs, "image": ""}
        assert (tmp_path / "dicom" / ours["labels"]).read_bytes() == (
            tmp_path / "nifti" / theirs["labels"]
        ).read_bytes()
        series, nifti = (
            read_volume(tmp_path / "dicom" / ours["image"], ""),
            read_volume(tmp_path / "nifti" / theirs["image"], ""),
        )
        assert np.array_equal(series.array, nifti.array) and series.array.dtype == nifti.array.dtype == np.int16
        assert series.spacing == pytest.approx(nifti.spacing, rel=0, abs=1e-11) and series.spacing != (1.0,) * 3
        assert np.allclose(series.affine, nifti.affine, rtol=0, atol=1e-11)
        files = sorted((tmp_path / "dicom" / ours["image"]).iterdir())
        assert len(files) == series.shape[0] and all(f.name.endswith(".dcm") for f in files)
        first = pydicom.dcmread(files[0])
        assert float(first.RescaleIntercept) == DICOM_INTERCEPT and float(first.RescaleSlope) == 1.0
        assert first.pixel_array.min() >= 0 and float(first.SliceThickness) == pytest.approx(series.spacing[0])
        decimals = [*first.ImagePositionPatient, *first.ImageOrientationPatient, *first.PixelSpacing]
        assert all(len(str(v)) <= 16 for v in decimals)  # DICOM's DS, written as it allows
    written = sorted(p.relative_to(tmp_path / "dicom") for p in (tmp_path / "dicom").rglob("*") if p.is_file())
    assert len(written) > 40
    assert all((tmp_path / "dicom" / p).read_bytes() == (tmp_path / "again" / p).read_bytes() for p in written)

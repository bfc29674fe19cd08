"""DICOM series read as volumes: the same array, spacing and affine as the equivalent NIfTI file,
whatever the files' order, and one line for each kind of bad series."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from cnn_factory.dicom import is_series, read_series
from cnn_factory.errors import UserError
from cnn_factory.volumes import read_volume, write_volume

SLOPE, INTERCEPT = 2.0, -1024.0


def oblique_affine(spacing=(3.0, 0.8, 0.7), degrees=30.0, origin=(-40.0, 25.0, 12.5)) -> np.ndarray:
    """(d, h, w) -> RAS+ mm: width and height rotated about z, depth along z, anisotropic."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    affine = np.eye(4)
    affine[:3, 2] = np.array([c, s, 0]) * spacing[2]  # along a row (width)
    affine[:3, 1] = np.array([-s, c, 0]) * spacing[1]  # down a column (height)
    affine[:3, 0] = np.array([0, 0, 1]) * spacing[0]  # slice to slice (depth)
    affine[:3, 3] = origin
    return affine


def write_series(folder: Path, values: np.ndarray, affine: np.ndarray, order=None, series=None) -> Path:
    """One CT series: a file per slice, positions and orientation from `affine` (RAS+ to LPS+), the
    stored values such that SLOPE x stored + INTERCEPT gives `values`."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    rows, columns = lps[:3, 2] / np.linalg.norm(lps[:3, 2]), lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    series = series or generate_uid()
    for k in order if order is not None else range(len(values)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = (
            CTImageStorage,
            meta.MediaStorageSOPInstanceUID,
            series,
        )
        ds.Modality, ds.InstanceNumber = "CT", int(k) + 1
        ds.Rows, ds.Columns = values.shape[1:]
        ds.ImagePositionPatient = [round(float(v), 6) for v in lps[:3, 3] + k * lps[:3, 0]]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*rows, *columns)]
        ds.PixelSpacing = [round(float(np.linalg.norm(lps[:3, 1])), 6), round(float(np.linalg.norm(lps[:3, 2])), 6)]
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = ((values[k] - INTERCEPT) / SLOPE).astype(np.uint16).tobytes()
        ds.save_as(folder / f"slice-{k:03d}.dcm", enforce_file_format=True)
    return folder


def scan() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (SLOPE * rng.integers(0, 1500, (6, 10, 12)) + INTERCEPT).astype(np.float32)  # HU from -1024


def test_a_series_reads_as_its_nifti_file_does(tmp_path):
    values, affine = scan(), oblique_affine()
    folder = write_series(tmp_path / "series", values, affine)
    write_volume(tmp_path / "scan.nii.gz", values, affine)
    nifti = read_volume(tmp_path / "scan.nii.gz", "test")
    array, spacing, dicom_affine = read_series(folder, "test")
    assert is_series(folder) and not is_series(tmp_path / "scan.nii.gz")
    assert array.dtype == np.float32 and np.array_equal(array, nifti.array) and array.min() < -1000
    assert spacing == pytest.approx(nifti.spacing, abs=1e-5) and spacing == pytest.approx((3.0, 0.8, 0.7), abs=1e-5)
    assert np.allclose(dicom_affine, nifti.affine, atol=1e-4)


def test_the_slices_order_comes_from_their_positions_not_the_file_names(tmp_path):
    values, affine = scan(), oblique_affine(degrees=-15)
    ordered = read_series(write_series(tmp_path / "a", values, affine), "test")
    shuffled = read_series(write_series(tmp_path / "b", values, affine, order=[3, 0, 5, 1, 4, 2]), "test")
    assert np.array_equal(ordered[0], shuffled[0]) and np.allclose(ordered[2], shuffled[2])


def test_bad_series_are_one_line_each(tmp_path):
    values, affine = scan(), oblique_affine()
    gap = write_series(tmp_path / "gap", values, affine, order=[0, 1, 2, 4, 5])
    mixed = write_series(tmp_path / "mixed", values, affine, order=[0, 1, 2])
    write_series(mixed, values, affine, order=[3, 4, 5])  # another SeriesInstanceUID
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    for folder, message in (
        (gap, "the slices are 3 mm apart but 6 mm after slice 3 of 5: a slice is missing"),
        (mixed, "holds 2 series (SeriesInstanceUID); put each series in a folder of its own"),
        (tmp_path / "empty", "holds no DICOM file; expected the slices of one series"),
    ):
        with pytest.raises(UserError) as err:
            read_series(folder, "data.csv: row 2, column 'scan'")
        text = str(err.value)
        assert text.startswith("data.csv: row 2, column 'scan': ") and message in text and "\n" not in text, text

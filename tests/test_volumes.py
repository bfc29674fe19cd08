"""Volumes from NIfTI and TIFF stacks: axes, spacing and affine as documented; each bad file a one-line UserError."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from cnn_factory.errors import UserError
from cnn_factory.volumes import (
    Volume,
    read_label_volume,
    read_volume,
    same_grid,
    stated_voxels,
    volume_bytes,
    write_volume,
)

WHERE = "data.csv: row 2, column 'scan'"
AFFINE = np.array([[0.8, 0, 0, -10], [0, 0.9, 0, 5], [0, 0, 3.0, 20], [0, 0, 0, 1]])  # (i, j, k) -> mm


def nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def marked(shape=(20, 18, 16), dtype=np.uint16) -> np.ndarray:
    """(i, j, k) data, 0 but for 7 at i=3, j=5, k=7."""
    data = np.zeros(shape, dtype)
    data[3, 5, 7] = 7
    return data


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_reads_as_depth_height_width_with_spacing_and_affine(tmp_path, dtype, suffix):
    scan = read_volume(nifti(tmp_path / f"scan{suffix}", marked(dtype=dtype)), WHERE)
    assert scan.array.shape == (1, 16, 18, 20) and scan.array.dtype == dtype and scan.shape == (16, 18, 20)
    assert scan.array[0, 7, 5, 3] == 7 and scan.array.sum() == 7  # (d, h, w) = (k, j, i)
    assert scan.spacing == pytest.approx((3.0, 0.9, 0.8))
    assert np.allclose(scan.affine @ [7, 5, 3, 1], AFFINE @ [3, 5, 7, 1])  # the same voxel, the same place


def test_a_fourth_nifti_axis_holds_channels(tmp_path):
    data = np.stack([marked(), 2 * marked()], axis=-1)  # (i, j, k, c)
    scan = read_volume(nifti(tmp_path / "two.nii.gz", data), WHERE, channels=2)
    assert scan.array.shape == (2, 16, 18, 20) and scan.array[1, 7, 5, 3] == 14


def test_nifti_spacing_in_microns_becomes_mm(tmp_path):
    image = nib.Nifti1Image(marked(), np.diag([500.0, 500.0, 2000.0, 1]))
    image.header.set_xyzt_units("micron")
    nib.save(image, tmp_path / "um.nii")
    scan = read_volume(tmp_path / "um.nii", WHERE)
    assert scan.spacing == pytest.approx((2.0, 0.5, 0.5)) and np.allclose(np.diag(scan.affine)[[0, 2]], [0, 0])
    assert scan.affine[2, 0] == pytest.approx(2.0) and scan.affine[0, 2] == pytest.approx(0.5)


def test_written_volumes_read_back_on_the_same_grid(tmp_path):
    scan = read_volume(nifti(tmp_path / "scan.nii.gz", marked(dtype=np.float32)), WHERE)
    rng = np.random.default_rng(0)
    for array in (rng.integers(0, 4, (16, 18, 20)).astype(np.uint8), rng.random((2, 16, 18, 20)).astype(np.float32)):
        write_volume(tmp_path / "out.nii.gz", array, scan.affine)
        back = read_volume(tmp_path / "out.nii.gz", WHERE)
        assert np.array_equal(back.array.reshape(array.shape), array) and np.allclose(back.affine, scan.affine)
        assert back.spacing == pytest.approx(scan.spacing)


def test_imagej_stacks_take_their_calibration(tmp_path):
    data = np.zeros((16, 2, 18, 20), np.uint16)  # (Z, C, Y, X)
    data[7, 1, 5, 3] = 9
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / 0.4, 1 / 0.5), metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "um"}
    )
    scan = read_volume(path, WHERE, channels=2)
    assert scan.array.shape == (2, 16, 18, 20) and scan.array[1, 7, 5, 3] == 9
    assert scan.spacing == pytest.approx((2e-3, 0.5e-3, 0.4e-3))
    assert np.allclose(scan.affine @ [7, 5, 3, 1], [3 * 0.4e-3, 5 * 0.5e-3, 7 * 2e-3, 1])


def test_uncalibrated_stacks_take_the_default_spacing_or_say_they_need_one(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.ones((16, 18, 20), np.float32))
    scan = read_volume(path, WHERE, default_spacing=(2.0, 1.0, 1.0))
    assert scan.array.shape == (1, 16, 18, 20) and scan.spacing == (2.0, 1.0, 1.0)
    with pytest.raises(UserError, match=r"has no voxel spacing"):
        read_volume(path, WHERE)


def test_label_volumes_are_integers(tmp_path):
    labels = read_label_volume(nifti(tmp_path / "l.nii.gz", marked(dtype=np.float32)), WHERE)  # whole-number floats
    assert labels.array.shape == (16, 18, 20) and labels.array.dtype == np.uint8 and labels.array[7, 5, 3] == 7


def one_line_error(call, *fragments: str) -> str:
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(WHERE), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def truncated(path: Path, keep: float = 0.5) -> Path:
    """Noise (so the cut falls in the voxels) cut short, or only its first bytes (the cut in the header)."""
    nifti(path, np.random.default_rng(0).integers(0, 1000, (20, 18, 16)).astype(np.uint16))
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path


def zero_spacing(path: Path) -> Path:
    """A header with pixdim[3] 0 and no sform (only a qform, which takes its scaling from pixdim)."""
    path = nifti(path.with_name("bad.nii"), marked())  # uncompressed, to edit its header
    raw = bytearray(path.read_bytes())
    raw[76 + 12 : 76 + 16] = struct.pack("<f", 0.0)  # pixdim[3] (8 floats from byte 76)
    raw[252:256] = struct.pack("<hh", 1, 0)  # qform_code 1 (scanner), sform_code 0
    path.write_bytes(bytes(raw))
    return path


def nan_voxels(path: Path) -> Path:
    data = marked(dtype=np.float32)
    data[0, 0, :2] = np.nan
    return nifti(path, data)


@pytest.mark.parametrize(
    ("make", "read", "fragments"),
    [
        (
            lambda p: nifti(p, np.zeros((20, 18), np.uint8)),
            read_volume,
            ("is a 2-D image of 18x20", "expected a volume"),
        ),
        (lambda p: nifti(p, np.zeros((20, 18, 1), np.uint8)), read_volume, ("2-D image (one slice",)),
        (lambda p: nifti(p, np.zeros((20, 18, 16, 2), np.uint8)), lambda p, w: read_volume(p, w, 1), ("4-D file",)),
        (lambda p: nifti(p, np.zeros((20, 18, 16, 2), np.uint8)), read_label_volume, ("4-D file", "label volume")),
        (lambda p: nifti(p, np.zeros((4, 20, 18, 16, 2), np.uint8)), read_volume, ("has 5 axes",)),
        (zero_spacing, read_volume, ("voxel spacing (0, 0.9, 0.8) mm", "size > 0")),
        (nan_voxels, read_volume, ("has 2 NaN voxels",)),
        (lambda p: nifti(p, marked(dtype=np.float32) / 2), read_label_volume, ("non-integer label values (e.g. 3.5)",)),
        (nan_voxels, read_label_volume, ("non-integer label values (e.g. nan)",)),
        (truncated, read_volume, ("ends early", "copy or export it again")),
        (lambda p: truncated(p, 0.01), read_volume, ("ends early",)),
        (lambda p: p.write_bytes(gzip.compress(b"not a header")) and p, read_volume, ("cannot be read as NIfTI",)),
    ],
)
@pytest.mark.parametrize("upload", [False, True])
def test_bad_volumes_say_where_and_what(tmp_path, make, read, fragments, upload):
    path = make(tmp_path / "bad.nii.gz")
    if upload:  # the file's bytes, as `cnn-factory serve` reads an upload
        one_line_error(lambda: read(path.read_bytes(), WHERE), "the uploaded file", *fragments)
    else:
        one_line_error(lambda: read(path, WHERE), str(path), *fragments)


@pytest.mark.parametrize("name", ["scan.nii", "scan.nii.gz", "stack.tif"])
def test_a_files_bytes_read_as_the_file_does(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".tif"):
        metadata = {"axes": "ZYX", "spacing": 3.0, "unit": "mm"}
        tifffile.imwrite(path, marked().T, imagej=True, resolution=(1 / 0.8, 1 / 0.9), metadata=metadata)
    else:
        nifti(path, marked())
    from_file, from_bytes = read_volume(path, WHERE), read_volume(path.read_bytes(), WHERE)
    assert np.array_equal(from_file.array, from_bytes.array) and from_file.spacing == from_bytes.spacing
    assert np.array_equal(from_file.affine, from_bytes.affine) and stated_voxels(path.read_bytes()) == 16 * 18 * 20
    one_line_error(lambda: read_volume(b"not a volume", WHERE), "the uploaded file is not a volume file")
    assert stated_voxels(b"not a volume") is None


def test_a_gzip_stream_is_unzipped_no_further_than_the_voxels_its_header_states():
    raw = volume_bytes(marked().T, np.eye(4), compress=False)  # 352 + 11,520 bytes
    stream = gzip.compress(raw + bytes(64 << 20), compresslevel=9)  # then 64 MiB of zeros, a gzip bomb's way
    cut = stream[:-64]  # ends in the zeros: unzipping it all fails, so a read that succeeds stopped before
    with pytest.raises(EOFError):
        gzip.decompress(cut)
    assert stated_voxels(cut) == 16 * 18 * 20
    scan = read_volume(cut, WHERE)
    assert scan.array.shape == (1, 16, 18, 20) and scan.array.sum() == 7


def test_a_single_tiff_page_is_not_a_volume(tmp_path):
    path = tmp_path / "page.tif"
    tifffile.imwrite(path, np.zeros((18, 20), np.uint8))
    one_line_error(lambda: read_volume(path, WHERE, default_spacing=(1.0, 1.0, 1.0)), "is a 2-D image (18x20)")


def test_label_volumes_must_lie_on_their_images_grid(tmp_path):
    scan = read_volume(nifti(tmp_path / "scan.nii.gz", marked()), WHERE)
    same_grid(
        scan, read_label_volume(nifti(tmp_path / "same.nii.gz", marked()), WHERE), tmp_path / "same.nii.gz", WHERE
    )
    smaller = Volume(scan.array[0, :15], scan.spacing, scan.affine)
    one_line_error(
        lambda: same_grid(scan, smaller, tmp_path / "l.nii.gz", WHERE), "15x18x20 voxels, its image 16x18x20"
    )
    moved = Volume(scan.array[0], scan.spacing, scan.affine + np.eye(4)[[3]].T[:, [0] * 4] * 0 + _shifted())
    one_line_error(lambda: same_grid(scan, moved, tmp_path / "l.nii.gz", WHERE), "affines differ", "resample")


def _shifted() -> np.ndarray:
    shift = np.zeros((4, 4))
    shift[0, 3] = 1.5  # 1.5 mm along x
    return shift

"""DICOM series read as volumes: the same array, spacing and affine as the equivalent NIfTI file,
whatever the files' order, and one line for each kind of bad series."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnn_factory.config import parse_params
from cnn_factory.data.prepare import prepare
from cnn_factory.data.volumes_example import make_volume_example
from cnn_factory.dicom import is_series
from cnn_factory.dicom_scans import read_segmentation, read_series, write_series
from cnn_factory.errors import UserError
from cnn_factory.volumes import read_volume, spacing_affine, write_volume
from tests.conftest import SIZE, tiny_params
from tests.test_cli import cli
from tests.test_volume_pipeline import volume_params

SLOPE, INTERCEPT = 2.0, -1024.0
# the patient and study attributes of a scanner's images, which highdicom requires of a SEG's sources
STUDY = {"StudyInstanceUID": "1.2.3", "PatientID": "P", "PatientName": "A^B", "StudyDate": "20260101"}
STUDY |= {"StudyTime": "000000", "StudyID": "1", "SeriesNumber": 1, "Manufacturer": "x"}
STUDY |= dict.fromkeys(("PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName"), "")


def oblique_affine(spacing=(3.0, 0.8, 0.7), degrees=30.0, origin=(-40.0, 25.0, 12.5)) -> np.ndarray:
    """(d, h, w) -> RAS+ mm: width and height rotated about z, depth along z, anisotropic."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    affine = np.eye(4)
    affine[:3, 2] = np.array([c, s, 0]) * spacing[2]  # along a row (width)
    affine[:3, 1] = np.array([-s, c, 0]) * spacing[1]  # down a column (height)
    affine[:3, 0] = np.array([0, 0, 1]) * spacing[0]  # slice to slice (depth)
    affine[:3, 3] = origin
    return affine


def scan() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (SLOPE * rng.integers(0, 1500, (6, 10, 12)) + INTERCEPT).astype(np.float32)  # HU from -1024


def test_a_series_reads_as_its_nifti_file_does(tmp_path):
    values, affine = scan(), oblique_affine()
    folder = write_series(tmp_path / "series", values, affine, SLOPE, INTERCEPT)
    write_volume(tmp_path / "scan.nii.gz", values, affine)
    nifti = read_volume(tmp_path / "scan.nii.gz", "test")
    array, spacing, dicom_affine = read_series(folder, "test")
    assert is_series(folder) and not is_series(tmp_path / "scan.nii.gz")
    assert np.array_equal(array, nifti.array) and array.min() < -1000 and array.dtype == np.int16  # whole HU values
    assert spacing == pytest.approx(nifti.spacing, abs=1e-5) and spacing == pytest.approx((3.0, 0.8, 0.7), abs=1e-5)
    assert np.allclose(dicom_affine, nifti.affine, atol=1e-4)


def test_the_slices_order_comes_from_their_positions_not_the_file_names(tmp_path):
    values, affine = scan(), oblique_affine(degrees=-15)
    ordered = read_series(write_series(tmp_path / "a", values, affine, SLOPE, INTERCEPT), "test")
    folder = write_series(tmp_path / "b", values, affine, SLOPE, INTERCEPT)
    files = sorted(folder.iterdir())
    for k, path in zip([3, 0, 5, 1, 4, 2], files):  # names no longer in the slices' order
        path.rename(folder / f"{k}.tmp")
    for path in folder.iterdir():
        path.rename(path.with_suffix(""))
    shuffled = read_series(folder, "test")
    assert sorted(p.name for p in folder.iterdir()) == [str(k) for k in range(6)]
    assert np.array_equal(ordered[0], shuffled[0]) and np.array_equal(ordered[2], shuffled[2])
    assert np.array_equal(ordered[0][0], values) and not np.array_equal(values, values[[3, 0, 5, 1, 4, 2]])


def test_bad_series_are_one_line_each(tmp_path):
    values, affine = scan(), oblique_affine()
    gap = write_series(tmp_path / "gap", values, affine, SLOPE, INTERCEPT)
    (gap / "slice-003.dcm").unlink()
    mixed = write_series(tmp_path / "mixed", values, affine, SLOPE, INTERCEPT)
    other = write_series(tmp_path / "other", values + SLOPE, affine, SLOPE, INTERCEPT)  # another SeriesInstanceUID
    for k in (3, 4, 5):
        shutil.copy(other / f"slice-{k:03d}.dcm", mixed)
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


def test_prepare_reads_dicom_series_in_a_csv_as_it_reads_their_nifti_files(tmp_path):
    """The volume example's scans as NIfTI files and as DICOM series (the CSV naming their folders):
    prepare writes the same arrays, byte for byte."""
    nifti, dicom = tmp_path / "nifti", tmp_path / "dicom"
    make_volume_example(nifti, rows=8, size=(8, 16, 16), seed=3)
    affine = spacing_affine((3.0, 0.75, 0.75), origin=(-6.0, 4.5, 30.0))  # spacings DICOM's decimals hold exactly
    for path in sorted(nifti.rglob("*.nii.gz")):  # every scan and label volume on that grid
        write_volume(path, read_volume(path, "test").array[0], affine)
    shutil.copytree(nifti, dicom)
    for path in sorted((dicom / "images").glob("*.nii.gz")):
        scan = read_volume(path, "test").array[0].astype(np.float32)
        write_series(dicom / "images" / path.name.removesuffix(".nii.gz"), scan, affine, slope=1.0, intercept=0.0)
        path.unlink()
    csv = (dicom / "data.csv").read_text()
    (dicom / "data.csv").write_text(re.sub(r"images/(\d+)\.nii\.gz", r"images/\1", csv))
    paired = tmp_path / "paired.csv"  # make-csv pairs a series' folder with the label volume of its name
    cli("make-csv", str(dicom / "images"), str(dicom / "labels"), "--out", str(paired), cwd=tmp_path)
    assert paired.read_text().splitlines()[1] == "dicom/images/0000,dicom/labels/0000.nii.gz"
    prepared, arrays = prepare_both(nifti, dicom)
    for path in arrays:
        assert (prepared["nifti"] / path).read_bytes() == (prepared["dicom"] / path).read_bytes(), path


def prepare_both(nifti: Path, dicom: Path) -> tuple[dict[str, Path], list[Path]]:
    """Each data set prepared into its own prepared/ (volume_params); the arrays' paths below it."""
    prepared = {}
    for name, folder in (("nifti", nifti), ("dicom", dicom)):
        prepare(parse_params(volume_params(folder)), folder / "prepared", folder / "cache", workers=1)
        prepared[name] = folder / "prepared"
    arrays = sorted(
        p.relative_to(prepared["nifti"]) for p in prepared["nifti"].rglob("*") if p.suffix in (".npy", ".u8")
    )
    assert len(arrays) > 10
    return prepared, arrays


def in_a_study(series: Path) -> list:
    """The slices of `series` (as write_series writes them, in order) with the patient and study
    attributes of a scanner's series, which highdicom requires."""
    import pydicom

    slices = sorted((pydicom.dcmread(p) for p in sorted(series.iterdir())), key=lambda s: int(s.InstanceNumber))
    for s in slices:
        for key, value in (STUDY | {"FrameOfReferenceUID": "1.2.3.4"}).items():
            setattr(s, key, value)
        s.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    return slices


def test_a_multi_frame_dicom_scan_reads_as_the_series_it_was_made_from(tmp_path):
    """An Enhanced CT file (all slices in one file, their positions and rescale in functional groups),
    as highdicom converts a series: the same values, spacing and affine as the series, from the
    file and from its bytes (an upload to serve)."""
    import highdicom as hd

    folder = write_series(tmp_path / "series", scan(), oblique_affine(), SLOPE, INTERCEPT)
    uid = hd.UID()
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(in_a_study(folder), uid, 3, hd.UID(), 1)
    enhanced.save_as(tmp_path / "scan.dcm")
    array, spacing, affine = read_series(folder, "test")
    for source in (tmp_path / "scan.dcm", (tmp_path / "scan.dcm").read_bytes()):
        volume = read_volume(source, "test")
        assert np.array_equal(volume.array, array) and volume.array.dtype == np.int16 and volume.spacing == spacing
        assert np.allclose(volume.affine, affine, atol=1e-9)
    (tmp_path / "slice.dcm").write_bytes(next(folder.iterdir()).read_bytes())  # one slice: no volume
    with pytest.raises(UserError, match=r"^row 2: .*slice\.dcm cannot be read as a multi-frame DICOM scan \("):
        read_volume(tmp_path / "slice.dcm", "row 2")


def segmentation(
    series: Path, masks: np.ndarray, path: Path, kind: str = "BINARY", names: tuple[str, ...] = ()
) -> Path:
    """A DICOM SEG of `series` as annotation tools write it (highdicom): segment k + 1 the (D, H, W)
    mask `masks[k]`, labelled names[k] (else "segment k + 1"), in the order read_series gives the
    slices; frames only where a segment is."""
    pixels = np.moveaxis(masks, 0, -1).astype(np.float32 if kind == "FRACTIONAL" else bool)
    return seg_file(in_a_study(series), pixels, path, kind, names)


def seg_file(sources: list, pixels: np.ndarray, path: Path, kind: str = "BINARY", names: tuple[str, ...] = ()) -> Path:
    """highdicom's Segmentation of `sources` (datasets) with `pixels` (frames, H, W, segments), saved at `path`."""
    import highdicom as hd

    category = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure")
    neoplasm = hd.sr.CodedConcept("108369006", "SCT", "Neoplasm")
    algorithm = hd.seg.SegmentAlgorithmTypeValues.MANUAL
    described = [
        hd.seg.SegmentDescription(k, names[k - 1] if names else f"segment {k}", category, neoplasm, algorithm)
        for k in range(1, pixels.shape[-1] + 1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=getattr(hd.seg.SegmentationTypeValues, kind),
        segment_descriptions=described,
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="cnn-factory tests",
        manufacturer_model_name="highdicom",
        software_versions="1",
        device_serial_number="1",
        omit_empty_frames=True,
    )
    seg.save_as(path)
    return path


def test_prepare_reads_a_dicom_seg_as_it_reads_the_label_volumes_it_was_made_from(tmp_path):
    """The volume example's scans as DICOM series with their label volumes saved as DICOM SEG files
    (segment k where the volume holds k; frames only where a segment is; one FRACTIONAL, one LABELMAP): prepare
    writes the same arrays, byte for byte, as from the NIfTI scans and label volumes."""
    nifti, dicom = tmp_path / "nifti", tmp_path / "dicom"
    make_volume_example(nifti, rows=8, size=(8, 16, 16), seed=3)
    affine = spacing_affine((3.0, 0.75, 0.75), origin=(-6.0, 4.5, 30.0))
    for path in sorted(nifti.rglob("*.nii.gz")):
        write_volume(path, read_volume(path, "test").array[0], affine)
    shutil.copytree(nifti, dicom)
    for path in sorted((dicom / "images").glob("*.nii.gz")):
        name = path.name.removesuffix(".nii.gz")
        series = write_series(dicom / "images" / name, read_volume(path, "test").array[0], affine)
        labels = read_volume(dicom / "labels" / path.name, "test").array[0]
        masks = np.stack([labels == k for k in range(1, 3)])
        kind = {"0001": "FRACTIONAL", "0002": "LABELMAP"}.get(name, "BINARY")
        segmentation(series, masks, dicom / "labels" / f"{name}.dcm", kind)
        path.unlink()
        (dicom / "labels" / path.name).unlink()
    csv = re.sub(r"images/(\d+)\.nii\.gz", r"images/\1", (dicom / "data.csv").read_text())
    (dicom / "data.csv").write_text(re.sub(r"labels/(\d+)\.nii\.gz", r"labels/\1.dcm", csv))
    prepared, arrays = prepare_both(nifti, dicom)
    for path in arrays:
        assert (prepared["nifti"] / path).read_bytes() == (prepared["dicom"] / path).read_bytes(), path


def test_make_csv_pairs_seg_files_and_proposes_an_output_per_segment(tmp_path):
    """Segment numbers are each file's own: make-csv names the outputs by the segments' labels, and
    warns where files give one number different labels."""
    masks = np.zeros((2, *scan().shape), bool)
    masks[0, 1:5, 2:9, 2:10], masks[1, 2:4, 4:6, 4:6] = True, True
    (tmp_path / "labels").mkdir()
    for case, names in (("a", ("liver", "liver tumour")), ("b", ("liver", "liver tumour")), ("c", ("lesion", "x"))):
        series = write_series(tmp_path / "scans" / case, scan(), oblique_affine(), SLOPE, INTERCEPT)
        segmentation(series, masks, tmp_path / "labels" / f"{case}.dcm", names=names)
    result = cli("make-csv", "scans", "labels", "--out", "data.csv", cwd=tmp_path)
    assert (tmp_path / "data.csv").read_text().splitlines()[1:] == ["scans/a,labels/a.dcm", "scans/b,labels/b.dcm",
                                                                    "scans/c,labels/c.dcm"]  # fmt: skip
    assert "  liver: {type: segmentation, column: labels, label: 1}" in result.stdout
    assert "  liver_tumour: {type: segmentation, column: labels, label: 2}" in result.stdout
    assert "warning: segment 1 is 'liver' in " in result.stderr and "; 'lesion' in " in result.stderr


def test_overlapping_segments_keep_the_smaller_and_a_seg_of_another_grid_is_refused(tmp_path):
    values = scan()
    series = write_series(tmp_path / "series", values, oblique_affine(), SLOPE, INTERCEPT)
    _, _, affine = read_series(series, "test")
    masks = np.zeros((2, *values.shape), bool)  # an organ, and a tumour inside it
    masks[0, 1:5, 2:9, 2:10], masks[1, 2:4, 4:6, 4:6] = True, True
    seg = segmentation(series, masks, tmp_path / "organ.dcm")
    expected = masks[0].astype(np.uint8)
    expected[masks[1]] = 2  # where they overlap, the smaller segment
    assert np.array_equal(read_segmentation(seg, values.shape, affine, "test"), expected)
    shifted = write_series(tmp_path / "shifted", values, oblique_affine(origin=(-40.0, 25.0, 13.0)), SLOPE, INTERCEPT)
    with pytest.raises(UserError, match=r"^row 2: .*organ\.dcm: a frame lies off the voxels of the row's series"):
        read_segmentation(seg, values.shape, read_series(shifted, "test")[2], "row 2")


def image_segmentation(image: Path, masks: np.ndarray, path: Path) -> Path:
    """A DICOM SEG of a 2-D DICOM image (an X-ray: no slice position) as annotation tools write it
    (highdicom): segment k + 1 the (H, W) mask `masks[k]`; its frames reference the image alone."""
    import pydicom

    source = pydicom.dcmread(image)
    for key in ("ImagePositionPatient", "ImageOrientationPatient", "FrameOfReferenceUID", "SliceThickness"):
        if key in source:
            delattr(source, key)
    for key, value in STUDY.items():
        setattr(source, key, value)
    return seg_file([source], np.moveaxis(masks, 0, -1)[None].astype(bool), path)


def test_prepare_reads_a_dicom_seg_of_an_xray_as_it_reads_the_label_map_it_was_made_from(example_dir, tmp_path):
    """The example's images as DX files, their label maps once as PNG and once as DICOM SEG files
    (segment k where the map holds k): prepare writes the same arrays byte for byte. Overlapping
    segments keep the smaller; a SEG of another image's size is one line naming the row."""
    from PIL import Image

    from cnn_factory.data.grids import Scan, grid_for

    rows = (example_dir / "data.csv").read_text().splitlines()
    seg_rows = [rows[0]]
    for row in rows[1:]:
        image, labels, *rest = row.split(",")
        grey = np.asarray(Image.open(example_dir / image).convert("L"))
        xray(
            example_dir / image.replace(".png", ".dcm"),
            grey.astype(np.uint16) * 16,
            window=(2048, 4096),
            photometric="MONOCHROME2",
        )
        label_map = np.asarray(Image.open(example_dir / labels))
        seg = labels.replace(".png", ".dcm")
        image_segmentation(
            example_dir / image.replace(".png", ".dcm"),
            np.stack([label_map == k for k in (1, 2, 3)]),
            example_dir / seg,
        )
        seg_rows.append(",".join([image.replace(".png", ".dcm"), seg, *rest]))
    (example_dir / "png.csv").write_text("\n".join(r.replace(".png,", ".dcm,", 1) for r in rows) + "\n")
    (example_dir / "seg.csv").write_text("\n".join(seg_rows) + "\n")
    prepared = {}
    for name in ("png", "seg"):
        params = tiny_params()
        params["data"].update(csv=str(example_dir / f"{name}.csv"), root=str(example_dir))
        params["inputs"]["image"]["channels"] = 1
        prepare(parse_params(params), tmp_path / name, None, workers=1)
        prepared[name] = sorted(p for p in (tmp_path / name).rglob("*") if p.suffix in (".npy", ".u8"))
    assert len(prepared["png"]) > 10
    for png, seg in zip(*prepared.values(), strict=True):
        assert png.relative_to(tmp_path / "png") == seg.relative_to(tmp_path / "seg")
        assert png.read_bytes() == seg.read_bytes(), png

    image = example_dir / rows[1].split(",")[0].replace(".png", ".dcm")
    masks = np.zeros((2, *SIZE), bool)  # an organ, and a lesion inside it
    masks[0, 2:12, 2:12], masks[1, 4:6, 4:7] = True, True
    expected = masks[0].astype(np.uint8)
    expected[masks[1]] = 2
    grid = grid_for(parse_params(tiny_params()).first_input)
    on = Scan(np.zeros((1, *SIZE)), tuple(SIZE), (1.0, 1.0))
    overlapping = image_segmentation(image, masks, tmp_path / "overlapping.dcm")
    assert np.array_equal(grid.read_labels(overlapping, "row 2", colours=False, on=on).array, expected)
    small = Scan(np.zeros((1, 8, 8)), (8, 8), (1.0, 1.0))
    with pytest.raises(
        UserError, match=r"^row 2: .*overlapping\.dcm: a frame of 16x16 pixels for the row's image of 8x8"
    ):
        grid.read_labels(overlapping, "row 2", colours=False, on=small)


def test_the_volume_example_written_as_dicom_prepares_as_its_nifti_files_do(tmp_path):
    """example.format dicom against nifti, on the generator's own grids (float32 NIfTI headers, which
    DICOM's 16-character decimals hold to 1e-11 mm): prepare resamples to the same target spacing and
    writes every array byte for byte the same; each scan's own spacing (spacing.npy, the millimetres
    evaluate scores in) is the one thing that differs, by under 1e-11 mm."""
    for name in ("nifti", "dicom"):
        make_volume_example(tmp_path / name, rows=8, size=(8, 16, 16), seed=3, format=name)
    prepared, arrays = prepare_both(tmp_path / "nifti", tmp_path / "dicom")
    manifests = [json.loads((prepared[k] / "manifest.json").read_text()) for k in ("nifti", "dicom")]
    assert manifests[0]["spacing"] == manifests[1]["spacing"] and len(manifests[0]["spacing"]) == 3
    spacings = [p for p in arrays if p.name == "spacing.npy"]
    assert len(spacings) == 3  # one per split
    for path in arrays:
        if path in spacings:
            ours, theirs = (np.load(prepared[k] / path) for k in ("dicom", "nifti"))
            assert ours.shape == theirs.shape and np.allclose(ours, theirs, rtol=0, atol=1e-11), path
        else:
            assert (prepared["nifti"] / path).read_bytes() == (prepared["dicom"] / path).read_bytes(), path


def test_predict_on_a_series_writes_masks_on_its_grid_as_on_its_nifti_file(served_scans, tmp_path):
    scan = read_volume(served_scans["folder"] / "oblique.nii.gz", "test")
    series = write_series(tmp_path / "oblique", scan.array[0].astype(np.float32), scan.affine, slope=1.0, intercept=0.0)
    for source, out in ((series, "dicom"), (served_scans["folder"] / "oblique.nii.gz", "nifti")):
        cli("predict", str(served_scans["model"]), str(source), "--out", str(tmp_path / out), cwd=tmp_path)
    for mask in ("organ", "tumour"):
        ours, theirs = (read_volume(tmp_path / k / mask / "oblique.nii.gz", "test") for k in ("dicom", "nifti"))
        assert ours.shape == scan.shape and np.allclose(ours.affine, scan.affine, atol=1e-4)
        assert np.array_equal(ours.array, theirs.array) and ours.array.any()


def xray(path: Path, stored: np.ndarray, window: tuple[float, float] | None, photometric: str = "MONOCHROME1") -> Path:
    """A DX image file as X-ray detectors write them: 12-bit unsigned values in 16-bit words."""
    from pydicom.uid import DigitalXRayImageStorageForPresentation

    from cnn_factory.dicom_scans import _slice

    dataset = _slice(stored.astype(np.int16), "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2")
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.Modality, dataset.PhotometricInterpretation = "DX", photometric
    dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 12, 11, 0
    dataset.PixelData = np.ascontiguousarray(stored, "<u2").tobytes()
    if window:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_a_dicom_image_file_reads_through_its_window_as_viewers_show_it(tmp_path):
    """An X-ray's 12 bits reach 0..255 through its VOI window (values outside it clip), MONOCHROME1
    inverted (its lowest value shown white); without a window, the image's own range; the file's bytes (an
    upload) read alike; a label map's stored values come as they are."""
    from cnn_factory.config import input_spec
    from cnn_factory.data.grids import read_input
    from cnn_factory.images import read_image

    stored = np.array([[0, 1000, 1500], [2000, 2500, 4095]], np.uint16)
    path = xray(tmp_path / "chest", stored, window=(2000.5, 1001))  # 1500..2500 span 0..255 (PS3.3 C.11.2.1.2.1)
    expected = np.round((1 - np.clip((stored - 1500.0) / 1000, 0, 1)) * 255)  # MONOCHROME1: low values bright
    assert np.array_equal(read_image(path), expected) and read_image(path).dtype == np.uint8
    assert np.array_equal(read_image(path.read_bytes()), expected)
    assert np.array_equal(read_input(path, input_spec("image", "image", (2, 3), 1))[0], expected)
    assert np.array_equal(read_image(path, indices=True), stored)

    plain = xray(tmp_path / "plain.dcm", stored, window=None, photometric="MONOCHROME2")
    assert np.array_equal(read_image(plain), np.round(stored / 4095 * 255))


def test_a_dicom_file_that_cannot_be_an_image_says_why(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from cnn_factory.images import read_pixels

    path = xray(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16), window=None)
    dataset = pydicom.dcmread(path)
    dataset.NumberOfFrames = 2
    dataset.PixelData = dataset.PixelData * 2
    dataset.save_as(tmp_path / "frames.dcm")
    with pytest.raises(ValueError, match=r"^holds 2 frames \(a multi-frame file\); expected one image per file$"):
        read_pixels(tmp_path / "frames.dcm")
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit  # compressed, its data no JPEG: not decodable
    dataset.PixelData = encapsulate([b"\xff\xd8 not a JPEG"])
    dataset.save_as(tmp_path / "compressed.dcm")
    with pytest.raises(ValueError, match=r"^cannot be read as a DICOM image \(.*\); export it uncompressed$"):
        read_pixels(tmp_path / "compressed.dcm")


def test_rle_and_jpeg_2000_compressed_dicom_images_read_as_the_uncompressed_file(tmp_path):
    """RLE and JPEG 2000, which pydicom decodes itself and through Pillow's OpenJPEG: the same pixels
    as the uncompressed file."""
    import io

    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, RLELossless

    from cnn_factory.images import read_image

    stored = (np.arange(24 * 32).reshape(24, 32) * 5 % 4096).astype(np.uint16)
    plain = read_image(xray(tmp_path / "plain.dcm", stored, window=(2048, 4096)))
    dataset = pydicom.dcmread(tmp_path / "plain.dcm")
    dataset.compress(RLELossless)
    dataset.save_as(tmp_path / "rle.dcm")
    codestream = io.BytesIO()
    Image.fromarray(stored).save(codestream, format="JPEG2000", irreversible=False, no_jp2=True)
    dataset = pydicom.dcmread(tmp_path / "plain.dcm")
    dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless
    dataset.PixelData = encapsulate([codestream.getvalue()])
    dataset.save_as(tmp_path / "j2k.dcm")
    for name in ("rle.dcm", "j2k.dcm"):
        assert pydicom.dcmread(tmp_path / name).file_meta.TransferSyntaxUID.is_compressed
        assert np.array_equal(read_image(tmp_path / name), plain)


def transcoded(source: Path, target: Path, syntax: str) -> Path:
    """`source` written again with its pixel data compressed as `syntax` (a gdcm.TransferSyntax name),
    as a PACS exports it: GDCM encodes what pydicom decodes with it."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return target


@pytest.mark.parametrize("syntax", ["JPEGLosslessProcess14_1", "JPEGLosslessProcess14", "JPEGLSLossless"])
def test_jpeg_lossless_and_jpeg_ls_dicom_read_as_the_uncompressed_files(tmp_path, syntax):
    """The lossless compressions CT and MR archives export (JPEG Lossless, the most common, and
    JPEG-LS), decoded through GDCM: an image file and a series read as their uncompressed files."""
    import pydicom

    from cnn_factory.images import read_image

    stored = (np.arange(24 * 32).reshape(24, 32) * 5 % 4096).astype(np.uint16)
    plain = xray(tmp_path / "plain.dcm", stored, window=(2048, 4096))
    image = transcoded(plain, tmp_path / "image.dcm", syntax)
    assert pydicom.dcmread(image).file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(read_image(image), read_image(plain))
    folder = write_series(tmp_path / "series", scan(), oblique_affine(), SLOPE, INTERCEPT)
    uncompressed = read_series(folder, "test")
    for path in sorted(folder.iterdir()):
        transcoded(path, path, syntax)
    array, spacing, affine = read_series(folder, "test")
    assert np.array_equal(array, uncompressed[0]) and spacing == uncompressed[1]
    assert np.array_equal(affine, uncompressed[2])


def test_make_csv_pairs_dicom_files_named_by_their_uid_or_without_a_suffix(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("1.2.826.0.1.3680043.8.498.11", "IM0002"):  # as PACS exports name them
        xray(tmp_path / "images" / name, np.zeros((4, 4), np.uint16), window=None)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels" / f"{name}.png")
    (tmp_path / "images" / "README").write_text("not an image")
    cli("make-csv", "images", "labels", "--out", "data.csv", cwd=tmp_path)
    assert (tmp_path / "data.csv").read_text().splitlines() == [
        "image,labels",
        "images/1.2.826.0.1.3680043.8.498.11,labels/1.2.826.0.1.3680043.8.498.11.png",
        "images/IM0002,labels/IM0002.png",
    ]


def test_predict_names_masks_after_a_dicom_files_whole_uid(tmp_path):
    """UIDs differ in their last dot-separated number: read as a suffix, two files' masks would
    share a name (predict refuses that); a name without an image's suffix is kept whole."""
    from cnn_factory.images import split_name
    from cnn_factory.predict import collect_images

    names = ["1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12"]
    for name in names:
        xray(tmp_path / name, np.zeros((4, 4), np.uint16), window=None)
    items = collect_images([str(tmp_path / "1.2.*")], {"image": "image"})
    assert [split_name(item.files["image"]) for item in items] == [(name, "") for name in names]
    assert split_name(tmp_path / "a.PNG") == ("a", ".png")
    assert split_name(tmp_path / "scan.nii.gz") == ("scan", ".nii.gz")


PATIENT_COLUMN = "patient"


def test_make_csv_writes_dicom_images_patient_ids_for_the_split_by_patient(tmp_path):
    """Several X-rays of one patient must land in one split: make-csv writes each DICOM image's
    PatientID into a column the planner proposes as data.split.group; not where they name one patient."""
    import pydicom
    from PIL import Image

    from cnn_factory.plan.fingerprint import OWNER_WORDS

    assert PATIENT_COLUMN in OWNER_WORDS  # what cnn-factory plan proposes as data.split.group
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name, patient in (("a", "P1"), ("b", "P1"), ("c", "P2"), ("d", "P3")):
        path = xray(tmp_path / "images" / f"{name}.dcm", np.zeros((4, 4), np.uint16), window=None)
        dataset = pydicom.dcmread(path)
        dataset.PatientID = patient
        dataset.save_as(path)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels" / f"{name}.png")
    out = cli("make-csv", "images", "labels", "--out", "data.csv", cwd=tmp_path).stdout
    lines = (tmp_path / "data.csv").read_text().splitlines()
    assert lines[0] == "image,labels,patient"
    assert [line.split(",")[-1] for line in lines[1:]] == ["P1", "P1", "P2", "P3"]
    assert "column 'patient' holds each image's DICOM PatientID (3 patients); data.split.group: patient" in out

    for name in "abcd":  # anonymised: one PatientID for all, which would put every image in one split
        dataset = pydicom.dcmread(tmp_path / "images" / f"{name}.dcm")
        dataset.PatientID = "ANONYMOUS"
        dataset.save_as(tmp_path / "images" / f"{name}.dcm")
    cli("make-csv", "images", "labels", "--out", "data.csv", cwd=tmp_path)
    assert (tmp_path / "data.csv").read_text().splitlines()[0] == "image,labels"


def test_make_csv_writes_dicom_images_mm_per_pixel_for_measures_in_mm(tmp_path):
    """A measure in mm needs each image's pixel size (spacing_column): make-csv takes it from the
    header, by DICOM's order (PixelSpacing, else ImagerPixelSpacing over the magnification, else an
    ultrasound region's cm), and writes none where a pixel is not square."""
    import pydicom
    from PIL import Image
    from pydicom.dataset import Dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()

    def image(name: str, **tags) -> Path:
        path = xray(tmp_path / "images" / f"{name}.dcm", np.zeros((4, 4), np.uint16), window=None)
        dataset = pydicom.dcmread(path)
        for tag, value in tags.items():
            setattr(dataset, tag, value)
        dataset.save_as(path)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels" / f"{name}.png")
        return path

    region = Dataset()
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.03
    image("a", PixelSpacing=[0.2, 0.2], ImagerPixelSpacing=[0.5, 0.5])
    image("b", ImagerPixelSpacing=[0.15, 0.15], EstimatedRadiographicMagnificationFactor=1.5)
    image("c", SequenceOfUltrasoundRegions=[region])
    out = cli("make-csv", "images", "labels", "--out", "data.csv", cwd=tmp_path).stdout
    lines = (tmp_path / "data.csv").read_text().splitlines()
    assert lines[0] == "image,labels,pixel_mm"
    assert [line.split(",")[-1] for line in lines[1:]] == ["0.2", "0.1", "0.3"]
    assert "column 'pixel_mm' holds each image's mm per pixel from its DICOM header; " in out
    assert "spacing_column: pixel_mm" in out

    image("d", PixelSpacing=[0.2, 0.1])  # not square: a measure's one mm per pixel would be wrong
    cli("make-csv", "images", "labels", "--out", "data.csv", cwd=tmp_path)
    assert (tmp_path / "data.csv").read_text().splitlines()[0] == "image,labels"

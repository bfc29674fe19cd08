"""benchmarks/real.py: DRIVE's and HC18's conversions into a CSV and label maps, on tiny generated folders."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from benchmarks.real import HC, drive_table, hc18_table
from cnn_factory.images import read_image


def fake_drive(root, part: str, cases: list[str], suffix: str) -> None:
    """DRIVE's layout: RGB TIFF images, the first observer's vessels and the FOV as 0/255 GIFs."""
    rng = np.random.default_rng(0)
    for folder in ("images", "1st_manual", "mask"):
        (root / part / folder).mkdir(parents=True, exist_ok=True)
    for case in cases:
        rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / part / "images" / f"{case}_{suffix}.tif")
        vessels = np.zeros((12, 10), np.uint8)
        vessels[3:9, 4] = 255
        Image.fromarray(vessels).save(root / part / "1st_manual" / f"{case}_manual1.gif")
        fov = np.zeros((12, 10), np.uint8)
        fov[1:11, 1:9] = 255
        Image.fromarray(fov).save(root / part / "mask" / f"{case}_{suffix}_mask.gif")


def test_drive_table_writes_csv_label_maps_and_splits(tmp_path):
    src, out = tmp_path / "DRIVE", tmp_path / "converted"
    fake_drive(src, "training", ["21", "22", "23", "24"], "training")
    fake_drive(src, "test", ["01", "02"], "test")

    rows = drive_table(src, out, val=1)

    with open(out / "data.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert table == rows
    assert [(r["image"], r["split"]) for r in table] == [
        ("images/21.png", "train"),
        ("images/22.png", "train"),
        ("images/23.png", "train"),
        ("images/24.png", "val"),
        ("images/01.png", "test"),
        ("images/02.png", "test"),
    ]
    labels = read_image(out / table[0]["labels"])
    assert labels.shape == (12, 10) and set(np.unique(labels)) == {0, 1}
    assert labels[3:9, 4].all() and labels.sum() == 6  # the vessels, label value 1
    fov = read_image(out / table[4]["fov"])
    assert fov.sum() == 80 and fov[0].sum() == 0
    image = read_image(out / table[4]["image"])
    assert image.shape == (12, 10, 3) and image.dtype == np.uint8


def test_hc18_table_keeps_a_patients_images_in_one_split_with_their_pixel_size(tmp_path):
    """HC18's layout: grey images, the head a filled white ellipse in an RGB annotation, and a CSV
    of each image's pixel size and circumference; NNN_2HC is patient NNN's second image."""
    from cnn_factory.scores.measures import measure

    src, out = tmp_path / "HC18", tmp_path / "converted"
    (src / "training_set").mkdir(parents=True)
    yy, xx = np.mgrid[:60, :80]
    head = ((yy - 30) / 20) ** 2 + ((xx - 40) / 30) ** 2 <= 1  # semi-axes 20 and 30 pixels
    lines = ["filename,pixel size(mm),head circumference (mm)"]
    for name in ("000_HC", "000_2HC", "011_HC", "012_HC"):
        Image.fromarray(np.full((60, 80), 90, np.uint8)).save(src / "training_set" / f"{name}.png")
        annotation = np.repeat(head[..., None] * np.uint8(255), 3, axis=2)
        Image.fromarray(annotation).save(src / "training_set" / f"{name}_Annotation.png")
        lines.append(f"{name}.png,0.1,15.87")
    (src / "training_set_pixel_size_and_HC.csv").write_text("\n".join(lines) + "\n")

    rows = hc18_table(src, out)

    with open(out / "data.csv", newline="") as f:
        assert list(csv.DictReader(f)) == rows
    assert [(r["patient"], r["split"], r["pixel_mm"]) for r in rows] == [
        ("000", "test", "0.1"),
        ("000", "test", "0.1"),
        ("011", "val", "0.1"),
        ("012", "train", "0.1"),
    ]
    labels = read_image(out / rows[0]["labels"])
    assert np.array_equal(labels, head.astype(np.uint8))
    assert read_image(out / rows[0]["image"]).shape == (60, 80)
    # the measure the benchmark takes: Ramanujan's perimeter of a 2 x 3 mm ellipse is 15.87 mm
    assert measure(HC["measure"], labels > 0, (0.1, 0.1), HC["components"]) == pytest.approx(15.87, rel=0.02)

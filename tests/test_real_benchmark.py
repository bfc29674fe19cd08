"""benchmarks/real.py: DRIVE's conversion into a CSV and label maps, on a tiny generated DRIVE folder."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from benchmarks.real import drive_table
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

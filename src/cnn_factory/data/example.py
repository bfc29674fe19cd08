"""The built-in example data set, generated deterministically (stage `example`: stages/make_example.py).

Each RGB image shows 2-3 shapes on a noisy colour gradient. Shapes get random colours, so no
colour threshold separates them; each kind has its own texture too (discs striped, squares
checkered, triangles plain), which a small CNN learns in a few epochs on 2 CPU cores where
outline alone took three times as long. The label map holds 0 (background), 1 (disc),
2 (square) and 3 (triangle). `data.csv` names the image, the label map, the shape kind
covering the most pixels (`majority`, chosen with a clear margin) and the discs' area in pixels
(`round_px`: the truth a measure of the `round` mask is judged by; no default output reads it).

`write_data_set` writes any such data set, images or scans (data/volumes_example.py makes the
3-D one): its files, one per image and label map, and data.csv naming them.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from skimage import draw

from cnn_factory.images import write_image

KINDS = ("disc", "square", "triangle")  # label values 1, 2, 3


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float image in [0, 1]: a gradient between two random colours plus noise."""
    a, b = rng.uniform(0.1, 0.9, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    img = a * (1 - t[..., None]) + b * t[..., None]
    return img + rng.normal(0, 0.04, size=img.shape)


def _shape(kind: int, cy: float, cx: float, r: float, h: int, w: int, rot: float):
    if kind == 1:
        return draw.disk((cy, cx), r, shape=(h, w))
    n = 4 if kind == 2 else 3
    # squares get their corner radius shrunk so both kinds cover similar areas
    rr = r * (1.25 if n == 4 else 1.45)
    angles = rot + np.arange(n) * 2 * np.pi / n
    return draw.polygon(cy + rr * np.sin(angles), cx + rr * np.cos(angles), shape=(h, w))


def _texture(kind: int, rr: np.ndarray, cc: np.ndarray, colour: np.ndarray, rng) -> np.ndarray:
    """(N, 3) pixel colours: discs striped, squares checkered, triangles plain, in random colours."""
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        dark = ((rr * np.sin(angle) + cc * np.cos(angle)) // 3) % 2 == 1
    elif kind == 2:
        dark = (rr // 3 + cc // 3) % 2 == 1
    else:
        dark = np.zeros(len(rr), bool)
    return np.where(dark[:, None], colour * 0.45, colour)


def make_sample(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One (image uint8 (H, W, 3), label map uint8 (H, W), majority kind index) triple."""
    while True:
        img, labels = _background(rng, h, w), np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(2, 4)):
            kind, r = int(rng.integers(1, 4)), rng.uniform(0.11, 0.19) * min(h, w)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            rr, cc = _shape(kind, cy, cx, r, h, w, rng.uniform(0, np.pi))
            if (labels[rr, cc] > 0).any():  # keep shapes apart: label maps stay unambiguous
                continue
            colour = rng.uniform(0, 1, size=3)
            while np.abs(colour - img[rr, cc].mean(axis=0)).max() < 0.3:
                colour = rng.uniform(0, 1, size=3)
            img[rr, cc], labels[rr, cc] = _texture(kind, rr, cc, colour, rng), kind
        areas = np.bincount(labels.ravel(), minlength=4)[1:]
        first, second = np.sort(areas)[::-1][:2]
        if first > 0 and first >= 1.3 * second:
            break
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), labels, int(areas.argmax())


def write_data_set(
    out: Path,
    value_columns: tuple[str, ...],
    samples: Iterable[tuple[Any, Any, tuple]],
    suffix: str = ".png",
    write: Callable[[Path, Any], None] = write_image,
    images: tuple[str, Callable[[Path, Any], None]] | None = None,
) -> None:
    """Writes out/images/*<suffix>, out/labels/*<suffix> and out/data.csv (image, labels,
    *value_columns), one row per (image, label map, values) sample, each file by `write`
    (path, item); `images`, the images' own (suffix, write) where they differ from the label
    maps' (a DICOM series: a folder, no suffix); an existing `out` is replaced."""
    image_suffix, write_img = images or (suffix, write)
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    with open(out / "data.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "labels", *value_columns])
        for i, (img, labels, values) in enumerate(samples):
            image, label_map = f"images/{i:04d}{image_suffix}", f"labels/{i:04d}{suffix}"
            write_img(out / image, img)
            write(out / label_map, labels)
            writer.writerow([image, label_map, *values])


def make_example(out: Path, rows: int, size: tuple[int, int], seed: int) -> None:
    """Writes out/images/*.png, out/labels/*.png and out/data.csv."""
    rng = np.random.default_rng(seed)

    def samples() -> Iterator[tuple[np.ndarray, np.ndarray, tuple[str, str]]]:
        for _ in range(rows):
            img, labels, majority = make_sample(rng, *size)
            # round_px is counted, not drawn: the generator's draws, so the seed's images, are unchanged
            yield img, labels, (KINDS[majority], str(int(np.count_nonzero(labels == 1))))

    write_data_set(out, ("majority", "round_px"), samples())

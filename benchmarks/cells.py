"""A generated large-image data set: grey "microscopy" images of hundreds of pixels with small cells.

    make_cells(Path("data/cells"), rows=200, sizes=(256, 384), seed=0)

Each image (its height and width drawn between `sizes`) shows a few to a dozen round or oval
cells of 4-8 px radius, bright with a darker nucleus, over an uneven, noisy background with
out-of-focus blobs, some as bright as the dimmer cells, that are not cells; edges are blurred.
Cells cover 0.3-3% of the image. The label map holds 1 on cells;
`density` is `sparse` (3-5 cells) or `dense` (10-14 cells) and `count` the number of cells:
image-level outputs, a category and a number. At 64x64 a cell
is about one pixel: a model trained on images resized that far cannot outline them, which is what
patch training at native resolution is for. Used by benchmarks/large.py, benchmarks/serve.py and the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage import draw

from cnn_factory.data.example import write_data_set


def make_cell_image(rng: np.random.Generator, h: int, w: int, count: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(uint8 (H, W) image, uint8 (H, W) label map with 1 on cells, the cells placed)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a, b, c = rng.uniform(-1, 1, 3)
    img = 0.35 + 0.1 * np.sin(3 * a * yy + 2 * b * xx + c)  # uneven illumination
    labels = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(6, 12)):  # out-of-focus blobs, some as bright as a dim cell: not cells
        r = rng.uniform(6, 14)
        rr, cc = draw.disk((rng.uniform(0, h), rng.uniform(0, w)), r, shape=(h, w))
        img[rr, cc] += rng.uniform(0.05, 0.3)
    placed = 0
    for _ in range(50 * count):  # a small image may hold fewer cells than asked: stop trying
        if placed == count:
            break
        ry, rx = rng.uniform(4, 8, 2)
        cy, cx = rng.uniform(10, h - 10), rng.uniform(10, w - 10)
        rr, cc = draw.ellipse(cy, cx, ry, rx, shape=(h, w), rotation=rng.uniform(0, np.pi))
        if labels[max(int(cy) - 12, 0) : int(cy) + 12, max(int(cx) - 12, 0) : int(cx) + 12].any():
            continue  # keep cells apart
        img[rr, cc] = rng.uniform(0.55, 0.85)
        nr, nc = draw.disk((cy, cx), min(ry, rx) * 0.45, shape=(h, w))
        img[nr, nc] -= 0.2  # the nucleus
        labels[rr, cc] = 1
        placed += 1
    img = gaussian_filter(img, 0.6) + rng.normal(0, 0.05, img.shape)  # the optics blur edges; the camera adds noise
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), labels, placed


def make_cells(out: Path, rows: int, sizes: tuple[int, int] = (256, 384), seed: int = 0) -> None:
    """Writes out/images/*.png, out/labels/*.png and out/data.csv (image, labels, density, count)."""
    rng = np.random.default_rng(seed)

    def samples() -> Iterator[tuple[np.ndarray, np.ndarray, tuple[str, int]]]:
        for _ in range(rows):
            dense = bool(rng.integers(0, 2))
            h, w = rng.integers(sizes[0], sizes[1] + 1, 2)
            img, labels, placed = make_cell_image(
                rng, int(h), int(w), int(rng.integers(10, 15) if dense else rng.integers(3, 6))
            )
            yield img, labels, ("dense" if dense else "sparse", placed)

    write_data_set(out, ("density", "count"), samples())

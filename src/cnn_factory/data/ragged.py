"""Images of different sizes in one flat file per array: native-resolution storage without per-image files.

    <folder>/<name>.u8          every row's uint8 pixels, one row after the other, (C, H, W) each
    <folder>/<name>.index.npy   (N, 4) int64 per row: byte offset, channels, height, width

Both are written once by prepare (`RaggedWriter`) and read memory-mapped (`RaggedArray`): a
crop touches only the pages of its own rows, so reading a patch of a 5,000 x 5,000 image reads
about the patch's bytes, and memory does not grow with the image size or the number of rows.
DVC hashes two files per array, whatever the number of images.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from cnn_factory.errors import UserError


class RaggedWriter:
    """Appends (C, H, W) or (H, W) uint8 arrays of any size; `close()` writes the index."""

    def __init__(self, folder: Path, name: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.data_path, self.index_path = folder / f"{name}.u8", folder / f"{name}.index.npy"
        self.file = open(self.data_path, "wb")  # noqa: SIM115 (closed by close())
        self.rows: list[tuple[int, int, int, int]] = []
        self.offset = 0

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, np.uint8)
        c, h, w = (1, *array.shape) if array.ndim == 2 else array.shape
        self.file.write(array.tobytes())
        self.rows.append((self.offset, c, h, w))
        self.offset += array.nbytes

    def close(self) -> None:
        self.file.close()
        np.save(self.index_path, np.asarray(self.rows, np.int64).reshape(-1, 4))


class RaggedArray:
    """Rows of a ragged array: `array[i]` (memory-mapped, (C, H, W) or (H, W)), `crop(i, ...)`, `shape(i)`."""

    def __init__(self, folder: Path, name: str, masks: bool = False):
        self.masks = masks  # rows are (H, W), not (1, H, W)
        data, index = folder / f"{name}.u8", folder / f"{name}.index.npy"
        try:
            self.index = np.load(index)
            size = data.stat().st_size
            self.data = np.memmap(data, np.uint8, "r") if size else np.zeros(0, np.uint8)
        except FileNotFoundError as err:
            raise UserError(f"{err.filename}: not found; run `dvc repro` (prepare writes it)") from None
        except (ValueError, OSError) as err:
            raise UserError(f"{index}: damaged ({err}); run `dvc repro`: prepare rebuilds it") from None
        ends = self.index[:, 0] + self.index[:, 1:].prod(axis=1) if len(self.index) else np.zeros(0)
        if self.index.ndim != 2 or self.index.shape[1] != 4 or (len(ends) and ends.max() > size):
            raise UserError(f"{data}: shorter than its index says; run `dvc repro`: prepare rebuilds it")

    def __len__(self) -> int:
        return len(self.index)

    def shape(self, i: int) -> tuple[int, int]:
        """(H, W) of row i."""
        return int(self.index[i, 2]), int(self.index[i, 3])

    def __getitem__(self, i: int) -> np.ndarray:
        offset, c, h, w = (int(v) for v in self.index[i])
        row = self.data[offset : offset + c * h * w].reshape(c, h, w)
        return row[0] if self.masks else row

    def crop(self, i: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """The (C, h, w) or (h, w) window at (y, x) of row i; what lies outside the image is 0."""
        row = self[i]
        height, width = row.shape[-2:]
        out = np.zeros((*row.shape[:-2], h, w), np.uint8)
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, height), min(x + w, width)
        if y1 > y0 and x1 > x0:
            out[..., y0 - y : y1 - y, x0 - x : x1 - x] = row[..., y0:y1, x0:x1]
        return out


FOREGROUND_SAMPLES = 64  # foreground pixels kept per row and mask: where oversampled patches centre


def foreground_name(output: str) -> str:
    """The (rows, FOREGROUND_SAMPLES, 2) array of foreground pixels prepare writes per mask in patch mode."""
    return f"{output}.foreground"


def foreground_pixels(mask: np.ndarray) -> np.ndarray:
    """(FOREGROUND_SAMPLES, 2) int32 (y, x) of foreground pixels drawn from a mask, -1 rows where it has
    fewer; the draw is seeded by the mask's bytes, so a row gives the same pixels in any worker."""
    ys, xs = np.nonzero(mask)
    out = np.full((FOREGROUND_SAMPLES, 2), -1, np.int32)
    if len(ys):
        rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(mask).tobytes()))
        pick = rng.choice(len(ys), min(len(ys), FOREGROUND_SAMPLES), replace=False)
        out[: len(pick)] = np.stack([ys[pick], xs[pick]], 1)
    return out

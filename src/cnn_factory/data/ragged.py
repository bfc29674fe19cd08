"""Images (or volumes) of different sizes in one flat file per array: native-resolution storage
without per-image files.

    <folder>/<name>.u8          every row's uint8 pixels, one row after the other, (C, H, W) or (C, D, H, W)
    <folder>/<name>.index.npy   (N, 2 + dims) int64 per row: byte offset, channels, then the spatial
                                sizes (height, width; or depth, height, width)

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
    """Appends uint8 arrays of any size with `dims` spatial dimensions, with a channel axis first or
    without one (masks); `close()` writes the index."""

    def __init__(self, folder: Path, name: str, dims: int = 2):
        folder.mkdir(parents=True, exist_ok=True)
        self.data_path, self.index_path = folder / f"{name}.u8", folder / f"{name}.index.npy"
        self.file = open(self.data_path, "wb")  # noqa: SIM115 (closed by close())
        self.dims = dims
        self.rows: list[tuple[int, ...]] = []
        self.offset = 0

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, np.uint8)
        shape = (1, *array.shape) if array.ndim == self.dims else array.shape
        self.file.write(array.tobytes())
        self.rows.append((self.offset, *shape))
        self.offset += array.nbytes

    def close(self) -> None:
        self.file.close()
        np.save(self.index_path, np.asarray(self.rows, np.int64).reshape(-1, 2 + self.dims))


class RaggedArray:
    """Rows of a ragged array: `array[i]` (memory-mapped, (C, *spatial) or, for masks, the spatial
    axes alone), `crop(i, corner, size)`, `shape(i)`; `dims` spatial dimensions, from the index."""

    def __init__(self, folder: Path, name: str, masks: bool = False):
        self.masks = masks  # rows are the spatial axes alone, (H, W) or (D, H, W), no channel axis
        data, index = folder / f"{name}.u8", folder / f"{name}.index.npy"
        try:
            self.index = np.load(index)
            size = data.stat().st_size
            self.data = np.memmap(data, np.uint8, "r") if size else np.zeros(0, np.uint8)
        except FileNotFoundError as err:
            raise UserError(f"{err.filename}: not found; run `dvc repro` (prepare writes it)") from None
        except (ValueError, OSError) as err:
            raise UserError(f"{index}: damaged ({err}); run `dvc repro`: prepare rebuilds it") from None
        rows = self.index.shape[1:] in ((4,), (5,))  # offset, channels and 2 or 3 sizes per row
        ends = self.index[:, 0] + self.index[:, 1:].prod(axis=1) if rows and len(self.index) else np.zeros(0)
        if not rows or (len(ends) and ends.max() > size):
            raise UserError(f"{data}: shorter than its index says; run `dvc repro`: prepare rebuilds it")
        self.dims = self.index.shape[1] - 2

    def __len__(self) -> int:
        return len(self.index)

    def shape(self, i: int) -> tuple[int, ...]:
        """The spatial size of row i: (H, W), or (D, H, W)."""
        return tuple(int(v) for v in self.index[i, 2:])

    def __getitem__(self, i: int) -> np.ndarray:
        offset, c, *spatial = (int(v) for v in self.index[i])
        row = self.data[offset : offset + c * int(np.prod(spatial))].reshape(c, *spatial)
        return row[0] if self.masks else row

    def crop(self, i: int, corner: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
        """The window of `size` at `corner` (its first pixel, per spatial axis) of row i, channels
        first unless masks; what lies outside the image is 0."""
        row = self[i]
        spatial = row.shape[-len(size) :]
        out = np.zeros((*row.shape[: -len(size)], *size), np.uint8)
        lows = [max(c, 0) for c in corner]
        highs = [min(c + n, total) for c, n, total in zip(corner, size, spatial)]
        if all(h > lo for lo, h in zip(lows, highs)):
            inside: tuple = (Ellipsis, *(slice(lo, h) for lo, h in zip(lows, highs)))
            window: tuple = (Ellipsis, *(slice(lo - c, h - c) for lo, h, c in zip(lows, highs, corner)))
            out[window] = row[inside]
        return out


FOREGROUND_SAMPLES = 64  # foreground pixels kept per row and mask: where oversampled patches centre


def foreground_name(output: str) -> str:
    """The (rows, FOREGROUND_SAMPLES, dims) array of foreground pixels prepare writes per mask in patch mode."""
    return f"{output}.foreground"


def foreground_pixels(mask: np.ndarray) -> np.ndarray:
    """(FOREGROUND_SAMPLES, mask.ndim) int32 coordinates ((y, x) or (z, y, x)) of foreground pixels
    drawn from a mask, -1 rows where it has fewer; the draw is seeded by the mask's bytes, so a row
    gives the same pixels in any worker."""
    points = np.argwhere(mask)
    out = np.full((FOREGROUND_SAMPLES, mask.ndim), -1, np.int32)
    if len(points):
        rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(mask).tobytes()))
        pick = rng.choice(len(points), min(len(points), FOREGROUND_SAMPLES), replace=False)
        out[: len(pick)] = points[pick]
    return out

"""The row cache of prepare: decoded rows by content key, in a few large shard files.

`data/cache/` (a persisted DVC output) holds every decoded row of earlier runs, keyed by the
bytes of its files, its cells and the definitions that shape it, so a re-run decodes only new
or changed rows; shards are written atomically and a damaged one is detected and rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnn_factory.config import Config
from cnn_factory.data.ragged import FOREGROUND_SAMPLES, foreground_name

CACHE_FORMAT = "cnn-factory-rows/3"  # bump when the record layout below changes
MAX_SHARDS = 8  # more shard files than this are merged into one
PENDING = ""  # name of the shard this run is writing, until it is sealed


def record_dtype(cfg: Config) -> np.dtype:
    """One cached row: its key, which outputs' labels its label map lacks, its image's (H, W) or scan's (D, H, W), its
    native grid and own spacing, its fixed-size arrays, and where its arrays of the image's own size lie in the
    shard's blob."""
    fields: list[tuple] = [(s.name, np.uint8, (s.channels, *s.size)) for s in cfg.inputs.values()]
    fields += [(s.name, *s.array_field()) for s in cfg.outputs.values()]
    dims = len(cfg.first_input.size)
    if cfg.patch_mode:  # foreground pixels of each mask, for patches that must hold some
        fields += [(foreground_name(n), np.int32, (FOREGROUND_SAMPLES, dims)) for n in cfg.outputs.spatial]
    return np.dtype(
        [
            ("key", "S32"),
            ("missing", np.bool_, (len(cfg.outputs),)),
            ("size", np.int64, (dims,)),
            ("native", np.int64, (dims,)),  # the native grid: the image scaled, the scan at the target spacing
            ("spacing", np.float64, (dims,)),  # the file's own mm per axis (images: 1)
            ("blob", np.int64, (2,)),  # offset and length of the row's native_names() arrays, back to back
            ("arrays", np.dtype(fields)),
        ]
    )


class RowCache:
    """Decoded rows by key, in a few immutable shards `<folder>/<name>.npy` (+ `<name>.blob`).

    A shard is an array of `record_dtype` records, memory-mapped when read, and a blob of the rows'
    arrays of any size (native-resolution images and masks), which the records point into. Its
    name is the hash of its bytes (records, then blob), so a truncated or damaged shard is found,
    deleted, and its rows decoded again.
    A run appends the rows it decodes to an unnamed temp file and seals them into at most one
    new shard (temp file + os.replace, so a killed run leaves no half-written shard). With
    `folder=None` nothing is kept on disk (the sealed shard lives in memory).
    """

    def __init__(self, folder: Path | None, dtype: np.dtype):
        self.folder, self.dtype = folder, dtype
        self.shards: dict[str, np.ndarray] = {}  # name -> records
        self.blobs: dict[str, np.ndarray] = {}  # name -> uint8 bytes the records point into
        self.index: dict[str, tuple[str, int]] = {}  # key -> (shard, position)
        self.decoded = self.reused = 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.glob(".tmp-*")):  # left by a killed run
                path.unlink()
            for path in sorted(folder.glob("*.blob")):  # a killed run's blob whose records never came
                if not path.with_suffix(".npy").is_file():
                    path.unlink()
            for path in sorted(folder.glob("*.npy")):
                self._open(path)
        self.pending = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed by seal)
        self.pending_blob = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed by seal)
        self.pending_count = self.pending_bytes = 0

    def _open(self, path: Path) -> None:
        blob = path.with_suffix(".blob")
        digest = hashlib.sha256()
        for part in (path, blob):
            if part.is_file():
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
        intact = digest.hexdigest()[:32] == path.stem
        try:
            records = np.load(path, mmap_mode="r") if intact else None
        except (OSError, ValueError):  # not an array file of ours
            records = None
        if records is None or records.dtype.names is None or "key" not in records.dtype.names:
            print(
                f"warning: {path} is damaged (its bytes do not match its name); its rows are decoded again",
                file=sys.stderr,
            )
            path.unlink()
            blob.unlink(missing_ok=True)
            return
        self.shards[path.stem], self.blobs[path.stem] = records, _bytes(blob)
        if records.dtype == self.dtype:  # other definitions: no current row can be in it
            for j, key in enumerate(records["key"].tolist()):
                self.index.setdefault(key.decode(), (path.stem, j))

    def add(self, record: bytes, blob: bytes = b"") -> tuple[str, int]:
        """Appends a record (and its blob) to this run's shard; returns where it will be."""
        row = np.frombuffer(record, self.dtype).copy()
        row["blob"] = (self.pending_bytes, len(blob))
        self.pending.write(row.tobytes())
        self.pending_blob.write(blob)
        self.pending_count += 1
        self.pending_bytes += len(blob)
        return PENDING, self.pending_count - 1

    def record(self, location: tuple[str, int]) -> np.void:
        shard, j = location
        return self.shards[shard][j]

    def blob(self, location: tuple[str, int]) -> np.ndarray:
        """The bytes of a sealed row's arrays of its image's own size."""
        offset, length = (int(v) for v in self.record(location)["blob"])
        return self.blobs[location[0]][offset : offset + length]

    def seal(self) -> str | None:
        """Turns the records added by this run into a shard; returns its name (None if none)."""
        if not self.pending_count:
            return None
        self.pending.seek(0)
        self.pending_blob.seek(0)
        if self.folder is None:
            records = np.frombuffer(self.pending.read(), self.dtype)
            blob = np.frombuffer(self.pending_blob.read(), np.uint8)
            name = hashlib.sha256(records.tobytes() + blob.tobytes()).hexdigest()[:32]
        else:
            header = {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (self.pending_count,),
            }
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, header)
            tmp, digest = self.folder / f".tmp-{os.getpid()}.npy", hashlib.sha256(buffer.getvalue())
            tmp_blob = tmp.with_suffix(".blob")
            for source, target, first in ((self.pending, tmp, buffer.getvalue()), (self.pending_blob, tmp_blob, b"")):
                with open(target, "wb") as f:
                    f.write(first)
                    while block := source.read(1 << 22):
                        digest.update(block)
                        f.write(block)
                    f.flush()
                    os.fsync(f.fileno())
            name = digest.hexdigest()[:32]
            os.replace(tmp_blob, self.folder / f"{name}.blob")  # the blob first: the records make the shard
            os.replace(tmp, self.folder / f"{name}.npy")
            records = np.load(self.folder / f"{name}.npy", mmap_mode="r")
            blob = _bytes(self.folder / f"{name}.blob")
        self.pending.close()
        self.pending_blob.close()
        self.pending_count = self.pending_bytes = 0
        self.shards[name], self.blobs[name] = records, blob
        return name

    def compact(self, locations: list[tuple[str, int] | None]) -> list[tuple[str, int] | None]:
        """Seals this run's shard and prunes the others: shards holding no current row are
        deleted, and those mostly stale (or all, past MAX_SHARDS) have their current rows
        copied into the new shard first. Returns the rows' new locations."""
        used: dict[str, set[int]] = {}
        for shard, j in filter(None, locations):
            used.setdefault(shard, set()).add(j)
        old = [s for s in self.shards if s in used]
        fold = set(old) if len(old) >= MAX_SHARDS else {s for s in old if 2 * len(used[s]) < len(self.shards[s])}
        moved = {
            (s, j): self.add(self.shards[s][j].tobytes(), self.blob((s, j)).tobytes())
            for s in sorted(fold)
            for j in sorted(used[s])
        }
        name = self.seal()

        def relocate(location: tuple[str, int] | None) -> tuple[str, int] | None:
            if location is None:
                return None
            shard, j = moved.get(location, location)
            return (name or PENDING, j) if shard == PENDING else (shard, j)

        locations = [relocate(loc) for loc in locations]
        for shard in [s for s in self.shards if s != name and (s not in used or s in fold)]:
            del self.shards[shard], self.blobs[shard]
            if self.folder is not None:
                (self.folder / f"{shard}.npy").unlink()
                (self.folder / f"{shard}.blob").unlink(missing_ok=True)
        self.index = {k: v for k, v in self.index.items() if v[0] in self.shards}
        return locations


def _bytes(path: Path) -> np.ndarray:
    """A blob file memory-mapped (an empty or absent one as no bytes)."""
    if path.is_file() and path.stat().st_size:
        return np.memmap(path, np.uint8, "r")
    return np.zeros(0, np.uint8)


class CachedRows(Sequence):
    """`rows[i]` is row i's arrays by name, read from the shard that holds it."""

    def __init__(self, cache: RowCache, locations: list[tuple[str, int]]):
        self.cache, self.locations = cache, locations
        self.decoded, self.reused = cache.decoded, cache.reused  # rows decoded by this run / taken from the cache
        self.spacing: tuple[float, ...] | None = None  # volumes: the target spacing the rows were resampled to

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:  # type: ignore[override]  # rows by index, no slices
        arrays = self.cache.record(self.locations[i])["arrays"]
        return {name: arrays[name] for name in arrays.dtype.names or ()}

    def stacked(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Rows `indices` stacked per array name, gathered from each shard at once."""
        locations = [self.locations[i] for i in indices]
        records = np.empty(len(indices), self.cache.dtype)
        for shard in dict.fromkeys(s for s, _ in locations):
            ks = [k for k, (s, _) in enumerate(locations) if s == shard]
            records[ks] = self.cache.shards[shard][[locations[k][1] for k in ks]]
        arrays = records["arrays"]
        return {name: arrays[name] for name in arrays.dtype.names or ()}

    def native(self, i: int) -> tuple[tuple[int, ...], np.ndarray]:
        """Row i's image size ((H, W), a volume's (D, H, W)) and the bytes of its arrays of that size
        (see rows.unpack_native)."""
        location = self.locations[i]
        return tuple(int(n) for n in self.cache.record(location)["size"]), self.cache.blob(location)

    def grid(self, i: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """Row i's native grid (the image scaled, the scan at the target spacing) and its own spacing in mm."""
        record = self.cache.record(self.locations[i])
        return tuple(int(n) for n in record["native"]), tuple(float(v) for v in record["spacing"])

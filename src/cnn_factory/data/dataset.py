"""Reads what prepare cached: memory-mapped uint8 arrays, batched, normalised on the device.

    split = PreparedSplit(Path("data/prepared/train"), ["image"], outputs)
    loader = make_loader(split, batch_size=16, shuffle=True, generator=order, num_augs=0)
    for x, targets, augment in loader:      # x uint8 (B, C, H, W); targets {name: (B, ...)}
        x, targets = to_device(x, targets, device, mean, std)

Arrays are opened with `mmap_mode="r"` and read a batch at a time by fancy indexing, so
memory stays flat however large the data set is and no image is decoded while training.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from cnn_factory.errors import UserError
from cnn_factory.outputs import Output

# channels-last memory for a batch of images (B, C, H, W) or volumes (B, C, D, H, W)
CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def read_manifest(prepared: Path, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict:
    """The manifest prepare wrote; an error if the cache lacks the arrays of params' `inputs` or `outputs`."""
    path = prepared / "manifest.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; run `dvc repro prepare` first")
    manifest = json.loads(path.read_text())
    if "folds" in manifest:  # data.split.folds: each fold's run reads its own folder, folds/<k>/
        raise UserError(
            f"{path}: prepared as {len(manifest['folds'])} folds (data.split.folds): run them with "
            "`cnn-factory folds` and `dvc repro folds/dvc.yaml` (docs/small-data.md), or set data.split.folds: null"
        )
    missing = [n for n in [*inputs, *outputs] if not (prepared / "train" / f"{n}.npy").is_file()]
    if missing:
        raise UserError(f"{prepared}: no cached arrays for {', '.join(missing)}; run `dvc repro prepare` again")
    return manifest


def open_array(path: Path) -> np.ndarray:
    """A prepared array, memory-mapped; a truncated or damaged file is a UserError, not a numpy traceback."""
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `dvc repro` (prepare writes it)") from None
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{path}: damaged ({err}); run `dvc repro`: prepare rebuilds it") from None


class PreparedSplit(Dataset):
    """One split; `split[indices]` returns a whole batch (inputs stacked as channels)."""

    def __init__(self, folder: Path, inputs: list[str], outputs: Mapping[str, Output]):
        self.inputs, self.outputs = inputs, list(outputs)
        self.arrays = {name: open_array(folder / f"{name}.npy") for name in [*inputs, *outputs]}
        self.length = len(self.arrays[inputs[0]])
        lengths = {name: len(a) for name, a in self.arrays.items()}
        if len(set(lengths.values())) > 1:
            raise UserError(
                f"{folder}: its arrays disagree on the number of rows ({lengths}); the prepared data is "
                "damaged: run `dvc repro` (prepare rebuilds it)"
            )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        index = np.asarray(indices)
        samples = index % self.length  # indices past the end are augmented repeats
        x = np.concatenate([self.arrays[n][samples] for n in self.inputs], axis=1)  # (B, C, H, W)
        targets = {n: torch.from_numpy(np.ascontiguousarray(self.arrays[n][samples])) for n in self.outputs}
        return torch.from_numpy(x), targets, torch.from_numpy(index >= self.length)


class ShardedBatches(Sampler[list[int]]):
    """One rank's batches of an epoch under DistributedDataParallel.

    Every rank draws the same permutation of the index space from the same generator (the one
    a checkpoint saves, so a resumed run draws what it would have drawn), takes its contiguous
    slice, and cuts it into `len(self)` batches of nearly equal size: the ranks together see
    each index exactly once per epoch, and all take the same number of steps, which DDP needs
    (a rank with one batch more would wait forever for the others' gradients).

    Debugging aid: with CNN_FACTORY_LOG_SAMPLES=<path> set, each rank appends one line per epoch,
    `<rank> <index> <index> ...`, to <path> (indices past the split's length are augmented repeats).
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, generator: torch.Generator, rank: int, world: int):
        self.size, self.batch_size, self.shuffle, self.generator = size, batch_size, shuffle, generator
        self.rank, self.world = rank, world
        if len(self) > size // world:
            raise UserError(f"train: {size} training samples cannot be split over {world} processes; use fewer")

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.size / self.world) / self.batch_size)

    def __iter__(self):
        # torch.randperm with the generator is what RandomSampler draws too
        order = torch.randperm(self.size, generator=self.generator) if self.shuffle else torch.arange(self.size)
        mine = order.tensor_split(self.world)[self.rank]  # slice sizes differ by at most one
        if log := os.environ.get("CNN_FACTORY_LOG_SAMPLES"):
            with open(log, "a") as f:
                f.write(" ".join(map(str, [self.rank, *mine.tolist()])) + "\n")
        for batch in mine.tensor_split(len(self)):
            yield batch.tolist()


def make_loader(
    split: PreparedSplit,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_augs: int = 0,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of (x, targets, augment flags); each sample appears 1 + num_augs times per epoch.

    The shuffling draws from `generator`, whose state a checkpoint saves and restores.
    With world > 1 the loader yields only this rank's share (see ShardedBatches). Batches are
    read in the main process: the arrays are memory-mapped and nothing is decoded, so worker
    processes would only add start-up time. `pin_memory` for a CUDA device."""
    space = range(len(split) * (1 + num_augs))  # 1 + num_augs copies of the split, for the sampler
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    batches: Sampler[list[int]]
    if world > 1:
        batches = ShardedBatches(len(space), batch_size, shuffle, generator, rank, world)
    else:
        sampler = RandomSampler(space, generator=generator) if shuffle else SequentialSampler(space)
        batches = BatchSampler(sampler, batch_size, drop_last=False)
    return DataLoader(split, sampler=batches, batch_size=None, pin_memory=pin_memory)


def rows_loader(split: PreparedSplit, rows: range, batch_size: int) -> DataLoader:
    """The rows `rows` of a split in order, a batch at a time (validation and evaluation)."""
    return DataLoader(split, sampler=BatchSampler(rows, batch_size, drop_last=False), batch_size=None)


def share(count: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous block of `count` rows (rank 0 holds the first: its pictures are the split's)."""
    size = math.ceil(count / world)
    return range(min(rank * size, count), min((rank + 1) * size, count))


def to_device(
    x: torch.Tensor, targets: dict[str, torch.Tensor], device: torch.device, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """uint8 batch (B, C, *spatial) -> normalised float on the device (mean and std per channel) in
    channels-last memory; masks become float 0/1."""
    per_channel = (1, -1, *[1] * (x.ndim - 2))  # images or volumes alike
    x = (x.to(device, non_blocking=True).float() / 255 - mean.reshape(per_channel)) / std.reshape(per_channel)
    x = x.contiguous(memory_format=CHANNELS_LAST[x.ndim])
    moved = {name: t.to(device, non_blocking=True) for name, t in targets.items()}
    return x, {name: t.float() if t.dtype in (torch.uint8, torch.float32) else t for name, t in moved.items()}

"""Patch training: random windows of the input size from native-resolution images, foreground oversampled.

    split = PatchSplit(Path("data/prepared/train"), ["image"], outputs, (128, 128))
    batches = PatchBatches(rows=split, samples=500, batch_size=8, share=0.33, generator=g)
    loader = DataLoader(split, sampler=batches, batch_size=None)
    for x, targets, flags, views in loader: ...   # patches, their masks and labels, whole-image views

Each batch's last `foreground` share of patches is centred on a foreground pixel of one of the
image's masks (as nnU-Net forces a third of each batch to hold foreground); the others lie
anywhere in the image. Image-level outputs (category, numeric) are about the whole image: their
targets come with `views`, the whole images resized to the input size, which the model encodes
in the same pass as the patches; `view_share` of a batch's patches bring their image's view (at
least one), and a model without image-level outputs reads none (`views` is None).
Positions are drawn in the main process from the generator a checkpoint saves, so a resumed run
draws what it would have drawn; a patch reads only its own bytes of the memory-mapped arrays
(data/ragged.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cnn_factory.data.dataset import open_array
from cnn_factory.data.ragged import RaggedArray, foreground_name
from cnn_factory.errors import UserError
from cnn_factory.outputs import Output, Outputs

Spec = tuple[int, tuple[int, ...], bool]  # row, the patch's first pixel per spatial axis, augmented copy


class PatchSplit(Dataset):
    """One split in patch mode; `split[specs]` returns a whole batch of patches and views."""

    def __init__(
        self,
        folder: Path,
        inputs: list[str],
        outputs: Mapping[str, Output],
        patch: tuple[int, ...],
        view_share: float = 1.0,
    ):
        self.patch, self.inputs, self.view_share = patch, inputs, view_share
        self.spatial, self.whole = list(Outputs(outputs).spatial), list(Outputs(outputs).whole)
        self.images = {n: RaggedArray(folder, f"{n}.native") for n in inputs}
        self.masks = {n: RaggedArray(folder, f"{n}.native", masks=True) for n in self.spatial}
        # whole images at the input size, for the image-level outputs only
        self.views = {n: open_array(folder / f"{n}.npy") for n in inputs} if self.whole else {}
        self.values = {n: open_array(folder / f"{n}.npy") for n in self.whole}
        self.foreground = {n: open_array(folder / f"{foreground_name(n)}.npy") for n in self.spatial}
        first = self.images[inputs[0]]
        self.shapes = np.array([first.shape(i) for i in range(len(first))], np.int64).reshape(-1, first.dims)
        lengths = [len(a) for a in (*self.images.values(), *self.masks.values())]
        lengths += [len(a) for a in self.views.values()]
        if any(n != len(first) for n in lengths):
            raise UserError(
                f"{folder}: its arrays disagree on the number of rows; run `dvc repro` (prepare rebuilds it)"
            )

    def __len__(self) -> int:
        return len(self.shapes)

    def views_in(self, batch: int) -> int:
        """How many of a batch's patches bring their image's view: none without image-level outputs."""
        return max(1, round(self.view_share * batch)) if self.whole else 0

    def __getitem__(self, specs: list[Spec]) -> tuple:
        """Patches (B, C, *patch) uint8, {mask: (B, *patch), value: (V,)}, augment flags (B,), and views
        (V, C, *size) of the first V patches' images, or None without image-level outputs."""
        size, rows = self.patch, np.array([s[0] for s in specs[: self.views_in(len(specs))]], np.int64)
        x = np.stack([np.concatenate([self.images[n].crop(r, at, size) for n in self.inputs]) for r, at, _ in specs])
        targets = {n: np.stack([self.masks[n].crop(r, at, size) for r, at, _ in specs]) for n in self.spatial}
        targets.update({n: np.ascontiguousarray(self.values[n][rows]) for n in self.whole})
        flags = torch.tensor([s[2] for s in specs])
        views = np.concatenate([self.views[n][rows] for n in self.inputs], 1) if self.whole else None  # (V, C, H, W)
        as_tensors = {n: torch.from_numpy(v) for n, v in targets.items()}
        return torch.from_numpy(x), as_tensors, flags, None if views is None else torch.from_numpy(views)


class PatchBatches(Sampler[list[Spec]]):
    """This rank's batches of patch positions for one epoch.

    `samples` patches per epoch (each repeated as `num_augs` augmented copies), rows drawn uniformly;
    all ranks draw the same epoch from the same generator and take their own slice (`part`: rank,
    world), as ShardedBatches does for whole images. `rows` may be anything with a PatchSplit's
    `shapes` (rows, dims), `foreground` and `patch`."""

    def __init__(
        self,
        *,
        rows: PatchSplit,
        samples: int,
        batch_size: int,
        share: float,
        generator: torch.Generator,
        num_augs: int = 0,
        part: tuple[int, int] = (0, 1),
    ):
        shapes, foreground, patch = rows.shapes, rows.foreground, rows.patch
        self.shapes, self.patch, self.samples, self.batch_size = shapes, patch, samples, batch_size
        self.share, self.generator, self.num_augs = share, generator, num_augs
        self.rank, self.world = part
        # (rows, masks, FOREGROUND_SAMPLES, dims): every mask's foreground pixels side by side
        dims = len(patch)
        self.points = np.stack(list(foreground.values()), 1) if foreground else np.zeros((len(shapes), 0, 0, dims))
        self.has = np.asarray((self.points[..., 0] >= 0).any(-1))  # (rows, masks): which masks a row holds

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.samples * (1 + self.num_augs) / self.world) / self.batch_size)

    def __repr__(self) -> str:
        return f"PatchBatches({self.samples} patches of {self.patch}, batches of {self.batch_size})"

    def corner(self, row: int, forced: bool, u: torch.Tensor) -> tuple[int, ...]:
        """The first pixel of a patch in `row`, per spatial axis: anywhere, or the patch centred on a
        foreground pixel; u: 2 + dims uniform draws."""
        shape, size = self.shapes[row], self.patch
        masks = np.flatnonzero(self.has[row]) if forced else np.zeros(0, int)
        if len(masks):
            m = masks[int(u[0] * len(masks))]
            valid = np.flatnonzero(self.points[row, m, :, 0] >= 0)
            centre = self.points[row, m, valid[int(u[1] * len(valid))]]
            start = [int(c) - n // 2 for c, n in zip(centre, size)]
        else:
            start = [int(v * (total - n + 1)) for v, total, n in zip(u[2:], shape, size)]
        # inside the image where it fits; an image smaller than the patch is centred in it (padding around)
        return tuple(
            min(max(s, 0), total - n) if total >= n else -((n - total) // 2) for s, total, n in zip(start, shape, size)
        )

    def __iter__(self) -> Iterator[list[Spec]]:
        total = self.samples * (1 + self.num_augs)
        rows = torch.randint(len(self.shapes), (total,), generator=self.generator).tolist()
        draws = torch.rand(total, 2 + len(self.patch), generator=self.generator, dtype=torch.float64)
        forced_from = self.batch_size - round(self.share * self.batch_size)
        specs = [
            (r, self.corner(r, k % self.batch_size >= forced_from, draws[k]), k >= self.samples)
            for k, r in enumerate(rows)
        ]
        mine = specs[self.rank :: self.world]  # ranks' shares differ by one at most
        for part in np.array_split(np.arange(len(mine)), len(self)):  # the same number of steps on every rank
            yield [mine[i] for i in part]

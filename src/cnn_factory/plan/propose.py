"""The proposals of `cnn-factory plan`: (params key, value, reason) rows from a fingerprint, the
first deciding the others, in the order the package's docstring gives them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial

import numpy as np

from cnn_factory.plan.budget import Training, budget_rows
from cnn_factory.plan.dims import dims_of
from cnn_factory.plan.fingerprint import Fingerprint
from cnn_factory.plan.patch import GPU_BUDGET, MAX_DEPTH, Cost, Patch, activations, axes, fit_patch, voxels

# below this many rows, three-channel images may gain from an encoder pretrained on natural images
# (ImageNet); from random weights a timm encoder is a bigger network, not a better one (docs/encoders.md)
FEW_ROWS = 2000
ENCODER = "resnet18"  # the smallest of the usual choices, largest stride 32
# forward passes a training patch costs (forward, backward and the optimiser, measured on CPU in benchmarks/large.py)
STEP_FORWARDS = 5


def wants_pretrained(fp: Fingerprint) -> bool:
    """Three-channel images (natural ones, as far as a channel count tells) and a small data set."""
    return dims_of(fp).encoders and fp.channels == 3 and fp.rows < FEW_ROWS


def propose(
    fp: Fingerprint,
    budget: float,
    outputs: Mapping[str, object],
    *,
    weights: bool = False,
    training: Training | None = None,
) -> list[tuple]:
    """(params key, value, reason) rows; the first decides the others. `weights`: the pretrained
    weights of ENCODER are on this machine (never assumed). `training`: the params' training
    section and split, for the training budget and (patch mode) the validation's cost."""
    dims = dims_of(fp)
    filters = 32 if budget > GPU_BUDGET else 16
    heads = 1 + sum(1 for o in outputs.values() if getattr(o, "spatial", False))
    cost = partial(activations, filters=filters, heads=heads, channels=fp.channels)
    encoder = weights and wants_pretrained(fp)
    first = dims.first(fp)
    start, capped = cpu_start(first.start, training, budget) if dims.capped else (first.start, "")
    patch = fit_patch(start, fp.grids.target, dims.pooling, budget, cost, 32 if encoder else 1)
    noun = "patches" if first.patched else f"{dims.words.item}s"
    rows = [first.row, size_row(fp, patch, noun, first.basis + capped)]
    levels, per_patch = depth_rows(fp, patch, budget, cost)
    rows += levels + [("model.filters", filters, "32 with a GPU-sized budget, else 16 (doubled per level)")]
    if encoder:
        why = f"3-channel images, {fp.rows} rows: start from weights pretrained on natural images (found in the cache)"
        rows += [("model.encoder", ENCODER, why), ("model.weights", "pretrained", f"{ENCODER}'s, in timm's cache")]
    memory = batch_row(fp, patch.sides, per_patch, budget, "patch" if first.patched else dims.words.item)
    if training is None:
        return rows + [memory] + ([foreground_row(fp)] if first.patched else [])
    budgeted, epoch = budget_rows(memory, training, first.patched, budget > GPU_BUDGET)
    rows += budgeted
    if first.patched:
        rows.append(foreground_row(fp))
        if training.val:
            rows += validation_rows(fp.grids.at_target, patch.sides, training.val, epoch, f"{dims.words.item}s")
    return rows


def cpu_start(start: np.ndarray, training: Training | None, budget: float) -> tuple[np.ndarray, str]:
    """The patch to start from where it is the whole median scan: on a CPU no side larger than
    the params' own patch, as a step's time follows its voxels (the volume example's whole scan,
    3.4x the params' patch, trained to a better tumour dice in 3.3x the time, and in the same time
    with fewer steps to a worse one: benchmarks/README.md); with a GPU-sized budget nnU-Net's,
    whatever the params'. And what the size's reason says of it."""
    own = np.asarray(training.patch if training and training.patch else [], float)
    if budget > GPU_BUDGET or len(own) != len(start) or np.all(start <= own):
        return start, ""
    return np.minimum(start, own), f"; no side over the params' {voxels(own)}: on a CPU a step's time follows its size"


def size_row(fp: Fingerprint, patch: Patch, noun: str, basis: str) -> tuple:
    unit = dims_of(fp).words.unit
    why = f"{noun} of {'x'.join(f'{n:.3g}' for n in np.multiply(patch.sides, fp.grids.target))} {unit}{basis}"
    if patch.cut:
        shrunk = ", ".join(f"{axes(patch.sides)[a]} {patch.cut.count(a)}x" for a in sorted(set(patch.cut)))
        why += f", cut where longest in {unit} ({shrunk}) until 2 patches fit the budget"
    return ("inputs.*.size", patch.sides, why + f"; each side a multiple of 2**{patch.depth}")


def depth_rows(fp: Fingerprint, patch: Patch, budget: float, cost: Cost) -> tuple[list[tuple], float]:
    """`model.stem` (where dims propose one) and `model.depth`; the bytes of activations per patch with that stem."""
    dims = dims_of(fp)
    stem = dims.stem(fp, patch, budget)
    deepest = [n // (s * 2**stem.depth) for n, s in zip(patch.sides, stem.strides)]
    short = min(deepest) == 1 and patch.depth < MAX_DEPTH
    why = f"the deepest map is {voxels(deepest)} {dims.words.cell}s (4-8 in plane is the aim"
    why += f"; the {min(patch.sides)}-{dims.words.cell} side allows no more)" if short else ")"
    why += ", after the strided stem" if stem.depth < patch.depth else ""
    per_patch = cost([n / s for n, s in zip(patch.sides, stem.strides)], stem.depth)
    return [*stem.rows, ("model.depth", stem.depth, why)], per_patch


def batch_row(fp: Fingerprint, sides: list[int], per_patch: float, budget: float, noun: str) -> tuple:
    """The largest power of two whose activations fit the budget, 2 to 64, and at most the share
    of the data set that dims allow."""
    dims = dims_of(fp)
    fits = batch = int(np.clip(2 ** math.floor(math.log2(max(budget / per_patch, 1))), 2, 64))
    data, share = float(np.prod(fp.grids.median)) * fp.rows, dims.data_share
    if share is not None:
        batch = max(2, min(fits, 2 ** math.floor(math.log2(max(2, int(share * data / np.prod(sides)))))))
    why = f"~{per_patch / 2**20:.0f} MiB of activations per {noun}"
    if 2 * per_patch > budget:
        why += f": over the budget even at {voxels(sides)}; lower model.filters or raise --budget-gb"
    elif batch < fits:
        why += f"; {fits} would fit, but a batch stays under {share:.0%} of the data's"
        why += f" ~{data / 1e6:.1f} M {dims.words.cell}s (nnU-Net)"
    return ("train.batch_size", batch, why)


def foreground_row(fp: Fingerprint) -> tuple:
    rare = [n for n, v in fp.masks.foreground.items() if v < 0.05]
    why = "masks are not rare: patches anywhere"
    if rare:
        covers = ", ".join(f"{n} {fp.masks.foreground[n]:.1%}" for n in rare)
        cell = dims_of(fp).words.cell
        why = f"foreground covers {covers} of the {cell}s: a third of each batch centred on it, as nnU-Net"
    return ("train.foreground", 0.33 if rare else 0.0, why)


def windows(sizes: np.ndarray, patch: int | Sequence[int]) -> float:
    """Sliding windows over an image (or scan) of each of `sizes`, on average: overlapping by
    half, as predict and evaluate slide them."""
    sides = np.broadcast_to(np.asarray(patch), np.shape(sizes)[1:])
    strides = sides // 2
    counts = [np.prod([math.ceil(max(n - p, 0) / s) + 1 for n, p, s in zip(shape, sides, strides)]) for shape in sizes]
    return float(np.mean(counts))


def validation_rows(
    sizes: np.ndarray, patch: int | Sequence[int], val_images: int, epoch_patches: int, unit: str = "images"
) -> list[tuple]:
    """Patch mode: what validating the whole images (or scans) every epoch would cost against the
    epoch's training, counted in forward passes (a training patch ~STEP_FORWARDS), and the
    validation proposed for that cost."""
    count, train = windows(sizes, patch) * val_images, STEP_FORWARDS * epoch_patches
    whole = f"the whole {val_images} val {unit} are ~{count:.0f} windows, {count / train:.0%} of an epoch's training"
    if count <= 0.1 * train:
        return [("train.val_patches", 0, f"{whole}: cheap enough to validate them every epoch")]
    # what keeps validation (patches and the views) near 10% of the epoch: 32 to 256 patches
    fixed = int(np.clip(max(16, int((0.1 * train - val_images) // 16) * 16), 32, 256))
    cost = (fixed + val_images) / train
    rows = [("train.val_patches", fixed, f"{whole}; {fixed} fixed val patches and the views cost {cost:.0%}")]
    if cost > 0.2:
        every = math.ceil(cost / 0.1)
        rows.append(("train.val_every", every, f"short epochs: validating every {every} keeps it near 10%"))
    return rows

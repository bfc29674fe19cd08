"""The proposals of `cnn-factory plan`: (params key, value, reason) rows from a fingerprint, the
first deciding the others (images: the mode; volumes: the spacing), as the package's docstring says.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from cnn_factory.data.resample import ANISOTROPY
from cnn_factory.model import stem_strides
from cnn_factory.plan.fingerprint import Dims, Fingerprint

# bytes of activations kept for backward per pixel and filter of a level, measured for this UNet in
# fp32 (conv, norm and ReLU outputs of two convolutions, the pool, the decoder's copies): ~ 4 x 12
BYTES_PER_FEATURE = 48
# below this many rows, three-channel images may gain from an encoder pretrained on natural images
# (ImageNet); from random weights a timm encoder is a bigger network, not a better one (docs/encoders.md)
FEW_ROWS = 2000
ENCODER = "resnet18"  # the smallest of the usual choices, largest stride 32
MIN_SIDE = 8  # a patch side is not cut below this many pixels or voxels
MAX_DEPTH = 5
GPU_BUDGET = 12 * 2**30  # a budget above this is a GPU's: 32 filters and a full-resolution stem
AXES = ("depth", "height", "width")
Cost = Callable[..., float]  # activations of (sides, depth) for the proposed filters, heads and channels


def activations(sides: Sequence[float], depth: int, filters: int, heads: int, channels: int) -> float:
    """Bytes of activations kept for backward per patch; `heads`: the encoder and a decoder per mask."""
    per_level = [filters * 2**k * float(np.prod(sides)) / 2 ** (len(sides) * k) for k in range(depth + 1)]
    return BYTES_PER_FEATURE * sum(per_level) * heads * (channels / 3 + 1)


@dataclass(frozen=True)
class Patch:
    sides: list[int]
    depth: int
    bytes: float  # activations per patch
    cut: list[int]  # the axes cut, one entry a cut


def wants_pretrained(fp: Fingerprint) -> bool:
    """Three-channel images (natural ones, as far as a channel count tells) and a small data set."""
    return fp.dims.encoders and fp.channels == 3 and fp.rows < FEW_ROWS


def propose(
    fp: Fingerprint,
    budget: float,
    outputs: Mapping[str, object],
    filters: int | None = None,
    weights: bool = False,
    val_share: float = 0.0,
    epoch_patches: int = 0,
) -> list[tuple]:
    """(params key, value, reason) rows; the first decides the others. `weights`: the pretrained
    weights of ENCODER are on this machine (never assumed). val_share (data.split.val) and
    epoch_patches (train.patches_per_epoch or the training rows) let patch mode cost its validation."""
    dims = fp.dims
    filters = filters or (32 if budget > GPU_BUDGET else 16)
    heads = 1 + sum(1 for o in outputs.values() if getattr(o, "spatial", False))
    cost = partial(activations, filters=filters, heads=heads, channels=fp.channels)
    encoder = weights and wants_pretrained(fp)
    first, start, patched, basis = first_row(fp)
    patch = fit_patch(fp, start, budget, cost, 32 if encoder else 1)
    rows = [first, size_row(fp, patch, "patches" if patched else f"{dims.item}s", basis)]
    levels, per_patch = depth_rows(fp, patch, budget, cost)
    rows += levels + [("model.filters", filters, "32 with a GPU-sized budget, else 16 (doubled per level)")]
    if encoder:
        why = f"3-channel images, {fp.rows} rows: start from weights pretrained on natural images (found in the cache)"
        rows += [("model.encoder", ENCODER, why), ("model.weights", "pretrained", f"{ENCODER}'s, in timm's cache")]
    rows.append(batch_row(fp, patch.sides, per_patch, budget, "patch" if patched else dims.item))
    if patched:
        rows.append(foreground_row(fp))
        if val_share and epoch_patches:
            val = round(fp.rows * val_share)
            rows += validation_rows(fp.at_target, patch.sides, val, epoch_patches, f"{dims.item}s")
    return rows


def first_row(fp: Fingerprint) -> tuple[tuple, np.ndarray, bool, str]:
    """The row that decides the others, the size to start from, whether training is on patches,
    and what that size is."""
    if fp.dims.spacing:
        basis = f"; the median {fp.dims.item} at the target spacing is {voxels(fp.median)}"
        return spacing_row(fp), np.maximum(np.round(fp.median), 1), True, basis
    median = fp.median
    seen = f"median image {int(median[0])}x{int(median[1])}"
    small_objects = [n for n, d in fp.objects.items() if 0 < d < max(median) / 32]
    large = max(median) > 256
    if not (large or small_objects):
        return ("inputs.*.mode", "resize", f"{seen} is small: whole images"), np.full(2, max(median)), False, ""
    why = seen if large else ""
    if small_objects:
        d = min(fp.objects[n] for n in small_objects)
        why += ("; " if why else "") + f"objects of {d:.0f} px across ({', '.join(small_objects)})"
        why += f": resized to 64 px they would be {d * 64 / max(median):.1f} px"
    smallest = max((d for d in fp.objects.values() if d), default=16)
    start = np.full(2, min(max(4 * smallest, 64), max(median), 256))
    return ("inputs.*.mode", "patch", f"{why}; train at native resolution on patches"), start, True, ""


def fit_patch(fp: Fingerprint, start: np.ndarray, budget: float, cost: Cost, multiple: int) -> Patch:
    """nnU-Net's patch: from `start`, the axis longest in mm (then in voxels) cut by 2**depth until
    two patches fit `budget`; each side a multiple of 2**depth and of `multiple`."""
    dims, target, patch, cut = fp.dims, fp.target, np.asarray(start, float), list[int]()
    while True:
        depth = pool_depth(patch, target, dims)
        step = max(2**depth, multiple)
        patch = np.maximum((np.round if dims.nearest else np.floor)(patch / step), 1).astype(int) * step
        per_patch = cost(patch, depth)
        longer = [a for a in range(len(patch)) if patch[a] > MIN_SIDE]
        if 2 * per_patch <= budget or not longer:
            return Patch(sides=[int(n) for n in patch], depth=depth, bytes=per_patch, cut=cut)
        axis = max(longer, key=lambda a: (patch[a] * target[a], patch[a]))
        patch[axis] = max(MIN_SIDE, patch[axis] - step)
        cut.append(axis)


def pool_depth(patch: Sequence[float] | np.ndarray, target: Sequence[float], dims: Dims) -> int:
    """Poolings until the deepest map is about 4-8 along the in-plane axes (all but the coarsest),
    and no more than leave a voxel along the shortest side."""
    coarse = int(np.argmax(target))
    plane = min(n for a, n in enumerate(patch) if a != coarse)
    depth = math.floor(math.log2(max(plane / dims.deepest, 1)))
    return max(dims.min_depth, min(depth, MAX_DEPTH, math.floor(math.log2(max(min(patch), 1)))))


def size_row(fp: Fingerprint, patch: Patch, noun: str, basis: str) -> tuple:
    dims = fp.dims
    why = f"{noun} of {'x'.join(f'{n:.3g}' for n in np.multiply(patch.sides, fp.target))} {dims.unit}{basis}"
    if patch.cut:
        shrunk = ", ".join(f"{axes(patch.sides)[a]} {patch.cut.count(a)}x" for a in sorted(set(patch.cut)))
        why += f", cut where longest in {dims.unit} ({shrunk}) until 2 patches fit the budget"
    return ("inputs.*.size", patch.sides, why + f"; each side a multiple of 2**{patch.depth}")


def depth_rows(fp: Fingerprint, patch: Patch, budget: float, cost: Cost) -> tuple[list[tuple], float]:
    """`model.stem` (where dims say) and `model.depth`; the bytes of activations per patch with that stem."""
    depth, cell = patch.depth, fp.dims.cell
    deepest = [n // 2**depth for n in patch.sides]
    why = f"the deepest map is {voxels(deepest)} {cell}s (4-8 in plane is the aim"
    why += f"; the {min(patch.sides)}-{cell} side allows no more)" if min(deepest) == 1 and depth < MAX_DEPTH else ")"
    if not fp.dims.stem:
        return [("model.depth", depth, why)], patch.bytes
    if budget > GPU_BUDGET or depth < 2:
        gpu = "a GPU-sized budget: the first level at full resolution, as nnU-Net's"
        full = gpu if budget > GPU_BUDGET else f"{depth} halving only: the first level keeps full resolution"
        return [("model.stem", "full", full), ("model.depth", depth, why)], patch.bytes
    strides = stem_strides("strided", len(patch.sides), list(fp.target))
    kept = [name for name, s in zip(axes(strides), strides) if s == 1]
    why_stem = "no GPU-sized budget: the first level at half resolution (2-3x cheaper a step)"
    why_stem += f"; {', '.join(kept)}, over twice as coarse, keeps its resolution there" if kept else ""
    deepest = [n // (s * 2 ** (depth - 1)) for n, s in zip(patch.sides, strides)]
    why = f"the deepest map is {voxels(deepest)} {cell}s (4-8 in plane is the aim), after the strided stem"
    per_patch = cost([n / s for n, s in zip(patch.sides, strides)], depth - 1)
    return [("model.stem", "strided", why_stem), ("model.depth", depth - 1, why)], per_patch


def batch_row(fp: Fingerprint, sides: list[int], per_patch: float, budget: float, noun: str) -> tuple:
    """The largest power of two whose activations fit the budget, 2 to 64, and at most the share
    of the data set that dims allow."""
    fits = batch = int(np.clip(2 ** math.floor(math.log2(max(budget / per_patch, 1))), 2, 64))
    data, share = float(np.prod(fp.median)) * fp.rows, fp.dims.data_share
    if share is not None:
        batch = max(2, min(fits, 2 ** math.floor(math.log2(max(2, int(share * data / np.prod(sides)))))))
    why = f"~{per_patch / 2**20:.0f} MiB of activations per {noun}"
    if 2 * per_patch > budget:
        why += f": over the budget even at {voxels(sides)}; lower model.filters or raise --budget-gb"
    elif batch < fits:
        why += f"; {fits} would fit, but a batch stays under {share:.0%} of the data's"
        why += f" ~{data / 1e6:.1f} M {fp.dims.cell}s (nnU-Net)"
    return ("train.batch_size", batch, why)


def foreground_row(fp: Fingerprint) -> tuple:
    rare = [n for n, v in fp.foreground.items() if v < 0.05]
    why = "masks are not rare: patches anywhere"
    if rare:
        covers = ", ".join(f"{n} {fp.foreground[n]:.1%}" for n in rare)
        why = f"foreground covers {covers} of the {fp.dims.cell}s: a third of each batch centred on it, as nnU-Net"
    return ("train.foreground", 0.33 if rare else 0.0, why)


def validation_rows(
    sizes: np.ndarray, patch: int | Sequence[int], val_images: int, epoch_patches: int, unit: str = "images"
) -> list[tuple]:
    """Patch mode: what validating the whole images (or scans) every epoch would cost against the
    epoch's training, counted in forward passes (a training patch ~5: forward, backward and the
    optimiser, measured on CPU in benchmarks/large.py), and the validation proposed for that cost."""
    sides = np.broadcast_to(np.asarray(patch), np.shape(sizes)[1:])
    strides = sides // 2  # sliding windows overlap by half, as predict and evaluate slide them
    per_image = np.mean(
        [np.prod([math.ceil(max(n - p, 0) / s) + 1 for n, p, s in zip(shape, sides, strides)]) for shape in sizes]
    )
    windows, train = per_image * val_images, 5 * epoch_patches
    whole = (
        f"the whole {val_images} val {unit} are ~{windows:.0f} windows, {windows / train:.0%} of an epoch's training"
    )
    if windows <= 0.1 * train:
        return [("train.val_patches", 0, f"{whole}: cheap enough to validate them every epoch")]
    # what keeps validation (patches and the views) near 10% of the epoch: 32 to 256 patches
    count = int(np.clip(max(16, int((0.1 * train - val_images) // 16) * 16), 32, 256))
    cost = (count + val_images) / train
    rows = [("train.val_patches", count, f"{whole}; {count} fixed val patches and the views cost {cost:.0%}")]
    if cost > 0.2:
        every = math.ceil(cost / 0.1)
        rows.append(("train.val_every", every, f"short epochs: validating every {every} keeps it near 10%"))
    return rows


def spacing_row(fp: Fingerprint) -> tuple:
    """`inputs.*.spacing`: auto, with what it resolves to and why (nnU-Net's rule), or the params' own."""
    if fp.given:
        return ("inputs.*.spacing", list(fp.given), f"as params; auto would resolve to {mm(fp.auto)} mm here")
    median, size = np.median(fp.spacings, 0), np.median(fp.shapes, 0)
    why = f"resolves to {mm(fp.auto)} mm here: the median spacing per axis of {len(fp.spacings)} scans"
    why += " (prepare: the training split's)"
    coarse = int(np.argmax(median))
    others = [a for a in range(len(median)) if a != coarse]
    finest, shortest = max(median[others]), f"{min(size[others]):.0f}"
    coarser = (
        f"{axes(median)[coarse]} is coarse ({median[coarse]:.3g} mm, over {ANISOTROPY}x the others' {finest:.3g} mm)"
    )
    if not np.isclose(fp.auto[coarse], median[coarse]):  # nnU-Net's rule for a coarse, short axis
        why += f", but {coarser} and short ({size[coarse]:.0f} voxels, under a third of {shortest}): "
        why += "its 10th percentile, as nnU-Net, so that the finer scans keep their slices"
    elif median[coarse] > ANISOTROPY * finest:
        why += f"; {coarser} but not short ({size[coarse]:.0f} voxels, not under a third of {shortest}), "
        why += "so nnU-Net's 10th-percentile rule does not apply"
    return ("inputs.*.spacing", "auto", why)


def axes(shape: Sequence) -> tuple[str, ...]:
    return AXES[-len(shape) :]


def mm(values: Sequence[float] | np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def voxels(shape: Sequence[float] | np.ndarray) -> str:
    return "x".join(f"{round(n)}" for n in shape)

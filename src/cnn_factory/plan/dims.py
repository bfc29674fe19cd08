"""All that a plan does differently for images (two spatial axes) and volumes (three), decided
once, where IMAGES and VOLUMES are built: the words it prints, how deep it pools, the row that
decides the others (images: the mode; volumes: the spacing, nnU-Net's rule), whether a strided
stem is proposed, and what it says about the files' spacing. `dims_of` picks one by the axes of
the files read; the rest of the planner does not ask which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cnn_factory.data.resample import ANISOTROPY
from cnn_factory.model import stem_strides
from cnn_factory.plan.fingerprint import Fingerprint
from cnn_factory.plan.patch import GPU_BUDGET, Patch, Pooling, axes, mm, voxels

# an image's longest side, in pixels, that a patch or a resized image has at most: larger ones
# cost a CPU too much time a step (plan's timing measures what the proposal costs)
LARGEST = 256


@dataclass(frozen=True, kw_only=True)
class Words:
    item: str  # what a row's input is called
    cell: str  # its pixels or voxels
    unit: str  # of sizes: mm for volumes; images are planned in pixels (a spacing of 1 a pixel)


class First(NamedTuple):
    row: tuple  # (params key, value, reason): the row that decides the others
    start: np.ndarray  # the size the patch starts from
    patched: bool  # training on patches (else whole images resized)
    basis: str  # what that size is, for the size's reason


class Stem(NamedTuple):
    rows: list[tuple]  # `model.stem`'s row, where one is proposed
    strides: list[int]  # the stem's stride per axis
    depth: int  # `model.depth`: the poolings after the stem


@dataclass(frozen=True, kw_only=True)
class Dims:
    words: Words
    pooling: Pooling
    first: Callable[[Fingerprint], First]
    stem: Callable[[Fingerprint, Patch, float], Stem]
    spacing: Callable[[Fingerprint], list[str]]  # the fingerprint's lines on the files' spacing
    data_share: float | None  # nnU-Net: a batch covers at most this share of the data set's voxels
    encoders: bool  # timm's pretrained encoders are 2-D
    # the first size is the whole median item, which a CPU pays for in time: the params' own patch
    # caps it there (images start from their objects' size, which a smaller patch would not hold)
    capped: bool


def choose_mode(fp: Fingerprint) -> First:
    """Images: whole images resized when small, patches at native resolution when large or their
    objects small, a patch of about four times the typical object; and whole images resized to
    LARGEST on their long side when large with objects a patch that size cannot hold with their
    surroundings (nnU-Net's low-resolution configuration, for the same reason), or with no mask
    output (patches train masks; image-level heads see whole images)."""
    median, objects = fp.grids.median, fp.masks.objects
    seen = f"median image {int(median[0])}x{int(median[1])}"
    small_objects = [n for n, d in objects.items() if 0 < d < max(median) / 32]
    large = max(median) > LARGEST
    largest = max((d for d in objects.values() if d), default=16)
    if not (large or small_objects):
        return First(("inputs.*.mode", "resize", f"{seen} is small: whole images"), np.full(2, max(median)), False, "")
    if not objects or (not small_objects and 4 * largest > LARGEST):
        scale = LARGEST / max(median)
        basis = f"; the median image scaled by {scale:.2g}"
        if objects:
            why = f"{seen}, objects ~{largest:.0f} px across: a {LARGEST}-px patch holds {LARGEST / largest:.1f} of one"
            why += " across (about 4 is the aim)"
            basis += f", its objects ~{largest * scale:.0f} px"
        else:
            why = f"{seen}, image-level outputs only (their heads see whole images)"
        return First(("inputs.*.mode", "resize", f"{why}: whole images resized"), median * scale, False, basis)
    why = seen if large else ""
    if small_objects:
        d = min(objects[n] for n in small_objects)
        why += ("; " if why else "") + f"objects of {d:.0f} px across ({', '.join(small_objects)})"
        why += f": resized to 64 px they would be {d * 64 / max(median):.1f} px"
    start = np.full(2, min(max(4 * largest, 64), max(median), LARGEST))
    return First(("inputs.*.mode", "patch", f"{why}; train at native resolution on patches"), start, True, "")


def choose_spacing(fp: Fingerprint) -> First:
    """Volumes: patches of the median scan at the target spacing."""
    basis = f"; the median scan at the target spacing is {voxels(fp.grids.median)}"
    return First(spacing_row(fp), np.maximum(np.round(fp.grids.median), 1), True, basis)


def spacing_row(fp: Fingerprint) -> tuple:
    """`inputs.*.spacing`: auto, with what it resolves to and why (nnU-Net's rule), or the params' own."""
    g = fp.grids
    if g.given:
        return ("inputs.*.spacing", list(g.given), f"as params; auto would resolve to {mm(g.auto)} mm here")
    median, size = np.median(g.spacings, 0), np.median(g.shapes, 0)
    why = f"resolves to {mm(g.auto)} mm here: the median spacing per axis of {len(g.spacings)} scans"
    why += " (prepare: the training split's)"
    coarse = int(np.argmax(median))
    others = [a for a in range(len(median)) if a != coarse]
    finest, shortest = max(median[others]), f"{min(size[others]):.0f}"
    coarser = (
        f"{axes(median)[coarse]} is coarse ({median[coarse]:.3g} mm, over {ANISOTROPY}x the others' {finest:.3g} mm)"
    )
    if not np.isclose(g.auto[coarse], median[coarse]):  # nnU-Net's rule for a coarse, short axis
        why += f", but {coarser} and short ({size[coarse]:.0f} voxels, under a third of {shortest}): "
        why += "its 10th percentile, as nnU-Net, so that the finer scans keep their slices"
    elif median[coarse] > ANISOTROPY * finest:
        why += f"; {coarser} but not short ({size[coarse]:.0f} voxels, not under a third of {shortest}), "
        why += "so nnU-Net's 10th-percentile rule does not apply"
    return ("inputs.*.spacing", "auto", why)


def stem_for_budget(fp: Fingerprint, patch: Patch, budget: float) -> Stem:
    """Volumes: `model.stem` strided on a CPU budget, a 3-D step 2-3x cheaper (benchmarks/volumes.py),
    keeping an axis over twice as coarse as the others at full resolution; full on a GPU's."""
    if budget > GPU_BUDGET or patch.depth < 2:
        gpu = "a GPU-sized budget: the first level at full resolution, as nnU-Net's"
        full = gpu if budget > GPU_BUDGET else f"{patch.depth} halving only: the first level keeps full resolution"
        return Stem([("model.stem", "full", full)], [1] * len(patch.sides), patch.depth)
    strides = stem_strides("strided", len(patch.sides), list(fp.grids.target))
    kept = [name for name, s in zip(axes(strides), strides) if s == 1]
    why = "no GPU-sized budget: the first level at half resolution (2-3x cheaper a step)"
    why += f"; {', '.join(kept)}, over twice as coarse, keeps its resolution there" if kept else ""
    return Stem([("model.stem", "strided", why)], strides, patch.depth - 1)


def scan_spacing(fp: Fingerprint) -> list[str]:
    """The spacings read, the target and its anisotropy, and each mask's objects in voxels at it."""
    g = fp.grids
    ranges = " x ".join(f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(g.spacings.min(0), g.spacings.max(0)))
    at = g.at_target
    lines = [
        f"  spacing {ranges} mm ({' x '.join(axes(at[0]))}); target spacing {mm(g.target)} mm "
        f"({'params' if g.given else 'auto'}), anisotropy {g.anisotropy:.1f}: scans of {voxels(g.median)} voxels "
        f"(median; {voxels(at.min(0))} to {voxels(at.max(0))})"
    ]
    found = [f"{n} {voxels(d / np.asarray(g.target))}" for n, d in fp.masks.objects.items() if d]
    return lines + ([f"  objects at the target spacing, in voxels: {', '.join(found)}"] if found else [])


IMAGES = Dims(
    words=Words(item="image", cell="pixel", unit="px"),
    pooling=Pooling(deepest=6, least=2, rounding=np.floor),
    first=choose_mode,
    stem=lambda fp, patch, budget: Stem([], [1] * len(patch.sides), patch.depth),  # full resolution: no model.stem row
    spacing=lambda fp: [],  # an image has none
    data_share=None,
    encoders=True,
    capped=False,
)
VOLUMES = Dims(
    words=Words(item="scan", cell="voxel", unit="mm"),
    pooling=Pooling(deepest=4, least=1, rounding=np.round),  # the whole median scan, little padding
    first=choose_spacing,
    stem=stem_for_budget,
    spacing=scan_spacing,
    data_share=0.05,
    encoders=False,
    capped=True,
)


def dims_of(fp: Fingerprint) -> Dims:
    return {2: IMAGES, 3: VOLUMES}[fp.grids.axes]

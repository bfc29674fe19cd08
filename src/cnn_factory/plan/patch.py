"""The patch and the network's depth that fit a memory budget, images and volumes alike: the
cost model of activations kept for backward, nnU-Net's cut of the side longest in mm, and the
poolings that bring the deepest map to 4-8 along the in-plane axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# bytes of activations kept for backward per pixel and filter of a level, measured for this UNet in
# fp32 (conv, norm and ReLU outputs of two convolutions, the pool, the decoder's copies): ~ 4 x 12
BYTES_PER_FEATURE = 48
MIN_SIDE = 8  # a patch side is not cut below this many pixels or voxels
MAX_DEPTH = 5
GPU_BUDGET = 12 * 2**30  # a budget above this is a GPU's: 32 filters and a full-resolution stem
AXES = ("depth", "height", "width")
Cost = Callable[..., float]  # activations of (sides, depth) for the proposed filters, heads and channels


def activations(sides: Sequence[float], depth: int, filters: int, heads: int, channels: int) -> float:
    """Bytes of activations kept for backward per patch; `heads`: the encoder and a decoder per mask."""
    per_level = [filters * 2**k * float(np.prod(sides)) / 2 ** (len(sides) * k) for k in range(depth + 1)]
    return BYTES_PER_FEATURE * sum(per_level) * heads * (channels / 3 + 1)


@dataclass(frozen=True, kw_only=True)
class Pooling:
    deepest: int  # `model.depth`: pool while the deepest map's in-plane side stays at least this
    least: int  # the fewest poolings
    # a side to a multiple of 2**depth: np.round (little padding) or np.floor
    rounding: Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Patch:
    sides: list[int]
    depth: int
    cut: list[int]  # the axes cut, one entry a cut


def fit_patch(
    start: np.ndarray, target: Sequence[float], pooling: Pooling, budget: float, cost: Cost, multiple: int
) -> Patch:
    """nnU-Net's patch: from `start`, the axis longest in mm (then in voxels) cut by 2**depth until
    two patches fit `budget`; each side a multiple of 2**depth and of `multiple`."""
    patch, cut = np.asarray(start, float), list[int]()
    while True:
        depth = pool_depth(patch, target, pooling)
        step = max(2**depth, multiple)
        patch = np.maximum(pooling.rounding(patch / step), 1).astype(int) * step
        longer = [a for a in range(len(patch)) if patch[a] > MIN_SIDE]
        if 2 * cost(patch, depth) <= budget or not longer:
            return Patch(sides=[int(n) for n in patch], depth=depth, cut=cut)
        axis = max(longer, key=lambda a: (patch[a] * target[a], patch[a]))
        patch[axis] = max(MIN_SIDE, patch[axis] - step)
        cut.append(axis)


def pool_depth(patch: Sequence[float] | np.ndarray, target: Sequence[float], pooling: Pooling) -> int:
    """Poolings until the deepest map is about 4-8 along the in-plane axes (all but the coarsest),
    and no more than leave a voxel along the shortest side."""
    coarse = int(np.argmax(target))
    plane = min(n for a, n in enumerate(patch) if a != coarse)
    depth = math.floor(math.log2(max(plane / pooling.deepest, 1)))
    return max(pooling.least, min(depth, MAX_DEPTH, math.floor(math.log2(max(min(patch), 1)))))


def axes(shape: Sequence) -> tuple[str, ...]:
    return AXES[-len(shape) :]


def mm(values: Sequence[float] | np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def voxels(shape: Sequence[float] | np.ndarray) -> str:
    return "x".join(f"{round(n)}" for n in shape)

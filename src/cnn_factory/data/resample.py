"""One voxel spacing for every scan: the target spacing rule, and resampling to it and back.

    target = target_spacing([s.spacing for s in train], [s.shape for s in train])   # auto
    image = resample(scan.array, scan.spacing, target, order=3)                     # (C, D', H', W')
    labels = resample_labels(truth.array, truth.spacing, target)                    # (D', H', W'), no new values
    probs = to_shape(probs, scan.shape, order=1)                                     # back on the scan's grid

A network sees one spacing, so a 5 mm slice of one scan and a 1 mm slice of another look alike
to it. The target (`auto`) is nnU-Net's (its ExperimentPlanner's `determine_fullres_target_spacing`):
the median spacing of the training scans along each axis, but an axis both coarse and short
(`ANISOTROPY`) takes the 10th percentile of its spacings: the median would throw away the finer
scans' slices, and interpolating the coarsest scans' few slices costs less. Arrays are
(C, *spatial) images or (*spatial) label maps, spatial being (D, H, W) or (H, W), spacing one size
per spatial axis.

Images are interpolated per channel (linear, or cubic with order 3; scipy.ndimage), label maps by
nearest neighbour so that no label value appears that the map did not hold. Voxels are taken as
cells (scipy's grid_mode): resampling to a coarser grid and back returns each voxel to the cell
it came from, and a resample at the same spacing is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ANISOTROPY = 3  # nnU-Net's ANISO_THRESHOLD: spacing and size ratios beyond it make an axis "low resolution"


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> tuple[float, ...]:
    """The spacing every scan is resampled to: the per-axis median of the training scans' spacings,
    with nnU-Net's rule for one coarse and short axis (the module's docstring, docs/volumes.md)."""
    spacing, size = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.percentile(spacing, 50, axis=0)
    median_size = np.percentile(size, 50, axis=0)
    coarse = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != coarse]
    if not others:
        return (float(target[0]),)
    finest_other = max(target[a] for a in others)
    if target[coarse] > ANISOTROPY * finest_other and median_size[coarse] * ANISOTROPY < min(median_size[others]):
        target[coarse] = max(float(np.percentile(spacing[:, coarse], 10)), finest_other)
    return tuple(float(s) for s in target)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """The (*spatial) size of a scan at `target`: the same extent in mm, at least one voxel an axis."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target))


def to_shape(array: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """(C, *spatial) or (*spatial) values brought to (*spatial) `shape`, channel by channel (order
    0: nearest, in the array's dtype; 1: linear, 3: cubic, as float32 unless already float)."""
    spatial = len(shape)
    if tuple(array.shape[-spatial:]) == tuple(shape):
        return array.copy()
    factors = [n / m for n, m in zip(shape, array.shape[-spatial:])]
    values = array if order == 0 or np.issubdtype(array.dtype, np.floating) else array.astype(np.float32)
    channels = values.reshape(-1, *values.shape[-spatial:])
    from scipy.ndimage import zoom  # here: images (data/grids.py) import this module and never resample

    out = [zoom(c, factors, order=order, mode="nearest", grid_mode=True) for c in channels]
    return np.stack(out).reshape(*array.shape[:-spatial], *shape)


def resample(array: np.ndarray, spacing: Sequence[float], target: Sequence[float], order: int = 1) -> np.ndarray:
    """A (C, *spatial) image at `target` spacing: linear (order 1) or cubic (order 3), per channel."""
    return to_shape(array, resampled_shape(array.shape[1:], spacing, target), order)


def resample_labels(labels: np.ndarray, spacing: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """A (*spatial) label map at `target` spacing, by nearest neighbour: the same label values, no new ones."""
    return to_shape(labels, resampled_shape(labels.shape, spacing, target), order=0)

"""Measures of a boolean mask, (H, W) or (D, H, W), in physical units given the size of a pixel
(voxel) along each axis, or in pixels without it.

    measure("area", mask, spacing=(0.2, 0.2))                  # mm^2 at 0.2 mm per pixel
    measure("volume", mask, spacing=(3.0, 0.8, 0.8))           # mL (1000 mm^3)
    measure("ellipse_circumference", mask, None, "largest")    # pixels, of the largest component
    measure("mean_intensity", mask, image=picture)             # the image's mean under the mask

What each measures (`components`: "all" measures the whole mask as one; "largest" keeps only its
largest connected component first; components touch along faces, edges or corners, 8 neighbours
in 2-D, 26 in 3-D):

- area (2-D), volume (3-D): pixels (voxels) times a pixel's area (mm^2), a voxel's volume in mL;
- perimeter (2-D): the length of the mask's contours (holes' included), traced by marching squares
  at half height of the mask smoothed by a Gaussian of one pixel, each step scaled by its axes'
  spacing: within 1% of a disc's 2 pi r, corners rounded off;
- ellipse_circumference (2-D): Ramanujan's approximation of the perimeter of the ellipse with the
  mask's second moments (each pixel a uniform square, so its own variance 1/12 is added per axis),
  as fetal head circumference is measured from a fitted ellipse;
- max_diameter: the largest distance between two pixel (voxel) centres of the mask (the maximum
  Feret diameter), found among the vertices of their convex hull;
- count: connected components (`components` does not apply);
- mean_intensity: the mean of `image` (the first channel) under the mask, in the image's units.

An empty mask measures 0 (mean_intensity NaN).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cnn_factory.scores.masks import Spacing, boundary


@dataclass(frozen=True)
class Measure:
    """One measure: its function of (mask, spacing, image), its unit with and without a spacing,
    and the numbers of spatial axes it applies to."""

    compute: Callable[[np.ndarray, tuple[float, ...], np.ndarray | None], float]
    unit: str  # with a spacing in mm
    pixel_unit: str  # without
    dims: tuple[int, ...] = (2, 3)
    physical: bool = True  # False: the same in either case (a count, an intensity)
    scale: float = 1.0  # from mm (mm^2, mm^3) to `unit`


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The mask's connected components (8 or 26 neighbours): each pixel's component (0 outside), and how many."""
    return ndimage.label(mask, structure=np.ones((3,) * mask.ndim))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The mask's largest connected component; the mask itself when empty."""
    labels, n = _components(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def _size(mask: np.ndarray, spacing: tuple[float, ...], image: np.ndarray | None) -> float:
    return float(np.count_nonzero(mask)) * math.prod(spacing)


def _perimeter(mask: np.ndarray, spacing: tuple[float, ...], image: np.ndarray | None) -> float:
    from skimage.measure import find_contours

    # the staircase of pixel edges is 5-14% longer than a circle it draws; smoothed by a Gaussian of
    # one pixel, a disc's contour is within 1% of 2 pi r from a radius of 5 pixels (a square's corners
    # round off: a 20-pixel square measures 4% short). Padded: contours close at the image's edge.
    smooth = ndimage.gaussian_filter(np.pad(mask.astype(np.float32), 3), 1.0)
    total = 0.0
    for contour in find_contours(smooth, 0.5):
        steps = np.diff(contour, axis=0) * np.asarray(spacing)
        total += float(np.sqrt((steps**2).sum(1)).sum())
    return total


def ellipse_axes(mask: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """(a, b): semi-axes of the ellipse with the non-empty 2-D mask's second moments, in the units of `spacing`."""
    points = np.argwhere(mask) * np.asarray(spacing)
    covariance = np.cov(points.T, bias=True) + np.diag(np.square(spacing)) / 12
    low, high = np.linalg.eigvalsh(covariance)
    return 2 * math.sqrt(max(high, 0.0)), 2 * math.sqrt(max(low, 0.0))  # a uniform ellipse: variance a^2 / 4


def ramanujan(a: float, b: float) -> float:
    """The perimeter of an ellipse of semi-axes a and b (Ramanujan's first approximation)."""
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def _max_diameter(mask: np.ndarray, spacing: tuple[float, ...], image: np.ndarray | None) -> float:
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    points = np.argwhere(boundary(mask)) * np.asarray(spacing)  # the farthest pair lies on the boundary
    if len(points) < 2:
        return 0.0
    with contextlib.suppress(QhullError):  # flat (a line, a 3-D mask one voxel thick): every boundary point
        points = points[ConvexHull(points).vertices]
    return float(pdist(points).max())


def _mean_intensity(mask: np.ndarray, spacing: tuple[float, ...], image: np.ndarray | None) -> float:
    if image is None:
        raise ValueError("mean_intensity needs the image")
    channel = image[0] if image.ndim == mask.ndim + 1 else image
    return float(channel[mask].mean()) if mask.any() else math.nan


MEASURES: dict[str, Measure] = {
    "area": Measure(_size, "mm2", "px", dims=(2,)),
    "volume": Measure(_size, "mL", "voxels", dims=(3,), scale=1 / 1000),  # mm^3 -> mL
    "perimeter": Measure(_perimeter, "mm", "px", dims=(2,)),
    "ellipse_circumference": Measure(lambda m, s, _: ramanujan(*ellipse_axes(m, s)), "mm", "px", dims=(2,)),
    "max_diameter": Measure(_max_diameter, "mm", "px"),
    "count": Measure(lambda mask, spacing, _: float(_components(mask)[1]), "components", "components", physical=False),
    "mean_intensity": Measure(_mean_intensity, "intensity", "intensity", physical=False),
}


def unit(name: str, physical: bool) -> str:
    """The unit of a measure: in mm (mm^2, mL) with a spacing, else pixels (voxels)."""
    spec = MEASURES[name]
    return spec.unit if physical else spec.pixel_unit


def measure(
    name: str, mask: np.ndarray, spacing: Spacing = None, components: str = "all", image: np.ndarray | None = None
) -> float:
    """One of MEASURES of a boolean mask; `spacing` one size per axis (mm), or None for pixels;
    `image` (C, *spatial) or (*spatial) of the mask's size for mean_intensity."""
    mask = np.asarray(mask, bool)
    if spacing is not None and len(spacing) != mask.ndim:
        raise ValueError(f"spacing {spacing} does not give one size per axis of a mask of shape {mask.shape}")
    if components == "largest" and name != "count":
        mask = largest_component(mask)
    if name != "mean_intensity" and not mask.any():
        return 0.0
    spec = MEASURES[name]
    if spacing is None:
        return spec.compute(mask, (1.0,) * mask.ndim, image)
    return spec.compute(mask, tuple(spacing), image) * spec.scale

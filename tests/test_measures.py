"""Measures of masks (scores/measures.py) on generated shapes of known geometry, and a measure's
agreement with its truth (scores/numbers.py's agreement_summary)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnn_factory.scores.bootstrap import intervals
from cnn_factory.scores.measures import MEASURES, measure, ramanujan
from cnn_factory.scores.numbers import agreement_summary


def ellipse(shape: tuple[int, int], a: float, b: float, spacing=(1.0, 1.0), angle: float = 0.0) -> np.ndarray:
    """Pixels whose centres lie in the ellipse of semi-axes a (along the rotated x) and b, in the
    units of `spacing`, centred in the image."""
    y, x = np.indices(shape, dtype=np.float64)
    y, x = (y - (shape[0] - 1) / 2) * spacing[0], (x - (shape[1] - 1) / 2) * spacing[1]
    u, v = x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def test_disc_area_and_perimeter_in_pixels():
    disc = ellipse((201, 201), 60, 60)
    assert measure("area", disc) == pytest.approx(math.pi * 60**2, rel=0.005)
    assert measure("perimeter", disc) == pytest.approx(2 * math.pi * 60, rel=0.01)


def test_disc_area_and_perimeter_in_mm_at_anisotropic_spacing():
    """A disc of radius 12 mm drawn on pixels 0.2 mm tall and 0.3 mm wide."""
    spacing = (0.2, 0.3)
    disc = ellipse((161, 111), 12, 12, spacing)
    assert measure("area", disc, spacing) == pytest.approx(math.pi * 144, rel=0.01)
    assert measure("perimeter", disc, spacing) == pytest.approx(2 * math.pi * 12, rel=0.01)


@pytest.mark.parametrize("angle", [0.0, 0.6])
def test_ellipse_circumference_within_one_percent(angle):
    """Semi-axes 70 and 40 pixels, tilted or not: within 1% of Ramanujan's perimeter of the true
    ellipse (pixelisation moves the fitted axes by well under a pixel)."""
    shape = ellipse((201, 201), 70, 40, angle=angle)
    assert measure("ellipse_circumference", shape) == pytest.approx(ramanujan(70, 40), rel=0.01)


def test_ellipse_circumference_in_mm():
    spacing = (0.5, 0.25)
    shape = ellipse((161, 321), 30, 20, spacing)
    assert measure("ellipse_circumference", shape, spacing) == pytest.approx(ramanujan(30, 20), rel=0.01)


def test_ramanujan_of_a_circle_and_a_flat_ellipse():
    assert ramanujan(1, 1) == pytest.approx(2 * math.pi)
    assert ramanujan(1, 0) == pytest.approx(4, rel=0.005)  # a segment of length 2, there and back: 0.4% short


def test_sphere_volume_in_ml_at_anisotropic_spacing():
    """A sphere of radius 20 mm on voxels of 2.5 x 0.8 x 0.6 mm: 4/3 pi r^3 = 33.5 mL."""
    spacing = (2.5, 0.8, 0.6)
    z, y, x = (np.indices((21, 61, 81)) - np.array([10, 30, 40])[:, None, None, None]) * np.array(spacing)[
        :, None, None, None
    ]
    sphere = x**2 + y**2 + z**2 <= 20**2
    assert measure("volume", sphere, spacing) == pytest.approx(4 / 3 * math.pi * 20**3 / 1000, rel=0.01)
    assert measure("volume", sphere) == int(sphere.sum())  # voxels without a spacing
    assert measure("max_diameter", sphere, spacing) == pytest.approx(40, abs=max(spacing))


def test_component_counts_and_the_largest():
    mask = np.zeros((50, 50), bool)
    mask[2:6, 2:6] = True  # 16 pixels
    mask[10:20, 10:20] = True  # 100
    mask[30, 30] = mask[31, 31] = True  # touching at a corner: one component
    assert measure("count", mask) == 3
    assert measure("count", np.zeros((5, 5, 5), bool)) == 0
    assert measure("area", mask, components="largest") == 100
    assert measure("area", mask, components="all") == 118
    assert measure("count", mask, components="largest") == 3  # a count counts them all


def test_max_diameter_of_a_rectangle_a_disc_and_a_line():
    rect = np.zeros((40, 60), bool)
    rect[5:25, 10:50] = True  # centres from (5, 10) to (24, 49)
    assert measure("max_diameter", rect) == pytest.approx(math.hypot(19, 39))
    assert measure("max_diameter", rect, (0.5, 2.0)) == pytest.approx(math.hypot(19 * 0.5, 39 * 2.0))
    assert measure("max_diameter", ellipse((101, 101), 40, 40)) == pytest.approx(80, abs=1)
    line = np.zeros((10, 30), bool)
    line[4, 3:28] = True  # flat: no hull
    assert measure("max_diameter", line) == 24


def test_mean_intensity_and_empty_masks():
    image = np.zeros((1, 20, 20), np.float32)
    image[0, :, 10:] = 100
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    assert measure("mean_intensity", mask, image=image) == pytest.approx(50)
    assert math.isnan(measure("mean_intensity", np.zeros((20, 20), bool), image=image))
    for name, spec in MEASURES.items():
        if name != "mean_intensity":
            empty = np.zeros((8,) * spec.dims[0], bool)
            assert measure(name, empty, components="largest") == 0


def test_spacing_must_give_one_size_per_axis():
    with pytest.raises(ValueError, match="one size per axis"):
        measure("area", np.ones((4, 4), bool), (1.0, 1.0, 1.0))


def test_bias_and_limits_of_agreement_equal_a_direct_computation():
    rng = np.random.default_rng(3)
    true = rng.uniform(50, 150, 40)
    measured = true * 1.05 + rng.normal(2, 4, 40)
    figures = agreement_summary(true, measured)
    difference = measured - true
    sd = math.sqrt(sum((d - difference.mean()) ** 2 for d in difference) / (len(difference) - 1))
    assert figures["bias"] == pytest.approx(difference.mean())
    assert figures["loa_low"] == pytest.approx(difference.mean() - 1.96 * sd)
    assert figures["loa_high"] == pytest.approx(difference.mean() + 1.96 * sd)
    assert figures["mae"] == pytest.approx(np.abs(difference).mean())
    residual, spread = (difference**2).sum(), ((true - true.mean()) ** 2).sum()
    assert figures["r2"] == pytest.approx(1 - residual / spread)
    assert figures["images"] == 40


def test_agreement_leaves_out_images_without_a_truth_and_resamples():
    true = np.array([10.0, np.nan, 20.0, 30.0, np.nan])
    measured = np.array([11.0, 99.0, 19.0, 33.0, 5.0])
    figures = agreement_summary(true, measured)
    assert figures["images"] == 3
    assert figures["bias"] == pytest.approx((1 - 1 + 3) / 3)
    columns = {"true": true, "measured": measured}
    bounds = intervals(columns, lambda c: agreement_summary(c["true"], c["measured"]), ("bias", "mae"), 200)
    low, high = bounds["bias"]
    assert low <= figures["bias"] <= high
    assert math.isnan(agreement_summary(np.array([np.nan]), np.array([1.0]))["bias"])

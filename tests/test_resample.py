"""The target spacing rule against nnU-Net's by hand, and resampling images and label maps to it and back."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_factory.data.resample import resample, resample_labels, resampled_shape, target_spacing, to_shape

DEPTHS = [2.0, 5.0, 5.0, 5.0, 5.0, 5.0, 8.0, 10.0, 10.0, 10.0]  # median 5, 10th percentile 2 + 0.9 * 3 = 4.7


def test_target_spacing_is_the_median_per_axis():
    spacings = [(3.0, 0.8, 0.7), (2.0, 1.0, 0.7), (2.5, 0.9, 0.8)]
    assert target_spacing(spacings, [(40, 64, 64)] * 3) == pytest.approx((2.5, 0.9, 0.7))
    assert target_spacing([(3.0, 1.0, 1.0)] * 3, [(10, 256, 256)] * 3) == (3.0, 1.0, 1.0)  # 3x: not beyond 3


def test_a_coarse_short_axis_takes_its_10th_percentile():
    spacings = [(d, 1.0, 1.0) for d in DEPTHS]
    assert target_spacing(spacings, [(20, 256, 256)] * 10) == pytest.approx((4.7, 1.0, 1.0))
    # as many voxels along depth as in plane (100 * 3 >= 256): the median stays
    assert target_spacing(spacings, [(100, 256, 256)] * 10) == pytest.approx((5.0, 1.0, 1.0))


def test_the_coarse_axis_is_never_finer_than_the_others():
    spacings = [(d, 1.2, 1.2) for d in [0.5, 0.5, *[5.0] * 8]]  # 10th percentile 0.5
    assert target_spacing(spacings, [(20, 256, 256)] * 10) == pytest.approx((1.2, 1.2, 1.2))


def test_label_maps_keep_their_values_at_a_coarser_spacing_and_back():
    labels = np.zeros((24, 32, 32), np.uint8)
    labels[4:12, 8:20, 6:18] = 2  # edges on even voxels: whole 2-voxel cells along depth
    labels[14:22, 10:14, 20:30] = 5
    coarse = resample_labels(labels, (1.5, 1.0, 1.0), (3.0, 1.0, 1.0))
    assert coarse.shape == (12, 32, 32) and coarse.dtype == np.uint8 and set(np.unique(coarse)) == {0, 2, 5}
    assert np.array_equal(to_shape(coarse, labels.shape, order=0), labels)
    noisy = np.random.default_rng(0).choice(np.array([0, 3, 7], np.int16), size=(16, 20, 20))
    odd = resample_labels(noisy, (1.0, 1.0, 1.0), (2.5, 1.3, 0.7))  # any factors: no value the map did not hold
    assert odd.shape == resampled_shape(noisy.shape, (1.0, 1.0, 1.0), (2.5, 1.3, 0.7)) == (6, 15, 29)
    assert set(np.unique(odd)) <= {0, 3, 7} and odd.dtype == np.int16


@pytest.mark.parametrize("order", [1, 3])
def test_images_resample_channel_by_channel_and_come_back_close(order):
    d, h, w = np.meshgrid(np.arange(16), np.arange(20), np.arange(20), indexing="ij")
    image = np.stack([d * 10.0, np.sin(h / 3) + np.cos(w / 4)]).astype(np.float32)  # (2, D, H, W)
    fine = resample(image, (3.0, 1.0, 1.0), (1.5, 1.0, 1.0), order)
    assert fine.shape == (2, 32, 20, 20) and fine.dtype == np.float32
    # a ramp stays a ramp away from the ends (the cubic spline's edge effects reach a few voxels in)
    assert np.allclose(fine[0, 6:-6, 0, 0], (np.arange(6, 26) - 0.5) / 2 * 10, atol=1e-3 if order == 1 else 0.1)
    assert np.allclose(fine[1, 5], image[1, 2], atol=1e-5)  # channel 1 does not vary along depth: not mixed with 0
    back = to_shape(fine, image.shape[1:], order)
    assert np.abs(back - image).max() < 0.05 * np.abs(image).max()


def test_the_same_spacing_is_the_identity():
    rng = np.random.default_rng(1)
    image, labels = rng.random((2, 16, 18, 20)).astype(np.float32), rng.integers(0, 4, (16, 18, 20))
    spacing = (3.0, 0.8, 0.8)
    assert np.array_equal(resample(image, spacing, spacing), image)
    assert np.array_equal(resample(image, spacing, spacing, order=3), image)
    assert np.array_equal(resample_labels(labels, spacing, spacing), labels)
    assert np.array_equal(to_shape(to_shape(image, (16, 18, 20)), (16, 18, 20)), image)

"""Sliding windows in 2D and 3D from one implementation: images exactly as before, volumes as one pass."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from cnn_factory.inference import flips, gaussian_weights, predict_batch, predict_tiled, upsample
from cnn_factory.outputs import make_output


def outputs(size: list[int], classes: bool = True) -> dict:
    """A mask, a class mask (images only: its softmax and argmax take the channel axis as -3) and a category."""
    found = {
        "mask": make_output("mask", type="segmentation", label=1, size=size),
        "classes": make_output("classes", type="segmentation", labels={"a": 1, "b": 2}, size=size),
        "kind": make_output("kind", type="category", classes=["a", "b"]),
    }
    return found if classes else {n: o for n, o in found.items() if n != "classes"}


class ConvModel(torch.nn.Module):
    """One random convolution with zero padding: translation-equivariant, as a UNet is away from its edges."""

    def __init__(self, dims: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        torch.manual_seed(0)
        conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
        self.conv, self.stride = conv(2, 3, kernel, padding=kernel // 2), stride
        self.spatial = tuple(range(2, 2 + dims))

    def forward(self, x):
        y = self.conv(x)
        small = y[(..., *[slice(None, None, self.stride)] * len(self.spatial))]  # a mask smaller than the input
        found = {"mask": small[:, 0], "classes": small, "kind": y.mean(dim=self.spatial)[:, :2]}
        return {name: value for name, value in found.items() if name != "classes" or len(self.spatial) == 2}


def tiled_2d_as_it_was(model, x, window, overlap, tta, batch_size, outs):
    """The 2-D sliding windows as written before volumes, kept to prove the N-d version gives the same bits."""
    (h, w), (height, width) = window, x.shape[-2:]
    x = F.pad(x, (0, max(w - width, 0), 0, max(h - height, 0)))

    def starts(length, size):
        last, stride = max(length - size, 0), max(1, int(size * (1 - overlap)))
        found = list(range(0, last + 1, stride))
        return found if found[-1] == last else [*found, last]

    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    weight = torch.exp(-(ys[:, None] ** 2) / (2 * (h / 8) ** 2) - xs[None] ** 2 / (2 * (w / 8) ** 2)).clamp(min=1e-3)
    corners = [(y, z) for y in starts(x.shape[-2], h) for z in starts(x.shape[-1], w)]
    sums, coverage = {}, torch.zeros(x.shape[-2:])
    for first in range(0, len(corners), batch_size):
        batch = corners[first : first + batch_size]
        probs = predict_batch(model, torch.cat([x[..., y : y + h, z : z + w] for y, z in batch]), tta, outs)
        for k, (y, z) in enumerate(batch):
            coverage[y : y + h, z : z + w] += weight
            for name, p in probs.items():
                if outs[name].spatial:
                    mask = p[k]
                    if tuple(mask.shape[-2:]) != (h, w):
                        maps = F.interpolate(mask.reshape(1, -1, *mask.shape[-2:]), size=(h, w), mode="bilinear")
                        mask = maps.reshape(*mask.shape[:-2], h, w)
                    total = sums.setdefault(name, torch.zeros((*mask.shape[:-2], *x.shape[-2:])))
                    total[..., y : y + h, z : z + w] += mask * weight
                else:
                    sums[name] = sums.get(name, 0) + p[k] / len(corners)
    return {n: ((v / coverage)[..., :height, :width] if outs[n].spatial else v)[None] for n, v in sums.items()}


@pytest.mark.parametrize(("size", "stride", "tta"), [((13, 21), 1, False), ((13, 21), 2, True), ((5, 11), 1, True)])
def test_images_tile_to_the_same_bits_as_before(size, stride, tta):
    model, outs = ConvModel(2, stride=stride), outputs([8 // stride, 8 // stride])
    x = torch.randn(1, 2, *size, generator=torch.Generator().manual_seed(1))
    new = predict_tiled(model, x, (8, 8), 0.5, tta, 3, outs)
    old = tiled_2d_as_it_was(model, x, (8, 8), 0.5, tta, 3, outs)
    assert new.keys() == old.keys() and all(torch.equal(new[n], old[n]) for n in new)


def test_flips_cover_every_mirroring_with_the_image_order_kept():
    assert flips(2) == [(), (-1,), (-2,), (-2, -1)]
    assert len(set(flips(3))) == 8 and flips(3)[0] == () and (-3, -2, -1) in flips(3)


def test_gaussian_weights_peak_in_the_middle_along_every_axis():
    weights = gaussian_weights((6, 8, 10))
    assert weights.shape == (6, 8, 10) and weights[2:4, 3:5, 4:6].max() == weights.max()
    assert torch.equal(weights, weights.flip(0).flip(1).flip(2))  # symmetric about the centre
    assert weights[3, 4, 5] > weights[0, 4, 5] > 0 and weights.min() >= 1e-3


@pytest.mark.parametrize("size", [(16, 20, 24), (12, 16, 10)])
def test_one_window_over_a_volume_is_one_whole_pass(size):
    """A window as large as the volume (or larger: zero padding, as the convolution's own) is the whole pass."""
    model, outs = ConvModel(3), outputs([16, 16], classes=False)
    x = torch.randn(1, 2, *size, generator=torch.Generator().manual_seed(2))
    tiled = predict_tiled(model, x, (16, 20, 24), 0.5, False, 2, outs)
    whole = predict_batch(model, x, False, outs)
    assert tiled["mask"].shape == (1, *size)
    assert torch.allclose(tiled["mask"], whole["mask"], atol=1e-6)
    if size == (16, 20, 24):
        assert torch.allclose(tiled["kind"], whole["kind"], atol=1e-6)


def window_faces_inside(size, window, overlap) -> torch.Tensor:
    """True at voxels that lie on a face of some window but not on the volume's: there the window's
    zero padding differs from what the whole pass sees."""
    from cnn_factory.inference import window_starts

    bad = torch.zeros(size, dtype=torch.bool)
    for corner in itertools.product(*(window_starts(n, w, overlap) for n, w in zip(size, window))):
        for axis, (start, w, n) in enumerate(zip(corner, window, size)):
            for face in (start, start + w - 1):
                if 0 < face < n - 1:
                    index = [slice(s, s + ww) for s, ww in zip(corner, window)]
                    index[axis] = slice(face, face + 1)
                    bad[tuple(index)] = True
    return bad


@pytest.mark.parametrize("tta", [False, True])
def test_blended_windows_equal_the_whole_pass_away_from_window_edges(tta):
    size, window = (20, 24, 24), (8, 12, 12)
    model, outs = ConvModel(3), outputs([8, 8], classes=False)
    x = torch.randn(1, 2, *size, generator=torch.Generator().manual_seed(3))
    tiled = predict_tiled(model, x, window, 0.5, tta, 4, outs)
    whole = predict_batch(model, x, tta, outs)
    inside = ~window_faces_inside(size, window, 0.5)
    assert inside.float().mean() > 0.3  # enough voxels compared for the test to mean something
    assert torch.allclose(tiled["mask"][0][inside], whole["mask"][0][inside], atol=1e-5)
    assert not torch.allclose(tiled["mask"][0], whole["mask"][0], atol=1e-5)  # the faces do differ: the mask matters
    assert tiled["kind"].shape == (1, 2) and torch.allclose(tiled["kind"].sum(), torch.tensor(1.0))


def test_upsample_brings_a_volume_and_its_channels_to_a_size():
    prob = torch.rand(3, 4, 5, 6)
    assert upsample(prob, (4, 5, 6)) is prob
    assert upsample(prob, (8, 10, 12)).shape == (3, 8, 10, 12)
    assert upsample(torch.full((4, 5, 6), 0.25), (8, 10, 12)).allclose(torch.tensor(0.25))


def test_a_window_must_have_the_inputs_spatial_axes():
    with pytest.raises(ValueError, match="3-D window"):
        predict_tiled(ConvModel(2), torch.zeros(1, 2, 8, 8), (8, 8, 8), 0.5, False, 1, outputs([8, 8]))

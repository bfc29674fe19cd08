"""Sliding-window prediction: windows cover the image, blending keeps values where they belong."""

from __future__ import annotations

import pytest
import torch

from cnn_factory.inference import predict_tiled, window_starts
from cnn_factory.outputs import make_output

OUTPUTS = {
    "mask": make_output("mask", type="segmentation", label=1, size=[8, 8]),
    "small": make_output("small", type="segmentation", label=1, size=[4, 4]),
    "kind": make_output("kind", type="category", classes=["a", "b"]),
}


class PixelModel(torch.nn.Module):
    """A stand-in whose mask logit at each pixel is that pixel's first channel (x10) and whose
    category scores are the window's mean: so a correct tiling reproduces sigmoid(10 x) exactly."""

    def forward(self, x):
        mean = x[:, 0].mean(dim=(1, 2))
        return {"mask": 10 * x[:, 0], "small": 10 * x[:, 0, ::2, ::2], "kind": torch.stack([mean, -mean], 1)}


@pytest.mark.parametrize(("length", "window", "overlap"), [(20, 8, 0.5), (8, 8, 0.5), (5, 8, 0.25), (33, 8, 0.0)])
def test_windows_cover_everything(length, window, overlap):
    starts = window_starts(length, window, overlap)
    covered = set()
    for s in starts:
        covered |= set(range(s, min(s + window, max(length, window))))
    assert set(range(length)) <= covered and starts[0] == 0
    assert all(b - a <= window * (1 - overlap) + 1e-9 or overlap == 0 for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("size", [(20, 28), (8, 8), (5, 11)])
def test_tiled_masks_blend_back_exactly(size):
    torch.manual_seed(0)
    x = torch.randn(1, 3, *size)
    probs = predict_tiled(PixelModel(), x, (8, 8), overlap=0.5, tta=False, batch_size=3, outputs=OUTPUTS)
    assert probs["mask"].shape == (1, *size)
    assert torch.allclose(probs["mask"][0], torch.sigmoid(10 * x[0, 0]), atol=1e-5)
    assert probs["small"].shape == (1, *size)  # masks of another size are brought to the window's, then blended
    assert torch.allclose(probs["kind"][0].sum(), torch.tensor(1.0))  # an average of softmaxes


def test_tiled_with_flips_averages_the_same_values():
    x = torch.randn(1, 3, 12, 20)
    probs = predict_tiled(PixelModel(), x, (8, 8), overlap=0.5, tta=True, batch_size=4, outputs=OUTPUTS)
    assert torch.allclose(probs["mask"][0], torch.sigmoid(10 * x[0, 0]), atol=1e-5)

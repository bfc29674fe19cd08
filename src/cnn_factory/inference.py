"""Running a model over images and volumes: one batch at its input size, or sliding windows over any size.

    probs = predict_batch(model, x, tta=False, outputs=outputs)              # x (B, C, H, W) at the input size
    probs = predict_tiled(model, x, (128, 128), 0.5, False, 16, outputs)      # x (1, C, H, W), any size
    probs = predict_tiled(model, v, (32, 64, 64), 0.5, False, 2, outputs)     # v (1, C, D, H, W), any size
    mask = upsample(probs["round"][0], (1024, 768)) > 0.5                      # back to the label map's size

Probabilities, not logits: sigmoid masks, softmax class masks and classes, numbers as they are; an
`Ensemble`'s averaged over its members (nnU-Net's rule) before any threshold. Predict, evaluate and
patch-mode validation all go through these, so the figures evaluate reports are what predict writes.
Images and volumes share every function: the spatial dimensions are the input's after batch and
channels (2 or 3), and a window is a tuple of as many sizes.
"""

from __future__ import annotations

import functools
import itertools
from types import EllipsisType

import torch
import torch.nn.functional as F

from cnn_factory.layers import SPATIAL
from cnn_factory.outputs import Output

Index = tuple[EllipsisType | slice, ...]  # a window's place: `...` for batch and channels, a slice per spatial axis


def flips(spatial_dims: int) -> list[tuple[int, ...]]:
    """Test-time flips: every subset of the spatial axes, the unflipped pass first (an image: none,
    width, height, both; a volume: the 8 mirrorings, as nnU-Net mirrors)."""
    axes = range(-1, -spatial_dims - 1, -1)
    return [tuple(sorted(c)) for r in range(spatial_dims + 1) for c in itertools.combinations(axes, r)]


class Ensemble(torch.nn.Module):
    """Networks of one model, e.g. the folds of a cross-validation, predicting as one (`predict_batch`).

    Its input is normalised with the first member's per-channel mean and std; `shifts[k]` maps
    that to member k's own normalisation (scale, offset per channel), or is None where the two
    are the same."""

    def __init__(self, members: list[torch.nn.Module], shifts: list[tuple[torch.Tensor, torch.Tensor] | None]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.shifts = shifts

    def member_input(self, k: int, x: torch.Tensor) -> torch.Tensor:
        shift = self.shifts[k]
        return x if shift is None else x * shift[0] + shift[1]


@torch.no_grad()
def predict_batch(model, x: torch.Tensor, tta: bool, outputs: dict[str, Output]) -> dict[str, torch.Tensor]:
    """Probabilities per output: sigmoid (B, *spatial) masks, softmax (B, K + 1, *spatial) class
    masks, softmax (B, K) classes, (B,) numbers; x is (B, C, H, W) or (B, C, D, H, W).

    With tta the input and its flips along every combination of spatial axes are averaged, each
    mask flipped back first. An Ensemble's members are each run so, then averaged."""
    if isinstance(model, Ensemble):
        each = [predict_batch(m, model.member_input(k, x), tta, outputs) for k, m in enumerate(model.members)]
        return {name: torch.stack([p[name] for p in each]).sum(0) / len(each) for name in each[0]}
    passes = flips(x.ndim - 2) if tta else [()]
    sums: dict[str, torch.Tensor] = {}
    for dims in passes:
        logits = model(x.flip(dims) if dims else x)
        for name, value in logits.items():
            value = outputs[name].probabilities(value)
            if dims and outputs[name].spatial:  # a mask of the flipped input, flipped back
                value = value.flip(dims)
            sums[name] = sums.get(name, 0) + value
    return {name: value / len(passes) for name, value in sums.items()}


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows covering 0..length with at least `overlap` of a window shared."""
    last = max(length - window, 0)
    stride = max(1, int(window * (1 - overlap)))
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else [*starts, last]


def gaussian_weights(window: tuple[int, ...]) -> torch.Tensor:
    """(*window) importance of each window pixel or voxel: centres count most, edges least (as nnU-Net
    blends), sigma 1/8 of the window along each axis."""
    offsets = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) - (n - 1) / 2 for n in window), indexing="ij")
    exponent = functools.reduce(torch.add, [-(o**2) / (2 * (n / 8) ** 2) for o, n in zip(offsets, window)])
    return torch.exp(exponent).clamp(min=1e-3)  # every pixel keeps some weight, so no covered pixel divides by 0


@torch.no_grad()
def predict_tiled(
    model,
    x: torch.Tensor,
    window: tuple[int, ...],
    overlap: float,
    tta: bool,
    batch_size: int,
    outputs: dict[str, Output],
) -> dict[str, torch.Tensor]:
    """Sliding-window prediction of one normalised image x (1, C, H, W) or volume (1, C, D, H, W)
    of any size, with a window of as many sizes as it has spatial dimensions.

    Windows of the model's input size overlap by `overlap` along every axis; mask probabilities
    are blended with Gaussian weights into (*spatial) maps ((K + 1, *spatial) for a class mask,
    channel by channel), category and numeric outputs averaged over windows."""
    dims = len(window)
    if x.ndim != dims + 2:
        raise ValueError(f"a {dims}-D window over an input of shape {tuple(x.shape)}; expected {dims} spatial axes")
    shape = tuple(x.shape[-dims:])
    # inputs smaller than a window: padded at the end of each axis (F.pad lists the last axis first)
    x = F.pad(x, [p for size, w in zip(reversed(shape), reversed(window)) for p in (0, max(w - size, 0))])
    starts = [window_starts(length, w, overlap) for length, w in zip(x.shape[-dims:], window)]
    # each window as an index of the spatial axes, whatever precedes them (batch, channels)
    boxes: list[Index] = [
        (..., *(slice(s, s + w) for s, w in zip(corner, window))) for corner in itertools.product(*starts)
    ]
    weight = gaussian_weights(window).to(x.device)
    sums: dict[str, torch.Tensor] = {}
    coverage = torch.zeros(x.shape[-dims:], device=x.device)  # the weights added up at each pixel
    for first in range(0, len(boxes), batch_size):
        batch = boxes[first : first + batch_size]
        crops = torch.cat([x[box] for box in batch])  # (n, C, *window)
        probs = predict_batch(model, crops, tta, outputs)
        for k, box in enumerate(batch):
            coverage[box] += weight
            for name, p in probs.items():
                if outputs[name].spatial:
                    mask = upsample(p[k], window)  # masks of another size than the input: to the window's
                    total = sums.setdefault(name, torch.zeros((*mask.shape[:-dims], *x.shape[-dims:]), device=x.device))
                    total[box] += mask * weight
                else:
                    sums[name] = sums.get(name, 0) + p[k] / len(boxes)
    unpadded: Index = (..., *(slice(0, size) for size in shape))
    blended = {n: (v / coverage)[unpadded] if outputs[n].spatial else v for n, v in sums.items()}
    return {n: v[None] for n, v in blended.items()}  # a batch of one, as predict_batch returns


def upsample(prob: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """A (*spatial) probability map, or (C, *spatial) maps, brought to `size` ((h, w) bilinear,
    (d, h, w) trilinear), e.g. to a label map's own size."""
    dims = len(size)
    if tuple(prob.shape[-dims:]) == tuple(size):
        return prob
    maps = prob.reshape(1, -1, *prob.shape[-dims:]).float()  # (1, C, *spatial)
    resized = F.interpolate(maps, size=tuple(size), mode=SPATIAL[dims].interpolation, align_corners=False)
    return resized.reshape(*prob.shape[:-dims], *size)

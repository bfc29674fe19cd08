"""The heads on the shared encoder, one small class per kind of head (each kind's `build_head` picks one).

Every head takes the encoder's features (a list, full resolution first) and returns logits:
a UNet decoder (B, H, W) for a mask or (B, K, H, W) for a class mask, pooled linear layers (B, K)
for classes and (B,) for a number; of volumes alike, with a depth axis before H.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from cnn_factory.layers import SPATIAL, conv_block, norm_layer


class UpBlock(nn.Module):
    """One decoder level: upsample the deeper feature, join the encoder's feature of this level, convolve."""

    def __init__(self, deep: int, shallow: int, norm: str, upsample: str, join: str, dims: int = 2):
        super().__init__()
        self.join = join
        self.up: nn.Module
        spatial = SPATIAL[dims]
        if upsample == "transpose":
            self.up = spatial.transpose(deep, shallow, 2, stride=2)
        else:  # bilinear (trilinear), then a 1x1 convolution to the encoder feature's width
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode=spatial.interpolation, align_corners=False),
                spatial.conv(deep, shallow, 1),
            )
        self.conv = conv_block(2 * shallow if join == "concat" else shallow, shallow, norm, dims=dims)

    def forward(self, x: torch.Tensor, encoded: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)  # (B, shallow channels, 2h, 2w)
        if encoded is not None and self.join == "concat":
            x = torch.cat([x, encoded], dim=1)
        elif encoded is not None and self.join == "add":
            x = x + encoded
        return self.conv(x)


class Lifting(NamedTuple):
    """A strided stem's last decoder step: its stride per axis, and how it up-samples (NetShape.lift)."""

    scale: list[int]
    upsample: str


class Lift(nn.Module):
    """Up-sampling by `scale` per axis to `cout` channels, normalisation and ReLU: a strided stem's
    last decoder step. Learned ("transpose"), each full-resolution voxel of a coarse one gets its
    own weights; interpolated (+1x1 convolution), edges are as sharp as the half-resolution map's."""

    def __init__(self, cin: int, cout: int, norm: str, upsample: str, scale: list[int]):
        super().__init__()
        spatial, factor = SPATIAL[len(scale)], cast(Any, tuple(scale))  # torch types a tuple by its length
        up: list[nn.Module]
        if upsample == "transpose":
            up = [spatial.transpose(cin, cout, factor, stride=factor, bias=norm == "none")]
        else:
            mode = spatial.interpolation
            up = [nn.Upsample(scale_factor=factor, mode=mode, align_corners=False), spatial.conv(cin, cout, 1)]
        self.layers = nn.Sequential(*up, norm_layer(norm, cout, len(scale)), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, encoded: torch.Tensor | None = None) -> torch.Tensor:
        return self.layers(x)


class UNetDecoder(nn.Module):
    """Upsamples from the deepest feature back to full resolution, one UpBlock per level; returns
    (B, H, W) mask logits, or with `classes` (B, classes, H, W) logits of a class per pixel,
    resized to `size` when that differs from the input's.

    `stride` > 1: the shallowest feature is that much smaller than the input (a timm encoder's 2 or
    4); as segmentation_models_pytorch does, further UpBlocks without a feature to join (halving
    the channels, 16 at least) bring the masks to full resolution. `lift` (the UNet's strided
    stem): as MONAI's UNet does, one Lift to half the channels and the logits from it, with no
    convolution at full resolution (where it would cost most of a step)."""

    def __init__(
        self,
        channels: list[int],
        size: tuple[int, ...],
        norm: str,
        upsample: str,
        join: str,
        classes: int = 0,
        stride: int = 1,
        lift: Lifting | None = None,
    ):
        super().__init__()
        self.size, self.classes = tuple(size), classes
        dims = len(self.size)  # 2: an image's mask, 3: a volume's
        self.blocks = nn.ModuleList(
            UpBlock(deep, shallow, norm, upsample, join, dims)
            for deep, shallow in zip(channels[:0:-1], channels[-2::-1])
        )
        widths = [channels[0]]
        while stride > 1:
            widths.append(max(widths[-1] // 2, 16))
            stride //= 2
        self.finish = nn.ModuleList(
            UpBlock(deep, shallow, norm, upsample, "none", dims) for deep, shallow in zip(widths, widths[1:])
        )
        if lift:
            widths.append(max(widths[-1] // 2, 4))
            self.finish.append(Lift(widths[-2], widths[-1], norm, lift.upsample, lift.scale))
        self.head = SPATIAL[dims].conv(widths[-1], classes or 1, 1)
        self.interpolation = SPATIAL[dims].interpolation

    @classmethod
    def from_options(
        cls, channels: list[int], size: tuple[int, ...] | list[int], options: dict, classes: int = 0
    ) -> UNetDecoder:
        """The decoder a mask kind builds from MultiOutputNet's options (norm, upsample, skip, stride)."""
        o, size = options, tuple(int(n) for n in size)
        return cls(channels, size, o["norm"], o["upsample"], o["skip"], classes, o["stride"], o.get("lift"))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, encoded in zip(self.blocks, features[-2::-1]):
            x = block(x, encoded)
        for block in self.finish:  # (B, C, H / stride, W / stride) -> (B, C', H, W)
            x = block(x, None)
        logits = self.head(x)  # (B, classes or 1, *size)
        if tuple(logits.shape[2:]) != self.size:
            logits = F.interpolate(logits, size=self.size, mode=self.interpolation, align_corners=False)
        return logits if self.classes else logits.squeeze(1)


class ClassHead(nn.Module):
    """Class logits (B, K) from the deepest feature, average-pooled."""

    def __init__(self, cin: int, classes: int, dropout: float = 0.0, dims: int = 2):
        super().__init__()
        pool = SPATIAL[dims].average(1)
        self.linear = nn.Sequential(pool, nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, classes))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.linear(features[-1])


class NumericHead(nn.Module):
    """Predicts in the target's units: a linear z-score rescaled by the training split's mean/std."""

    def __init__(self, cin: int, mean: float = 0.0, std: float = 1.0, dropout: float = 0.0, dims: int = 2):
        super().__init__()
        pool = SPATIAL[dims].average(1)
        self.linear = nn.Sequential(pool, nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, 1))
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.linear(features[-1]).squeeze(1) * self.std + self.mean  # (B,)

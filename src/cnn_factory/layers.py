"""Building blocks shared by the encoder (model.py) and the heads (heads.py), for images (2 spatial
dimensions) and volumes (3): `SPATIAL[dims]` is the one place that picks torch's 2-D or 3-D layers.

    block = conv_block(16, 32, norm="batch", dims=3)      # two 3x3x3 convolutions, norm, ReLU
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn


@dataclass(frozen=True)
class Spatial:
    """torch's layers of one number of spatial dimensions."""

    conv: type[nn.Conv2d] | type[nn.Conv3d]
    transpose: type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]
    batch_norm: type[nn.BatchNorm2d] | type[nn.BatchNorm3d]
    max_pool: type[nn.MaxPool2d] | type[nn.MaxPool3d]
    dropout: type[nn.Dropout2d] | type[nn.Dropout3d]
    average: type[nn.AdaptiveAvgPool2d] | type[nn.AdaptiveAvgPool3d]
    interpolation: str  # F.interpolate's and nn.Upsample's linear mode
    memory_format: torch.memory_format  # channels last: what convolutions run fastest on


SPATIAL = {
    2: Spatial(
        nn.Conv2d,
        nn.ConvTranspose2d,
        nn.BatchNorm2d,
        nn.MaxPool2d,
        nn.Dropout2d,
        nn.AdaptiveAvgPool2d,
        "bilinear",
        torch.channels_last,
    ),
    3: Spatial(
        nn.Conv3d,
        nn.ConvTranspose3d,
        nn.BatchNorm3d,
        nn.MaxPool3d,
        nn.Dropout3d,
        nn.AdaptiveAvgPool3d,
        "trilinear",
        torch.channels_last_3d,
    ),
}


def norm_layer(kind: str, channels: int, dims: int = 2) -> nn.Module:
    """model.norm: batch, group (independent of the batch size: for batches of 1 or 2) or none."""
    if kind == "batch":
        return SPATIAL[dims].batch_norm(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


def conv_block(
    cin: int, cout: int, norm: str = "batch", dropout: float = 0.0, dims: int = 2, stride: int | tuple[int, ...] = 1
) -> nn.Sequential:
    """Two 3x3 (or 3x3x3) convolutions, each followed by normalisation and ReLU; `stride` 2 (or 2
    along some axes): the first one halves every side (those sides)."""
    bias, conv = norm == "none", SPATIAL[dims].conv
    layers: list[nn.Module] = [
        conv(cin, cout, 3, stride=cast(Any, stride), padding=1, bias=bias),  # torch types a tuple by its length
        norm_layer(norm, cout, dims),
        nn.ReLU(inplace=True),
        conv(cout, cout, 3, padding=1, bias=bias),
        norm_layer(norm, cout, dims),
        nn.ReLU(inplace=True),
    ]
    if dropout:
        layers.append(SPATIAL[dims].dropout(dropout))
    return nn.Sequential(*layers)

"""Building blocks shared by the encoder (model.py) and the mask decoders (outputs/segmentation.py)."""

from __future__ import annotations

from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """model.norm: batch, group (independent of the batch size: for batches of 1 or 2) or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


def conv_block(cin: int, cout: int, norm: str = "batch", dropout: float = 0.0) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""
    bias = norm == "none"
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
        norm_layer(norm, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
        norm_layer(norm, cout),
        nn.ReLU(inplace=True),
    ]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)

"""The multi-output CNN: a shared UNet encoder, a decoder per segmentation output, a head
per category/numeric output; and the model file that holds everything needed to use it.

    model = MultiOutputNet(in_channels=3, depth=3, filters=16, outputs={...})
    logits = model(x)            # x: (B, C, H, W) normalised -> {name: logits}

The model file (`models/<name>.pt`) is a dict of plain types and tensors, so it loads
with `torch.load(path, weights_only=True)`: no code from the file is ever run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnn_factory.atomic import replace_file
from cnn_factory.config import Config
from cnn_factory.errors import UserError

FORMAT = "cnn-factory/1"


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":  # independent of the batch size: for batches of 1 or 2
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


def conv_block(cin: int, cout: int, norm: str = "batch", dropout: float = 0.0) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""
    bias = norm == "none"
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    ]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """UNet encoder: returns the features of every level, full resolution first."""

    def __init__(self, in_channels: int, channels: list[int], norm: str, dropout: float):
        super().__init__()
        self.channels = channels
        self.levels = nn.ModuleList([conv_block(in_channels, channels[0], norm)])
        for cin, cout in zip(channels, channels[1:]):
            self.levels.append(nn.Sequential(nn.MaxPool2d(2), conv_block(cin, cout, norm, dropout)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)  # (B, channels[i], H / 2**i, W / 2**i)
        return features


class UpBlock(nn.Module):
    """One decoder level: upsample the deeper feature, join the encoder's skip, convolve."""

    def __init__(self, deep: int, skip: int, norm: str, upsample: str, join: str):
        super().__init__()
        self.join = join
        if upsample == "transpose":
            self.up = nn.ConvTranspose2d(deep, skip, 2, stride=2)
        else:  # bilinear, then a 1x1 convolution to the skip's width
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(deep, skip, 1)
            )
        self.conv = conv_block(2 * skip if join == "concat" else skip, skip, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, skip channels, 2h, 2w)
        if self.join == "concat":
            x = torch.cat([x, skip], dim=1)
        elif self.join == "add":
            x = x + skip
        return self.conv(x)


class UNetDecoder(nn.Module):
    """Upsamples from the deepest feature back to full resolution, one UpBlock per level."""

    def __init__(self, channels: list[int], norm: str = "batch", upsample: str = "bilinear", skip: str = "concat"):
        super().__init__()
        self.blocks = nn.ModuleList(
            UpBlock(deep, shallow, norm, upsample, skip) for deep, shallow in zip(channels[:0:-1], channels[-2::-1])
        )
        self.head = nn.Conv2d(channels[0], 1, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, features[-2::-1]):
            x = block(x, skip)
        return self.head(x)  # (B, 1, H, W)


class NumericHead(nn.Module):
    """Predicts in the target's units: a linear z-score rescaled by the training split's mean/std."""

    def __init__(self, cin: int, mean: float = 0.0, std: float = 1.0, dropout: float = 0.0):
        super().__init__()
        self.linear = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, 1))
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(1) * self.std + self.mean  # (B,)


def level_channels(depth: int, filters: int | list[int]) -> list[int]:
    """Filters per level: a list as given, or an int doubled at each of the depth levels down."""
    if isinstance(filters, int):
        return [filters * 2**i for i in range(depth + 1)]
    if len(filters) != depth + 1:
        raise ValueError(f"filters lists {len(filters)} levels; expected depth + 1 = {depth + 1}")
    return list(filters)


class MultiOutputNet(nn.Module):
    """outputs: {name: {"type": ..., "size": [H, W] | None, "classes": [...], "mean"/"std": ...}}."""

    def __init__(
        self,
        in_channels: int,
        depth: int,
        filters: int | list[int],
        outputs: dict[str, dict[str, Any]],
        norm: str = "batch",
        dropout: float = 0.0,
        upsample: str = "bilinear",
        skip: str = "concat",
    ):
        super().__init__()
        self.outputs = outputs
        channels = level_channels(depth, filters)
        self.encoder = Encoder(in_channels, channels, norm, dropout)
        self.decoders = nn.ModuleDict(
            {
                name: UNetDecoder(channels, norm, upsample, skip)
                for name, o in outputs.items()
                if o["type"] == "segmentation"
            }
        )
        heads: dict[str, nn.Module] = {}
        for name, o in outputs.items():
            if o["type"] == "category":
                heads[name] = nn.Sequential(
                    nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(),
                    nn.Dropout(dropout),
                    nn.Linear(channels[-1], len(o["classes"])),
                )
            elif o["type"] == "numeric":
                heads[name] = NumericHead(channels[-1], o.get("mean", 0.0), o.get("std", 1.0), dropout)
        self.heads = nn.ModuleDict(heads)
        self.multiple = 2**depth

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(
                f"input of {x.shape[-2]}x{x.shape[-1]} pixels: height and width must be divisible by "
                f"{self.multiple} (2**depth); resize the input or lower the depth"
            )
        features = self.encoder(x)
        result = {}
        for name, decoder in self.decoders.items():
            logits = decoder(features)
            size = tuple(self.outputs[name]["size"])
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            result[name] = logits.squeeze(1)  # (B, H, W)
        for name, head in self.heads.items():
            result[name] = head(features[-1])  # (B, classes) or (B,)
        return result


def model_args(cfg: Config, manifest: dict) -> dict:
    """Constructor arguments of MultiOutputNet, as plain types (they go into the model file)."""
    outputs = {}
    for name, spec in cfg.outputs.items():
        o = {"type": spec.type, "size": list(spec.size) if spec.size else None, "classes": list(spec.classes)}
        o.update(manifest["outputs"].get(name, {}))  # numeric mean/std of the training split
        outputs[name] = o
    m = cfg.model
    filters = m.filters if isinstance(m.filters, int) else list(m.filters)
    return {
        "in_channels": sum(spec.channels for spec in cfg.inputs.values()),
        "depth": m.depth,
        "filters": filters,
        "outputs": outputs,
        "norm": m.norm,
        "dropout": m.dropout,
        "upsample": m.upsample,
        "skip": m.skip,
    }


def model_meta(cfg: Config, manifest: dict) -> dict:
    """What a user of the model file needs besides the weights: inputs, outputs, normalisation."""
    inputs = {
        n: {"column": s.column, "size": list(s.size), "channels": s.channels, **manifest["inputs"][n]}
        for n, s in cfg.inputs.items()
    }
    outputs = {
        n: {
            "type": s.type,
            "column": s.column,
            "size": list(s.size) if s.size else None,
            "labels": list(s.labels),
            "classes": list(s.classes),
            "loss": s.loss,
            "weight": s.weight,
        }
        for n, s in cfg.outputs.items()
    }
    return {"inputs": inputs, "outputs": outputs}


def save_model(path: Path, model: MultiOutputNet, model_args: dict, meta: dict) -> None:
    """Writes the model file atomically (stages/atomic.py)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    replace_file(
        path, lambda tmp: torch.save({"format": FORMAT, "model_args": model_args, "state_dict": state, **meta}, tmp)
    )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[MultiOutputNet, dict]:
    """Loads a model file safely (weights_only); returns the model in eval mode and its metadata."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found; run `dvc repro train` first") from None
    except Exception as err:  # unpickling errors come in many types
        raise UserError(f"{path}: cannot be loaded as a model file ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path}: not a cnn-factory model file; expected one written by the train stage")
    try:
        model = MultiOutputNet(**checkpoint["model_args"]).to(device)
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:  # written by another version of cnn-factory
        raise UserError(
            f"{path}: its weights do not fit this version's model ({str(err).splitlines()[0]}); "
            "retrain it with `dvc repro train`"
        ) from None
    return model.eval(), checkpoint

"""Encoders from timm: any timm model that can give its feature pyramid (`features_only`) as the
shared encoder of MultiOutputNet, in place of the UNet encoder (`model.encoder: unet`).

    encoder = TimmEncoder("resnet18", in_channels=3)   # random weights: weights come from encoder_weights.py
    features = encoder(x)        # [(B, 64, H/2, W/2), (B, 64, H/4, W/4), ..., (B, 512, H/32, W/32)]
    encoder.channels, encoder.strides   # [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]

Every feature level timm reports is used, shallowest first; the decoders upsample from the
deepest to the shallowest and then the remaining factor to full resolution (encoder.strides[0]).
A model file stores only the encoder's name: loading builds it without weights and fills it from
the file, so it never needs the network.
"""

from __future__ import annotations

import difflib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from functools import cache
from typing import Any

import torch
from torch import nn

from cnn_factory.errors import UserError

UNET = "unet"  # the built-in encoder (model.py); every other name is a timm model
KEY = "params.yaml: model.encoder"


class _Absent(type):
    """A torchvision name timm imports but these encoders never use: any attribute is another
    such name, and using one says what is missing."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Absent(name, (), {"__module__": cls.__module__})

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{cls.__module__}.{cls.__name__} needs torchvision, which is not installed")


class _AbsentTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `torchvision` and its submodules importable as stand-ins (see `timm_module`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []
        stand_in = _Absent(spec.name, (), {"__module__": spec.name})  # its attributes: the module's names
        module.__getattr__ = stand_in.__getattr__  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


@cache
def timm_module() -> Any:
    """timm, imported once. timm imports torchvision at import time (its data transforms, a frozen
    batch norm) but builds and runs these encoders without it; where torchvision is not installed
    (PyPI's torchvision wheels need a CUDA build of torch) stand-ins take its place for the import,
    and only then: afterwards `import torchvision` fails as before, for any library that asks."""
    if importlib.util.find_spec("torchvision") is not None:
        import timm

        return timm
    finder = _AbsentTorchvision()
    sys.meta_path.append(finder)
    try:
        import timm
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    return timm


def create(name: str, in_channels: int, **weights: Any) -> nn.Module:
    """timm's model `name` as a feature pyramid (every level it has), with `in_channels` inputs;
    `weights`: timm's pretrained options (encoder_weights.py), none for random weights. A name timm
    does not know is a one-line UserError with the closest names it knows."""
    timm = timm_module()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, [UNET, *timm.list_models()], n=4, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "timm.list_models() lists timm's names"
        raise UserError(f"{KEY}: {name!r} is neither unet nor a timm model; {hint}")
    try:
        return timm.create_model(name, features_only=True, in_chans=in_channels, **weights)
    except (RuntimeError, ValueError, TypeError, AttributeError, AssertionError) as err:
        if not weights and ("features_only" in str(err) or "feature_info" in str(err)):
            raise UserError(
                f"{KEY}: {name} cannot give a feature pyramid (timm: features_only not supported); "
                "pick a convolutional family such as resnet18, efficientnet_b0, convnext_atto or regnetx_002"
            ) from None
        raise


class TimmEncoder(nn.Module):
    """timm's feature pyramid of `name`: forward gives every level's features, shallowest first."""

    def __init__(self, name: str, in_channels: int):
        super().__init__()
        self.body = create(name, in_channels)
        info: Any = self.body.feature_info  # timm's FeatureInfo
        self.channels: list[int] = list(info.channels())
        self.strides: list[int] = list(info.reduction())
        self.channels_last = "NHWC" in str(getattr(self.body, "output_fmt", "NCHW"))  # e.g. swin's
        if any(b != 2 * a for a, b in zip(self.strides, self.strides[1:])):
            raise UserError(
                f"{KEY}: {name}'s feature levels have strides {self.strides}; the decoders need each level "
                "at half the size of the one before; pick another encoder"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = list(self.body(x))  # [(B, channels[i], H / strides[i], W / strides[i])]
        return [f.permute(0, 3, 1, 2) for f in features] if self.channels_last else features

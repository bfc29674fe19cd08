"""Which device runs the network: the one choice of `train.device`, `--device` and evaluate's."""

from __future__ import annotations

import torch

from cnn_factory.errors import UserError


def pick_device(name: str, what: str = "train.device") -> torch.device:
    """auto: CUDA when present, else CPU; `what` names the setting in the error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what}: 'cuda' asked for but no CUDA device is visible; use auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)

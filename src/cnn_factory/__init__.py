"""cnn-factory: multi-output CNNs (segmentation, category, numeric) trained from a CSV.

    from cnn_factory import load_model
    model, meta = load_model("models/example.pt")     # eval mode; model(x) -> {name: logits}

The library behind the DVC stages in `stages/` and the `cnn-factory` command, in layers that
import downward only (pyproject.toml's import-linter contracts, checked by `make lint`), top to
bottom: `cli`; `predict`, `export`, `plan`, `serve`; `report`; `evaluate`; `training`; `native` (a split
at native resolution); `model`, `inference`; `data`; `config`; `outputs` (one module per output
kind); `encoder_weights` (a timm encoder's starting weights); leaves over tensors and arrays
(`heads`, `encoders`, `losses`, `accumulators`, `palette`, `scores`, `images`, `volumes`, `device`); leaves
(`layers`, `params`, `atomic`, `errors`, `restore`, `runtime`).

Importing torch, dvclive and pandas creates ~350k objects, and Python's cyclic collector walks
them again and again on the way (0.45 s of a 2.3 s start, measured). When the process is the
`cnn-factory` command, the collector stays off until `runtime.setup()` has frozen what the
imports made; the stages do the same in `stages/__init__.py`.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

__version__ = "0.2.0"
__all__ = ["__version__", "load_model"]

if Path((getattr(sys, "argv", None) or [""])[0]).name == "cnn-factory":  # an embedding interpreter may set no argv
    gc.disable()


def __getattr__(name: str) -> Any:
    # load_model imports torch: only when asked for, so `cnn-factory --version` stays instant
    if name == "load_model":
        from cnn_factory.model import load_model

        return load_model
    raise AttributeError(f"module 'cnn_factory' has no attribute {name!r}")

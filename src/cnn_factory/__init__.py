"""cnn-factory: multi-output CNNs (segmentation, category, numeric) trained from a CSV.

    from cnn_factory import load_model
    model, meta = load_model("models/example.pt")     # eval mode; model(x) -> {name: logits}

The library behind the DVC stages in `stages/` and the `cnn-factory` command, in layers that
import downward only, top to bottom (names on one line share a layer). pyproject.toml's
import-linter contract is the source and `make lint` checks it; docs/development.md says what
each layer does; tests/test_layers.py checks that both copies match the contract:

    cli __main__
    serve predict export plan summary compare crossval
    report
    evaluate
    training
    native
    inference model
    data
    config
    outputs
    encoder_weights
    heads encoders losses accumulators palette scores images volumes device
    dicom_scans
    dicom
    layers params atomic errors restore runtime

Importing the library changes nothing in the process: the stages and the `cnn-factory` command
tune their own processes (cnn_factory/runtime.py).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    # load_model imports torch: only when asked for, so `cnn-factory --version` stays instant
    if name == "load_model":
        from cnn_factory.model import load_model

        return load_model
    raise AttributeError(f"module 'cnn_factory' has no attribute {name!r}")

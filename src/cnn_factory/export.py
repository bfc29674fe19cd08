"""Exports a model file as TorchScript or ONNX, with a JSON sidecar describing how to use it.

    cnn-factory export models/example.pt --format torchscript   # models/example.ts + models/example.ts.json
    cnn-factory export models/example.pt --format onnx          # models/example.onnx + models/example.onnx.json

The exported module takes one float tensor x of shape (B, C, H, W), normalised as the
sidecar says (x = (pixels / 255 - mean) / std per channel, inputs stacked as channels),
and returns a tuple of logits in the order the sidecar's `outputs` list gives:
(B, H, W) mask logits (sigmoid > 0.5 is the mask), (B, K + 1, H, W) class-mask logits
(softmax over background and the K classes; the argmax is the class index), (B, K) class logits
(softmax), or (B,) numbers in the target's units. ONNX export needs the `onnx` package.

A folder or quoted glob of model files of one model (the folds) exports as one network: each
member on its own normalisation, their probabilities averaged (as `cnn-factory predict` does), and
returned as the logits whose activation gives them, so that the sidecar reads the same.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from cnn_factory.errors import UserError
from cnn_factory.inference import Ensemble, predict_batch
from cnn_factory.model import ModelFile, MultiOutputNet, model_files
from cnn_factory.native import load_models
from cnn_factory.outputs import Output, Outputs, Writer

SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx"}


class EnsembleLogits(nn.Module):
    """The folds' ensemble as one network: {name: logits} whose activation gives the members'
    averaged probabilities (`Output.to_logits`), each member on its own normalisation."""

    def __init__(self, ensemble: Ensemble, outputs: Outputs):
        super().__init__()
        self.ensemble = ensemble
        self.outputs: dict[str, Output] = dict(outputs.trained)  # with a head: measures are computed from masks

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        probabilities = predict_batch(self.ensemble, x, False, self.outputs)
        return {name: self.outputs[name].to_logits(p) for name, p in probabilities.items()}


class OrderedOutputs(nn.Module):
    """The model with its {name: logits} dict returned as a tuple in a fixed order."""

    def __init__(self, model: MultiOutputNet | EnsembleLogits):
        super().__init__()
        self.model = model
        self.names = list(model.outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(x)
        return tuple(logits[name] for name in self.names)


def sidecar(model_file: ModelFile, names: list[str], fmt: str, file: str) -> dict:
    """What a user of the exported file needs: input shape and normalisation, outputs in order."""
    outputs, first = model_file.outputs, model_file.first
    volume = {  # what a volume's voxels are brought to before they reach the network
        "spacing": list(first.spacing or ()),
        "window": list(first.window) if first.window else None,
        "patch": list(first.size),
        "volume": "voxels (D, H, W) resampled to `spacing` mm (cubic), intensities clipped to `window` (else each "
        "scan's 0.5th percentile to its maximum) and scaled to 0..255, then covered by windows of `patch` voxels",
    }
    return {
        "format": fmt,
        "file": file,
        "input": {
            "name": "x",
            "shape": ["batch", model_file.channels, *first.size],
            "dtype": "float32",
            "layout": f"NC{'DHW'[-len(first.size) :]}, inputs stacked as channels in this order",
            "normalise": "x = (pixels / 255 - mean) / std, per channel, pixels as uint8 RGB or grayscale",
            "inputs": {
                n: {"column": i.column, "size": list(i.size), "channels": i.channels, **i.stats._asdict()}
                for n, i in model_file.inputs.items()
            },
            **(volume if first.spacing else {}),  # a scan's grid; an image has none
        },
        "outputs": [
            {
                "name": n,
                "index": k,
                "type": outputs[n].kind,
                "activation": outputs[n].activation,
                "shape": Writer.of(outputs[n]).logits_shape(),
                **{key: outputs[n].describe().get(key) for key in ("size", "labels", "classes")},
            }
            for k, n in enumerate(names)
        ],
        # outputs without a head (measures): computed from the masks above, as each says
        "computed": [
            {"name": n, "type": o.kind, **recipe}
            for n, o in outputs.items()
            if (recipe := Writer.of(o).recipe()) is not None
        ],
        "model": {
            "epoch": model_file.epoch,
            "val": model_file.val,
            **{k: v for k, v in model_file.model_args.items() if k != "outputs"},
        },
    }


def export_model(model_path: str, fmt: str, out: str | None = None, batch_size: int = 1) -> Path:
    """Writes the exported model and `<out>.json`; returns the exported file's path. Several model
    files of one model (a folder or glob) export as their ensemble, by default beside their folder."""
    files = model_files(model_path)
    network, model_file = load_models(files, "cpu")
    model = EnsembleLogits(network, model_file.outputs) if isinstance(network, Ensemble) else network
    wrapped = OrderedOutputs(model).eval()  # eval: BatchNorm uses its running statistics
    named = Path(model_path) if len(files) == 1 or Path(model_path).is_dir() else files[0].parent
    target = Path(out) if out else named.with_suffix(SUFFIXES[fmt])
    target.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(batch_size, model_file.channels, *model_file.first.size)
    with warnings.catch_warnings():
        # the input-size check in forward() is traced as a constant: the size is fixed here
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.trace(wrapped, example).save(str(target))
        else:
            write_onnx(wrapped, example, target)
    side = sidecar(model_file, wrapped.names, fmt, target.name)
    if len(files) > 1:  # the members' own validation figures describe none of them together
        side["model"] |= {"members": [f.name for f in files], "val": None}
    side_path = target.with_name(target.name + ".json")
    side_path.write_text(json.dumps(side, indent=2) + "\n")
    print(f"export: {target} ({fmt}), described in {side_path}; outputs in order: {', '.join(wrapped.names)}")
    return target


def write_onnx(wrapped: OrderedOutputs, example: torch.Tensor, target: Path) -> None:
    """`wrapped` traced on `example` into an ONNX file, the batch axis dynamic."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it to write the file)
    except ImportError:
        raise UserError("--format onnx needs the onnx package: pip install onnx==1.23.2") from None
    # the TorchScript-based exporter: it needs only `onnx`, not onnxscript, and gives a fixed graph
    torch.onnx.export(
        wrapped,
        (example,),
        str(target),
        dynamo=False,
        input_names=["x"],
        output_names=wrapped.names,
        dynamic_axes={name: {0: "batch"} for name in ["x", *wrapped.names]},
        opset_version=17,
    )

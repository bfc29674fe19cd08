"""The multi-output CNN: a shared encoder (the UNet's, or a timm model's feature pyramid), a decoder
per segmentation output, a head per category/numeric output; and the model file that holds
everything needed to use it.

    model = MultiOutputNet(shape=NetShape(in_channels=3, depth=3, filters=16), outputs={...})  # encoder="resnet18"
    logits = model(x)            # x: (B, C, H, W) normalised -> {name: logits}

The model file (`models/<name>.pt`) is a dict of plain types and tensors, so it loads
with `torch.load(path, weights_only=True)`: no code from the file is ever run.
"""

from __future__ import annotations

import glob
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from cnn_factory.atomic import replace_file
from cnn_factory.config import BEFORE_MAXIMUM, PERCENTILES, InputSpec, ModelConfig, input_spec
from cnn_factory.encoders import UNET, TimmEncoder
from cnn_factory.errors import UserError
from cnn_factory.heads import Lifting
from cnn_factory.layers import SPATIAL, conv_block
from cnn_factory.outputs import Output, Outputs, from_definition, kind

FORMAT = "cnn-factory/2"  # /2: one `heads` dict, built by the output kinds


class Encoder(nn.Module):
    """UNet encoder: the features of every level, shallowest first (of images, or of volumes with
    dims 3). `stem` (`stem_strides`): 1 everywhere is the classic UNet, 2 runs every level at half
    the resolution along that axis (as MONAI's UNet: for volumes, the full-resolution level is
    most of a step's cost)."""

    def __init__(
        self, in_channels: int, channels: list[int], norm: str, dropout: float, dims: int = 2, stem: str | list = "full"
    ):
        super().__init__()
        self.channels, self.stem = channels, stem_strides(stem, dims)
        self.levels = nn.ModuleList([conv_block(in_channels, channels[0], norm, dims=dims, stride=tuple(self.stem))])
        for cin, cout in zip(channels, channels[1:]):
            self.levels.append(nn.Sequential(SPATIAL[dims].max_pool(2), conv_block(cin, cout, norm, dropout, dims)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)  # (B, channels[i], H / 2**i, W / 2**i)
        return features


def stem_strides(stem: str | list[int], dims: int, spacing: list[float] | None = None) -> list[int]:
    """The UNet's first stride per spatial axis: model.stem "full" is 1 everywhere; "strided" is 2,
    except (given the target `spacing` of volumes, mm per axis) along an axis over twice as coarse
    as the finest, which keeps its resolution at the first level, as nnU-Net pools such an axis
    only once the others have caught up. A list is already per axis (what model files record)."""
    if not isinstance(stem, str):
        return [int(n) for n in stem]
    if stem == "full":
        return [1] * dims
    if spacing is None:
        return [2] * dims
    return [1 if mm > 2 * min(spacing) else 2 for mm in spacing]


def resolve_stem(
    stem: str, sizes: list[tuple[int, ...]], depth: int, spacing: list[float] | None, cuda: bool
) -> str | list[int]:
    """model.stem as a model file records it: "full", or the strided stem's stride per axis.

    "auto" is "strided" for volumes trained on the CPU, where the full-resolution level is most of a
    3-D step's cost (16x48x48 patches: 3.4x the strided stem's time a step, benchmarks/volumes.py),
    and "full" for images (their first level is cheap and keeps thin structures), on CUDA (nnU-Net's
    full-resolution stem, as `cnn-factory plan` proposes for a GPU-sized budget), and where the
    inputs' `sizes` do not divide by 2**depth times the strided stem's stride."""
    if stem == "auto":
        strides = stem_strides("strided", 3, spacing) if len(sizes[0]) == 3 and not cuda else None
        fits = strides is not None and not any(n % (s * 2**depth) for size in sizes for n, s in zip(size, strides))
        stem = "strided" if fits else "full"
    return "full" if stem == "full" else stem_strides(stem, len(sizes[0]), spacing)


def resolve_upsample(upsample: str, sizes: list[tuple[int, ...]]) -> str:
    """model.upsample as a model file records it: "auto" is "transpose" for volumes (learned, as
    nnU-Net's and MONAI's 3-D UNets; with params.yaml's defaults on benchmarks/volumes.py's scans,
    0.002 more dice than interpolated over five seeds) and "bilinear" for images (the built-in
    example's figures are its)."""
    if upsample == "auto":
        return "transpose" if len(sizes[0]) == 3 else "bilinear"
    return upsample


def stem_advice(model: ModelConfig, sizes: list[tuple[int, ...]], spacing: list[float] | None, cuda: bool) -> str:
    """One line where volumes would train on the CPU with `model.stem: full` though the strided
    stem fits their sizes (what `auto` and `cnn-factory plan` choose there), else ""."""
    if model.stem != "full" or model.timm or resolve_stem("auto", sizes, model.depth, spacing, cuda) == "full":
        return ""
    return (
        "note: volumes train on the CPU with model.stem full, the first level at full resolution (most of a "
        "3-D step's cost); the strided stem trains about 3x more patches a second (docs/volumes.md#the-network): "
        "dvc exp run -S model.stem=auto"
    )


def level_channels(depth: int, filters: int | list[int]) -> list[int]:
    """Filters per level: a list as given, or an int doubled at each of the depth levels down."""
    if isinstance(filters, int):
        return [filters * 2**i for i in range(depth + 1)]
    if len(filters) != depth + 1:
        raise ValueError(f"filters lists {len(filters)} levels; expected depth + 1 = {depth + 1}")
    return list(filters)


@dataclass(frozen=True, kw_only=True)
class Blocks:
    """How each level's convolutions are built and how a decoder joins the encoder's features."""

    norm: str = "batch"
    dropout: float = 0.0
    upsample: str = "bilinear"
    skip: str = "concat"


@dataclass(frozen=True, kw_only=True)
class NetShape:
    """What MultiOutputNet is built from besides its outputs; the model file keeps it, with the
    outputs, as the plain dict `model_args` (`args`, `from_args`).

    encoder: "unet" (depth, filters and dropout shape it) or a timm model's name (its own levels,
    with random weights: training loads model.weights into it, a model file its trained ones).
    stem: "full", "strided" (docs/params.md) or, as model_args records a strided one, its stride
    per axis (`stem_strides`). lift: how a strided stem's last decoder step up-samples,
    "transpose" (learned, whatever model.upsample says: interpolated, a small structure's edges
    stay as coarse as the half-resolution map; at params.yaml's defaults the tumour dice of
    benchmarks/volumes.py fell from 0.97 to 0.87) or "upsample" (model.upsample's way, as files
    without `lift` do). Files without `dims` are of images, files without `stem` have a full one."""

    in_channels: int
    depth: int
    filters: int | list[int]
    encoder: str = UNET
    dims: int = 2
    stem: str | list[int] = "full"
    lift: str = "upsample"
    blocks: Blocks = Blocks()

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> NetShape:
        """From a model file's `model_args` (its `outputs` left out); an unknown key is a TypeError."""
        blocks = [f.name for f in fields(Blocks)]  # model_args' keys that are Blocks'
        own = {k: v for k, v in args.items() if k not in (*blocks, "outputs")}
        return cls(**own, blocks=Blocks(**{k: args[k] for k in blocks if k in args}))

    def args(self, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The model file's `model_args`: plain types, the outputs' head arguments among them."""
        return {
            "in_channels": self.in_channels,
            "depth": self.depth,
            "filters": self.filters,
            "outputs": outputs,
            **asdict(self.blocks),  # norm, dropout, upsample, skip
            "encoder": self.encoder,
            "dims": self.dims,
            "stem": self.stem,
            "lift": self.lift,
        }


class MultiOutputNet(nn.Module):
    """A shared encoder (as `shape` says) and one head per output, each built by its output kind.

    outputs: {name: head arguments} as `Output.head_args()` gives them, e.g.
    {"round": {"type": "segmentation", "size": [64, 64]}, "area": {"type": "numeric", "mean": 3.2, "std": 1.1}}."""

    def __init__(self, shape: NetShape, outputs: dict[str, dict[str, Any]]):
        super().__init__()
        self.shape, self.outputs = shape, outputs
        dims, blocks = shape.dims, shape.blocks
        self.encoder: Encoder | TimmEncoder
        if shape.encoder == UNET:
            channels = level_channels(shape.depth, shape.filters)
            self.encoder = Encoder(shape.in_channels, channels, blocks.norm, blocks.dropout, dims, shape.stem)
            strides, stride = self.encoder.stem, 1
            self.multiple = [n * 2**shape.depth for n in strides]
            why = "2**depth times the strided stem's stride" if max(strides) > 1 else "2**depth"
            self.divisor = f"{why}); resize the input or lower the depth"
        elif dims != 2:
            raise ValueError(f"model.encoder {shape.encoder}: timm's encoders take images; volumes need unet")
        else:  # timm's levels start at a stride of 2 or 4: the decoders upsample that factor at the end
            self.encoder = TimmEncoder(shape.encoder, shape.in_channels)
            channels, stride, strides = self.encoder.channels, self.encoder.strides[0], [1] * dims
            self.multiple = [self.encoder.strides[-1]] * dims
            self.divisor = f"{shape.encoder}'s largest stride); resize the input"
        options = {**asdict(blocks), "stride": stride, "dims": dims}
        lift = Lifting(strides, "transpose" if shape.lift == "transpose" else blocks.upsample)
        options["lift"] = lift if max(strides) > 1 else None  # a strided stem's: no convolution at full size
        self.heads = nn.ModuleDict({n: kind(o).build_head(o, channels, options) for n, o in outputs.items()})
        self.spatial = [n for n, o in outputs.items() if kind(o).spatial]  # masks; the rest: per image
        self.frozen = False  # freeze_encoder(): the encoder neither learns nor updates its statistics

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> MultiOutputNet:
        """The network a model file's `model_args` describes (see NetShape)."""
        return cls(shape=NetShape.from_args(args), outputs=args["outputs"])

    def args(self) -> dict[str, Any]:
        """The model file's `model_args`: what `from_args` builds this network from."""
        return self.shape.args(self.outputs)

    def freeze_encoder(self, frozen: bool) -> None:
        """train.freeze_encoder_epochs: the encoder runs without gradients and in eval mode (batch-norm
        statistics kept) until released; `train()` keeps a frozen encoder in eval mode."""
        self.frozen = frozen
        self.encoder.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> MultiOutputNet:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(
        self, x: torch.Tensor, views: torch.Tensor | None = None, *, heads: Collection[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """x (B, C, H, W) normalised -> {name: logits} (volumes: (B, C, D, H, W)), of every head or
        of `heads`' (validation scores whole images' views for the image-level outputs alone, without
        running the masks' decoders). With `views` (V, C, H, W) (patch training), masks come from x
        (patches) and image-level outputs from the views (whole images resized to the same size): one
        encoder pass over both, so batch-norm sees in training the mix it sees in its running statistics."""
        for t in (x, views):
            if t is not None and any(n % m for n, m in zip(t.shape[2:], self.multiple)):
                same = len(set(self.multiple)) == 1
                multiple = str(self.multiple[0]) if same else "x".join(str(n) for n in self.multiple)
                raise ValueError(
                    f"input of {'x'.join(str(n) for n in t.shape[2:])} pixels: {'every side' if same else 'the sides'} "
                    f"must be divisible by {multiple} ({self.divisor}"
                )
        if views is None or len(self.spatial) == len(self.heads):
            features = whole = self.encoder(x)  # shallowest first: full resolution for the UNet, 1/2 or 1/4 for timm's
        else:
            both, n = self.encoder(torch.cat([x, views])), len(x)
            features, whole = [f[:n] for f in both], [f[n:] for f in both]
        chosen = self.heads.items() if heads is None else [(n, h) for n, h in self.heads.items() if n in heads]
        return {name: head(features if name in self.spatial else whole) for name, head in chosen}


def model_args(
    model: ModelConfig,
    inputs: Mapping[str, InputSpec],
    outputs: Mapping[str, Output],
    manifest: dict,
    cuda: bool = False,
) -> dict:
    """MultiOutputNet's arguments as the model file keeps them, plain types (`MultiOutputNet.from_args`);
    `cuda`: training runs on CUDA (what `model.stem: auto` resolves to depends on it)."""
    sizes = [spec.size for spec in inputs.values()]
    shape = NetShape(
        in_channels=sum(spec.channels for spec in inputs.values()),
        depth=model.depth,
        filters=model.filters,
        encoder=model.encoder,
        dims=len(sizes[0]),
        stem=resolve_stem(model.stem, sizes, model.depth, manifest.get("spacing"), cuda) if not model.timm else "full",
        lift="transpose",
        blocks=Blocks(
            norm=model.norm, dropout=model.dropout, upsample=resolve_upsample(model.upsample, sizes), skip=model.skip
        ),
    )
    # a head per trained output; the rest (measures) are computed from those, described by model_meta
    return shape.args({n: o.head_args(manifest["outputs"].get(n, {})) for n, o in Outputs(outputs).trained.items()})


def model_meta(
    inputs: Mapping[str, InputSpec],
    outputs: Mapping[str, Output],
    manifest: dict,
    normalisation: tuple[list[float], list[float]] | None = None,
) -> dict:
    """What a user of the model file needs besides the weights: inputs, outputs, normalisation
    (the training split's, or `normalisation`, per channel of the stacked inputs: the encoder's
    pretrained weights')."""
    dims = len(next(iter(inputs.values())).size)
    recorded = {
        n: {
            "column": s.column,
            "size": list(s.size),
            "channels": s.channels,
            "mode": s.mode,
            "scale": s.scale,
            **{k: v for k, v in {"spacing": manifest.get("spacing"), "window": s.window}.items() if k not in s.unused},
            **manifest["inputs"][n],
        }
        for n, s in inputs.items()
    }
    if normalisation is not None:
        mean, std, first = *normalisation, 0
        for spec in recorded.values():
            spec["mean"], spec["std"] = mean[first : first + spec["channels"]], std[first : first + spec["channels"]]
            first += spec["channels"]
    sizes = np.asarray(manifest.get("splits", {}).get("train", {}).get("sizes") or [[0] * dims]).reshape(-1, dims)
    return {
        "inputs": recorded,
        "outputs": {n: o.describe() for n, o in outputs.items()},
        "images": {"median": np.median(sizes, 0).astype(int).tolist()},  # the training images' own size
        "percentiles": list(PERCENTILES),  # a scan's read without a window: ModelFile.percentiles
    }


class ChannelStats(NamedTuple):
    """Per channel, of pixels / 255 in the training split: what the inputs are normalised by."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class InputInfo:
    """One input as the model file records it: what predict reads, and how it is normalised (`stats`)."""

    column: str
    size: tuple[int, ...]  # the network's input (resize mode) or window (patch mode): (H, W), or (D, H, W)
    channels: int
    mode: str  # "resize": whole images brought to `size`; "patch": windows at `scale` x the native size
    scale: float
    stats: ChannelStats
    spacing: tuple[float, ...] | None = None  # volumes: mm per (D, H, W) axis the network sees
    window: tuple[float, float] | None = None  # volumes: intensities mapped to 0..255; None: per-scan percentiles

    @property
    def volume(self) -> bool:
        return len(self.size) == 3


@dataclass(frozen=True)
class ModelFile:
    """A model file's metadata as typed objects: the one place that reads the metadata dict
    (`from_meta`), so predict, evaluate, export and the command line never parse it by hand."""

    inputs: dict[str, InputInfo]
    outputs: Outputs
    model_args: dict[str, Any]
    median_size: tuple[int, ...]  # the training images' own median size, zeros when unknown
    epoch: int | None = None
    val: dict[str, float] | None = None
    init_from: dict[str, str] | None = None  # also None in files from before it was recorded
    # volumes without a window: the percentiles of a scan mapped to 0..255 (config.py's
    # PERCENTILES); files from before the maximum was the top lack them and read as they trained
    percentiles: tuple[float, float] = BEFORE_MAXIMUM

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ModelFile:
        inputs = {
            n: InputInfo(
                column=i["column"],
                size=tuple(int(v) for v in i["size"]),
                channels=int(i["channels"]),
                mode=i.get("mode", "resize"),
                scale=float(i.get("scale", 1.0)),
                stats=ChannelStats(tuple(i["mean"]), tuple(i["std"])),
                spacing=tuple(float(v) for v in i["spacing"]) if i.get("spacing") else None,
                window=(float(i["window"][0]), float(i["window"][1])) if i.get("window") else None,
            )
            for n, i in meta["inputs"].items()
        }
        median = (meta.get("images") or {}).get("median") or [0, 0]
        return cls(
            inputs=inputs,
            outputs=Outputs({name: from_definition(name, d) for name, d in meta["outputs"].items()}),
            model_args=meta.get("model_args", {}),
            median_size=tuple(int(n) for n in median),
            epoch=meta.get("epoch"),
            val=meta.get("val"),
            init_from=meta.get("init_from"),
            percentiles=tuple(float(v) for v in meta.get("percentiles", BEFORE_MAXIMUM)),  # type: ignore[arg-type]
        )

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> tuple[MultiOutputNet, ModelFile]:
        """The network in eval mode and the file's metadata (see `load_model`)."""
        model, meta = load_model(path, device)
        return model, cls.from_meta(meta)

    @property
    def first(self) -> InputInfo:
        """The first input: its size, mode and scale are the model's."""
        return next(iter(self.inputs.values()))

    @property
    def patch(self) -> bool:
        return self.first.mode == "patch"

    @property
    def channels(self) -> int:
        return sum(i.channels for i in self.inputs.values())

    def input_specs(self) -> dict[str, InputSpec]:
        """The inputs as params.yaml would define them (how prepare and predict read a row's files)."""
        return {
            n: input_spec(
                n, i.column, i.size, i.channels, i.mode, i.scale, i.spacing or "auto", i.window, self.percentiles
            )
            for n, i in self.inputs.items()
        }

    def normalisation(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the stacked inputs, shaped (1, C, 1, 1[, 1]) for broadcasting."""
        shape = (1, -1, *[1] * len(self.first.size))
        mean = [m for i in self.inputs.values() for m in i.stats.mean]
        std = [s for i in self.inputs.values() for s in i.stats.std]
        return (torch.tensor(mean, device=device).view(shape), torch.tensor(std, device=device).view(shape))


def save_model(path: Path, model: MultiOutputNet, model_args: dict, meta: dict) -> None:
    """Writes the model file atomically (atomic.py)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    replace_file(
        path, lambda tmp: torch.save({"format": FORMAT, "model_args": model_args, "state_dict": state, **meta}, tmp)
    )


def read_model_file(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """A model file's contents (weights_only), checked to be one: format, model_args, state_dict, metadata."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found; run `dvc repro train` first") from None
    except Exception as err:  # unpickling errors come in many types, some with messages of many lines
        first = (str(err).strip().splitlines() or [""])[0]
        raise UserError(f"{path}: cannot be loaded as a model file ({type(err).__name__}: {first})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path}: not a cnn-factory model file; expected one written by the train stage")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[MultiOutputNet, dict]:
    """Loads a model file safely (weights_only); returns the model in eval mode and its metadata,
    with `init_from` ({"path", "sha256"} of the model file the training started from, or None;
    files written before it was recorded lack the key)."""
    checkpoint = read_model_file(path, device)
    try:
        model = MultiOutputNet.from_args(checkpoint["model_args"]).to(device)
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:  # written by another version of cnn-factory
        raise UserError(
            f"{path}: its weights do not fit this version's model ({str(err).splitlines()[0]}); "
            "retrain it with `dvc repro train`"
        ) from None
    return model.eval(), checkpoint


def model_files(spec: str | Path) -> list[Path]:
    """The model files a command's MODEL names: one file, a folder (every `*.pt` in it, sorted) or
    a quoted glob (`'models/fold-*.pt'`): several make an ensemble where a command takes one."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(path.glob("*.pt"))
        if not found:
            raise UserError(f"{spec}: a folder without model files (*.pt); name a model file or a folder of them")
        return found
    if any(c in str(spec) for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(spec)))
        if not found:
            raise UserError(f"{spec}: no model file matches; check the pattern")
        return found
    return [path]

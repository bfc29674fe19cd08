"""params.yaml, parsed and checked once into typed, frozen pydantic models.

Every stage calls `load_params()` at its start and passes plain values on; nothing else
reads params.yaml. All problems are raised together as one `UserError`, one line each,
naming the key and what was expected:

    params.yaml: train.epoch: unknown key; did you mean 'train.epochs'? (valid here: ...)
    params.yaml: train.batch_size: expected an integer >= 1, got 0

`params.schema.json` (written by `python -m cnn_factory.config`) is these models' JSON Schema:
editors that read it complete and check params.yaml as you type (see docs/params.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Self, get_args

import yaml
from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError, model_validator

from cnn_factory.errors import UserError
from cnn_factory.outputs import KINDS, Outputs
from cnn_factory.params import Shape, Spacing, Strict, Window, custom, number_list, problems, read_yaml, show

PARAMS_FILE = "params.yaml"
PREPARED = Path("data/prepared")  # what prepare writes and train/evaluate read
SPLITS = ("train", "val", "test")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")  # what timm reads as a state dict


class ExampleConfig(Strict):
    rows: int = Field(ge=12, description="number of generated images")
    size: Shape = Field(
        description="[height, width] of the generated images; [depth, height, width]: generated scans (volumes)"
    )
    seed: int = Field(ge=0, description="generator seed: the same seed gives the same files")
    format: Literal["nifti", "dicom"] = Field(
        "nifti", description="scans: nifti (.nii.gz files) | dicom (a DICOM series' folder per scan); labels stay NIfTI"
    )

    @model_validator(mode="after")
    def _dicom_is_for_scans(self) -> Self:
        if self.format == "dicom" and len(self.size) != 3:
            raise custom(
                "example", "dicom writes scans: give example.size three numbers [depth, height, width]", key="format"
            )
        return self


class SplitConfig(Strict):
    val: float = Field(ge=0, lt=1, description="fraction of rows held out for validation")
    test: float = Field(ge=0, lt=1, description="fraction of rows held out for the test split")
    seed: int = Field(ge=0, description="seed of the random split")
    column: str | None = Field(None, min_length=1, description="CSV column naming train/val/test per row")
    group: str | None = Field(
        None,
        min_length=1,
        description="CSV column (e.g. a patient ID) whose rows sharing a value land in one split (the intervals "
        "resample them whole)",
    )
    stratify: str | None = Field(
        None, min_length=1, description="CSV column (e.g. a category output's) whose class shares every split follows"
    )
    folds: int | None = Field(
        None, ge=2, description="K-fold cross-validation over the rows outside the test split (folds/dvc.yaml)"
    )

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> Self:
        if self.val + self.test >= 1:
            raise custom("split", "val + test must leave rows for training (sum below 1)")
        if self.column and (self.group or self.stratify):
            raise custom(
                "split",
                "group and stratify shape the random split; with column the CSV names each row's split: drop one",
            )
        return self

    @property
    def fold_names(self) -> list[str]:
        """The folds' names, "0" to "K-1" (empty without folds): their folders and their DVC stages."""
        return [str(k) for k in range(self.folds or 0)]


class DataConfig(Strict):
    csv: str = Field(min_length=1, description="the CSV; its header names the columns")
    root: str | None = Field(None, min_length=1, description="folder relative paths in the CSV resolve against")
    split: SplitConfig

    @property
    def base(self) -> Path:
        """The folder relative paths in the CSV resolve against: root, or else the CSV's folder."""
        return Path(self.root) if self.root else Path(self.csv).parent

    def resolve(self, value: str) -> Path:
        """Path of a file named in the CSV."""
        return resolve_path(value, self.base)


def resolve_path(value: str, base: Path) -> Path:
    """Absolute paths as they are (the original cnn-factory's /data mount), relative ones under
    `base`; a backslash separates folders as in a path written on Windows (`images\\0001.png`)."""
    path = Path(value.replace("\\", "/"))
    return path if path.is_absolute() else base / path


class Dimensions(NamedTuple):
    """What an input's number of spatial axes decides about its params, in one place (the data
    side's differences live in data/grids.py, the network's in layers.py)."""

    rows: str  # what a table's rows are: images or scans
    modes: tuple[str, ...]  # the modes it trains in
    keys: frozenset[str]  # its own keys among VOLUME_KEYS
    scales: bool  # `scale` applies (volumes are resampled to `spacing` instead)
    encoders: bool  # model.encoder may name a timm encoder
    rules: dict[str, str]  # what the message says of a mode, scale or encoder it refuses


VOLUME_KEYS = frozenset({"spacing", "window"})
DIMENSIONS = {
    2: Dimensions("images", ("resize", "patch"), frozenset(), True, True, {}),
    3: Dimensions(
        "scans",
        ("patch",),
        VOLUME_KEYS,
        False,
        False,
        {
            "mode": "a volume input ([depth, height, width] size) trains on patches: use patch",
            "scale": "volumes are resampled to `spacing`, not scaled: remove scale",
            "encoder": "volume inputs take the unet encoder",
        },
    ),
}


class InputSpec(Strict):
    type: Literal["image"] = Field(description="the only input type")
    size: Shape = Field(
        description="resize: [height, width] images are resized to; patch: the patch size; "
        "[depth, height, width]: a volume input (NIfTI, TIFF stack) and its patch size"
    )
    channels: Literal[1, 3] = Field(description="1 (grayscale) or 3 (RGB)")
    column: str = Field("", min_length=1, description="CSV column of the file path (default: the name)")
    mode: Literal["resize", "patch"] = Field(
        "resize", description="resize: whole images at `size`; patch: patches of `size` at native resolution"
    )
    scale: float = Field(1.0, gt=0, le=4, description="patch: every image is scaled by this first (0.5 halves it)")
    spacing: Spacing = Field(
        "auto", description="volumes: voxel spacing in mm [depth, height, width] scans are resampled to; auto: "
        "the training scans' median (nnU-Net's rule for strongly anisotropic scans)"
    )  # fmt: skip
    window: Window = Field(
        None, description="volumes: intensities [low, high] mapped to 0..255 (e.g. CT's Hounsfield units); "
        "null: each scan's 0.5th percentile to its maximum"
    )  # fmt: skip

    _name: str = PrivateAttr("")
    # window null: the percentiles (low, high) a scan's intensities are mapped to 0..255 from; None:
    # PERCENTILES (below). A model file's own (files before the maximum: 0.5th to 99.5th).
    _percentiles: tuple[float, float] | None = PrivateAttr(None)

    @property
    def percentiles(self) -> tuple[float, float] | None:
        return self._percentiles

    @property
    def name(self) -> str:
        return self._name

    @property
    def volume(self) -> bool:
        """A 3-D input: `size` is [depth, height, width]."""
        return len(self.size) == 3

    @property
    def dimensions(self) -> Dimensions:
        return DIMENSIONS[len(self.size)]

    @property
    def unused(self) -> set[str]:
        """Keys that mean nothing for this input (an image's spacing and window): left out where it is described."""
        return set(VOLUME_KEYS - self.dimensions.keys)

    @model_validator(mode="after")
    def _fields_of_its_dimensions(self) -> Self:
        allowed = self.dimensions
        if self.mode not in allowed.modes:
            raise custom("mode", allowed.rules["mode"], key="mode")
        if self.scale != 1.0 and not allowed.scales:
            raise custom("scale", allowed.rules["scale"], key="scale")
        for key, default in (("spacing", "auto"), ("window", None)):
            if key in self.unused and getattr(self, key) != default:
                raise custom(key, "is for volume inputs ([depth, height, width] size) only; remove it", key=key)
        return self

    def named(self, name: str) -> InputSpec:
        filled = self.model_copy(update={"column": self.column or name})
        filled._name = name
        return filled


# a scan's intensities mapped to 0..255 without `window`: from the 0.5th percentile (dark padding
# and air left out) to the maximum, so that a small bright structure keeps its contrast. With the
# 99.5th percentile (nnU-Net's clip for CT) as the top, a tumour under 0.5% of the voxels was
# clipped to 255 with the brightest 2% of the organ around it: false tumour inside the organ, and
# a test dice of 0.948 against 0.974 with the maximum (benchmarks/volumes.py --defaults, mask only)
PERCENTILES = (0.5, 100.0)
BEFORE_MAXIMUM = (0.5, 99.5)  # model files that do not record theirs were trained with these


def input_spec(
    name: str,
    column: str,
    size: tuple[int, ...] | list[int],
    channels: int,
    mode: str = "resize",
    scale: float = 1.0,
    spacing: Any = "auto",
    window: Any = None,
    percentiles: tuple[float, float] | None = None,
) -> InputSpec:
    """An input as a model file describes it (`percentiles`: those its scans were read with)."""
    fields = {"type": "image", "size": size, "channels": channels, "column": column, "mode": mode, "scale": scale}
    fields |= {k: v for k, v in {"spacing": spacing, "window": window}.items() if k in DIMENSIONS[len(size)].keys}
    spec = InputSpec.model_validate(fields).named(name)
    spec._percentiles = percentiles
    return spec


def _filters(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, list)) or (isinstance(value, int) and value < 1):
        raise custom("filters", f"expected a positive integer or a list per level, got {show(value)}")
    return value


class ModelConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[^/\\]+$", description="the model file is models/<name>.pt")
    depth: int = Field(ge=1, description="down-sampling levels of the UNet encoder")
    filters: Annotated[int | list[int], BeforeValidator(_filters)] = Field(
        description="first level's filters (doubled per level) or one per level"
    )
    norm: Literal["batch", "group", "none"] = Field(description="normalisation after each convolution")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the deeper levels and before the heads")
    upsample: Literal["auto", "bilinear", "transpose"] = Field(
        "auto", description="decoder up-sampling: auto (transpose for volumes, else bilinear), bilinear or transpose"
    )
    skip: Literal["concat", "add", "none"] = Field(description="how the decoder joins the encoder's features")
    stem: Literal["auto", "full", "strided"] = Field(
        "auto",
        description="the UNet's first level: at the input's resolution, at half of it (cheaper), or auto "
        "(strided for volumes trained on the CPU, else full)",
    )
    encoder: str = Field(
        "unet", min_length=1, description="unet (depth, filters) or a timm model with features_only, e.g. resnet18"
    )
    weights: str = Field(
        "none",
        min_length=1,
        description="timm encoder: none (random) | pretrained (timm's source) | a .pth/.safetensors",
    )

    @property
    def timm(self) -> bool:
        """The encoder is a timm model (checked, with its strides, when train builds it)."""
        return self.encoder != "unet"

    @model_validator(mode="after")
    def _weights_fit_encoder(self) -> Self:
        if self.timm and self.stem == "strided":
            raise custom("stem", f"a strided stem is the unet encoder's; {self.encoder} has its own", key="stem")
        if not self.timm and self.weights != "none":
            raise custom(
                "weights",
                "the unet encoder starts from random weights; use none, or a timm model as model.encoder",
                key="weights",
            )
        if self.weights not in ("none", "pretrained") and not self.weights.endswith(WEIGHT_SUFFIXES):
            raise custom(
                "weights",
                f"expected none, pretrained or a file ending in {', '.join(WEIGHT_SUFFIXES)}, got {self.weights!r}",
                key="weights",
            )
        return self

    @model_validator(mode="after")
    def _filters_per_level(self) -> Self:
        f = self.filters
        if isinstance(f, list) and (len(f) != self.depth + 1 or not all(v > 0 for v in f)):
            raise custom("filters", f"expected depth + 1 = {self.depth + 1} positive integers, got {f}", key="filters")
        return self

    @property
    def path(self) -> Path:
        return Path("models") / f"{self.name}.pt"


class EarlyStopping(Strict):
    metric: str = Field(
        min_length=1, description="val/relative_loss, val/loss or val/<output>/<metric>; picks the saved epoch"
    )
    mode: Literal["min", "max"]
    patience: int = Field(ge=0, description="validations without improvement before stopping; 0: never")
    smoothing: float = Field(
        0.9,
        ge=0,
        lt=1,
        description="the saved epoch is the best by the metric's moving average (medians of three); 0: by its values",
    )


Optimizer = Literal["adam", "adamw", "sgd", "rmsprop", "adadelta", "adagrad", "adamax", "nadam"]
Scheduler = Literal["none", "step", "cosine", "plateau", "onecycle"]
Device = Literal["auto", "cpu", "cuda"]
OPTIMIZERS, SCHEDULERS, DEVICES = get_args(Optimizer), get_args(Scheduler), get_args(Device)
LOSSES = {name: cls.losses for name, cls in KINDS.items()}  # the loss names each output kind accepts


class TrainConfig(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    optimizer: Optimizer
    momentum: float = Field(ge=0)
    weight_decay: float = Field(ge=0)
    scheduler: Scheduler
    step_epochs: int = Field(ge=1)
    warmup_epochs: int = Field(ge=0)
    early_stopping: EarlyStopping
    grad_clip: float = Field(ge=0)
    accumulate: int = Field(ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    num_augs: int = Field(ge=0)
    shuffle: bool
    seed: int = Field(ge=0)
    device: Device
    sync_batchnorm: bool
    log_images_every: int = Field(ge=0)
    val_every: int = Field(ge=1)
    patches_per_epoch: int | None = Field(
        None, ge=1, description="patch mode: patches drawn per epoch (default: one per training image)"
    )
    foreground: float = Field(
        0.33, ge=0, le=1, description="patch mode: share of each batch centred on a mask's foreground"
    )
    val_patches: int = Field(
        64, ge=0, description="patch mode: fixed validation patches scored per validation; 0: whole images"
    )
    view_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="patch mode: share of a batch's patches whose whole image trains image-level outputs",
    )
    freeze_encoder_epochs: int = Field(
        0, ge=0, description="epochs the encoder stays frozen (weights and batch-norm statistics), then trains"
    )
    encoder_lr: float = Field(1.0, gt=0, description="the encoder's learning rate, as a multiple of lr")
    init_from: str | None = Field(
        None, min_length=1, description="model file whose weights (those whose names and shapes fit) start training"
    )
    monitor_system: bool = Field(False, description="dvclive also logs CPU, GPU, memory and disk use (system/...)")


Probability = Field(ge=0, le=1)


def _zoom(value: Any) -> tuple[float, float]:
    if not (number_list(value, (2,)) and all(x > 0 for x in value) and value[0] <= value[1]):
        raise custom("scale", f"expected [smallest, largest] zoom, e.g. [0.9, 1.1], got {show(value)}")
    return (float(value[0]), float(value[1]))


class AugmentConfig(Strict):
    hflip: float = Probability
    vflip: float = Probability
    rotate: float = Field(ge=0, description="max degrees either way")
    scale: Annotated[tuple[float, float], BeforeValidator(_zoom)] = Field(description="[smallest, largest] zoom")
    translate: float = Field(ge=0, description="max shift, fraction of the size")
    shear: float = Field(ge=0, description="max degrees")
    crop: float = Field(gt=0, le=1, description="smallest area fraction of a random crop (1: none)")
    brightness: float = Field(ge=0)
    contrast: float = Field(ge=0)
    blur: float = Probability
    noise: float = Field(ge=0)


class EvaluateConfig(Strict):
    bootstrap: int = Field(
        default=1000, ge=0, description="bootstrap resamples of the test images for 95% intervals; 0: none"
    )
    seed: int = Field(default=0, ge=0, description="seed of the bootstrap resampling")
    tolerance: float = Field(
        default=2.0, gt=0, description="surface dice: boundary distance in pixels (volumes: mm) counted as agreement"
    )
    worst: int = Field(default=6, ge=0, description="test images with the lowest dice drawn per segmentation output")


class Config(Strict):
    """cnn-factory's params.yaml: the only configuration of the pipeline (docs/params.md)."""

    example: ExampleConfig
    data: DataConfig
    inputs: dict[str, InputSpec] = Field(min_length=1)
    outputs: Outputs  # at least one
    model: ModelConfig
    train: TrainConfig
    augment: AugmentConfig
    evaluate: EvaluateConfig = EvaluateConfig()

    @model_validator(mode="after")
    def _across_sections(self) -> Self:
        lines = []
        sizes = {spec.size for spec in self.inputs.values()}
        if len(sizes) > 1:
            lines.append(f"inputs: all inputs must share one size, got {sorted(sizes)}")
        if len({(spec.mode, spec.scale) for spec in self.inputs.values()}) > 1:
            lines.append("inputs: all inputs are stacked as channels, so they must share mode and scale")
        if self.patch_mode and not self.outputs.spatial:
            lines.append(
                "inputs: mode patch needs a segmentation output to train on patches; use mode resize for "
                "image-level outputs only"
            )
        if len({(spec.spacing, spec.window) for spec in self.inputs.values()}) > 1:
            lines.append("inputs: all inputs are stacked as channels, so they must share spacing and window")
        strided = self.model.stem == "strided"
        multiple = 2 ** (self.model.depth + strided)
        for name, spec in self.inputs.items():  # a timm encoder's strides are checked when train builds it
            if not self.model.timm and any(n % multiple for n in spec.size):
                rule = "2**(model.depth + 1) (model.stem strided)" if strided else "2**model.depth"
                lines.append(
                    f"inputs.{name}.size: {list(spec.size)} must be divisible by {rule} = {multiple}; "
                    "change the size or lower model.depth"
                )
            if self.model.timm and not spec.dimensions.encoders:
                lines.append(f"model.encoder: {self.model.encoder} takes images; {spec.dimensions.rules['encoder']}")
        axes = len(self.first_input.size)
        for name, output in self.outputs.spatial.items():
            size = getattr(output, "size", None)
            if size is not None and len(size) != axes:
                lines.append(
                    f"outputs.{name}.size: {list(size)} has {len(size)} numbers but the input's size has {axes}; "
                    "a mask has the input's dimensions (or leave size out)"
                )
            elif size is not None and self.patch_mode and tuple(size) != tuple(self.first_input.size):
                patch = list(self.first_input.size)
                lines.append(
                    f"outputs.{name}.size: {list(size)} differs from the patch, inputs' size {patch}; in patch mode "
                    f"a mask is predicted patch by patch: set it to {patch} or leave size out"
                )
        for name, defined in self.outputs.items():  # e.g. a measure names the mask it measures
            lines += defined.problems_among(f"outputs.{name}", self.outputs, axes)
        for name in sorted(set(self.inputs) & set(self.outputs)):
            lines.append(f"inputs.{name} and outputs.{name}: input and output names must not overlap; rename one")
        if "epoch" in self.outputs:  # eval/metrics.json keys its outputs' figures by name beside the saved epoch
            lines.append("outputs.epoch: the name 'epoch' is taken by the saved epoch in eval/metrics.json; rename it")
        valid = ["val/relative_loss", "val/loss"] + [
            f"val/{n}/{m}" for n, o in self.outputs.trained.items() for m in ("loss", *o.metric_names)
        ]
        if self.train.early_stopping.metric not in valid:
            lines.append(
                f"train.early_stopping.metric: unknown metric {self.train.early_stopping.metric!r}; "
                f"expected one of {', '.join(valid)}"
            )
        if lines:
            raise custom("lines", "\n".join(lines))
        return self

    @property
    def first_input(self) -> InputSpec:
        return next(iter(self.inputs.values()))

    @property
    def volumes(self) -> bool:
        """The inputs are volumes (3-D scans): `size` is [depth, height, width]."""
        return self.first_input.volume

    @property
    def patch_mode(self) -> bool:
        """Patches at native resolution (inputs' mode: patch) rather than whole images resized."""
        return self.first_input.mode == "patch"

    def named(self) -> Config:
        """Every input and output told its name, and the defaults that depend on it filled in
        (a column defaults to the name, a mask's size to the input's)."""
        inputs = {n: s.named(n) for n, s in self.inputs.items()}
        outputs = Outputs({n: o.named(n, self.first_input.size) for n, o in self.outputs.items()})
        return self.model_copy(update={"inputs": inputs, "outputs": outputs})


def load_params(path: str | Path = PARAMS_FILE) -> Config:
    """Reads and checks params.yaml; raises UserError listing every problem."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run from the repository root") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_params(raw, str(path))


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Config:
    try:
        return Config.model_validate(raw).named()
    except ValidationError as err:
        raise UserError("\n".join(f"{source}: {line}" for line in problems(err, Config))) from None


def schema() -> dict:
    """The JSON Schema of params.yaml, as shipped in params.schema.json."""
    return Config.model_json_schema()


if __name__ == "__main__":  # python -m cnn_factory.config > params.schema.json
    json.dump(schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")

"""What params.yaml describes, as frozen dataclasses, and the names each key accepts.

`cnn_factory.config` fills these from params.yaml (and re-exports them); the stages receive them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREPARED = Path("data/prepared")  # what prepare writes and train/evaluate read

OUTPUT_TYPES = ("segmentation", "category", "numeric")
LOSSES = {
    "segmentation": ("binary_crossentropy", "dice", "bce_dice", "jaccard", "focal"),
    "category": ("categorical_crossentropy",),
    "numeric": ("mse", "mae"),
}
METRICS = {"segmentation": ("dice", "iou"), "category": ("accuracy", "f1_macro"), "numeric": ("mae",)}
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adadelta", "adagrad", "adamax", "nadam")
SCHEDULERS = ("none", "step", "cosine", "plateau", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NORMS = ("batch", "group", "none")
UPSAMPLES = ("bilinear", "transpose")
SKIPS = ("concat", "add", "none")
DEVICES = ("auto", "cpu", "cuda")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class InputSpec:
    name: str
    column: str
    size: tuple[int, int]  # (H, W)
    channels: int  # 1 or 3


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type: str  # one of OUTPUT_TYPES
    column: str
    loss: str
    weight: float
    size: tuple[int, int] | None = None  # (H, W) of a segmentation mask
    labels: tuple[int, ...] = ()  # label-map values merged into this mask
    classes: tuple[str, ...] = ()  # category names, index = class id
    label_smoothing: float = 0.0  # category
    class_weights: tuple[float, ...] = ()  # category: loss weight per class

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class SplitConfig:
    val: float
    test: float
    seed: int
    column: str | None


@dataclass(frozen=True)
class DataConfig:
    csv: str
    root: str | None
    split: SplitConfig

    def resolve(self, value: str) -> Path:
        """Path of a file named in the CSV: relative paths resolve against root or the CSV's folder."""
        path = Path(value)
        if path.is_absolute():
            return path
        base = Path(self.root) if self.root else Path(self.csv).parent
        return base / path


@dataclass(frozen=True)
class ExampleConfig:
    rows: int
    size: tuple[int, int]
    seed: int


@dataclass(frozen=True)
class ModelConfig:
    name: str
    depth: int
    filters: int | tuple[int, ...]  # first level's (doubled per level) or one per level
    norm: str
    dropout: float
    upsample: str
    skip: str

    @property
    def path(self) -> Path:
        return Path("models") / f"{self.name}.pt"


@dataclass(frozen=True)
class EarlyStopping:
    metric: str  # "val/loss" or "val/<output>/<metric>"
    mode: str  # min | max
    patience: int  # epochs without improvement before stopping; 0: never stop


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    scheduler: str
    step_epochs: int
    warmup_epochs: int
    early_stopping: EarlyStopping
    grad_clip: float
    accumulate: int
    precision: str
    num_augs: int
    shuffle: bool
    seed: int
    device: str
    sync_batchnorm: bool  # under torchrun: batch-norm statistics over all processes
    log_images_every: int
    val_every: int  # validate every this many epochs (and after the last)


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float  # probabilities
    vflip: float
    rotate: float  # max degrees either way
    scale: tuple[float, float]  # zoom range
    translate: float  # max shift, fraction of the size
    shear: float  # max degrees
    crop: float  # smallest area fraction of a random crop (1: no cropping)
    brightness: float  # max change, fraction of the range
    contrast: float
    blur: float  # probability of a Gaussian blur
    noise: float  # std of Gaussian noise, fraction of the range


@dataclass(frozen=True)
class Config:
    example: ExampleConfig
    data: DataConfig
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]
    model: ModelConfig
    train: TrainConfig
    augment: AugmentConfig

"""params.yaml, parsed and checked once into typed, frozen dataclasses.

Every stage calls `load_params()` at its start and passes plain values on; nothing else
reads params.yaml. All problems are collected and raised together as one `UserError`,
one line each, naming the key (`train.lr`) and what was expected.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.errors import UserError

PARAMS_FILE = "params.yaml"
PREPARED = Path("data/prepared")  # what prepare writes and train/evaluate read

OUTPUT_TYPES = ("segmentation", "category", "numeric")
LOSSES = {
    "segmentation": ("binary_crossentropy", "dice", "bce_dice"),
    "category": ("categorical_crossentropy",),
    "numeric": ("mse", "mae"),
}
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULERS = ("none", "cosine")
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
    filters: int

    @property
    def path(self) -> Path:
        return Path("models") / f"{self.name}.pt"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    scheduler: str
    num_augs: int
    shuffle: bool
    seed: int
    device: str


@dataclass(frozen=True)
class Config:
    example: ExampleConfig
    data: DataConfig
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]
    model: ModelConfig
    train: TrainConfig


_MISSING = object()


class _Section:
    """Reads one mapping of params, remembering where it is and which keys were used."""

    def __init__(self, value: Any, where: str, problems: list[str]):
        self.where = where
        self.problems = problems
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping of keys, got {_show(value)}")
            value = {}
        self.values = value
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self.used.add(name)
        if name in self.values:
            return self.values[name]
        if default is _MISSING:
            self.problems.append(f"{self.key(name)}: missing; add it to {PARAMS_FILE}")
        return None if default is _MISSING else default

    def int(self, name: str, default: Any = _MISSING, minimum: int = 1) -> int:
        value = self.raw(name, default)
        if value is None and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            if value is not None:
                self.problems.append(f"{self.key(name)}: expected an integer, got {_show(value)}")
            return minimum
        if value < minimum:
            self.problems.append(f"{self.key(name)}: expected an integer >= {minimum}, got {value}")
        return value

    def float(self, name: str, default: Any = _MISSING, minimum: float = 0.0, positive=False) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if value is not None:
                self.problems.append(f"{self.key(name)}: expected a number, got {_show(value)}")
            return 1.0
        if value < minimum or (positive and value <= 0):
            bound = "> 0" if positive else f">= {minimum}"
            self.problems.append(f"{self.key(name)}: expected a number {bound}, got {value}")
        return float(value)

    def str(self, name: str, default: Any = _MISSING, choices: tuple[str, ...] = ()) -> str:
        value = self.raw(name, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            if value is not None:
                self.problems.append(f"{self.key(name)}: expected a non-empty string, got {_show(value)}")
            return ""
        if choices and value not in choices:
            self.problems.append(f"{self.key(name)}: unknown value {value!r}; expected one of {', '.join(choices)}")
        return value

    def bool(self, name: str, default: Any = _MISSING) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            if value is not None:
                self.problems.append(f"{self.key(name)}: expected true or false, got {_show(value)}")
            return False
        return value

    def size(self, name: str, default: Any = _MISSING) -> tuple[int, int]:
        value = self.raw(name, default)
        if (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            return (value[0], value[1])
        if value is not None:
            self.problems.append(
                f"{self.key(name)}: expected [height, width] as two positive integers, got {_show(value)}"
            )
        return (1, 1)

    def section(self, name: str) -> _Section:
        return _Section(self.raw(name), self.key(name), self.problems)

    def done(self) -> None:
        """Reports keys that no reader asked for, with the nearest valid key."""
        for name in self.values:
            if name in self.used:
                continue
            close = difflib.get_close_matches(str(name), sorted(self.used), n=1)
            hint = f"; did you mean {self.key(close[0])!r}?" if close else ""
            valid = ", ".join(sorted(self.used))
            self.problems.append(f"{self.key(name)}: unknown key{hint} (valid here: {valid})")


def _show(value: Any) -> str:
    return "nothing" if value is None else f"{value!r} ({type(value).__name__})"


def load_params(path: str | Path = PARAMS_FILE) -> Config:
    """Reads and checks params.yaml; raises UserError listing every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run from the repository root") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_params(raw, str(path))


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Config:
    problems: list[str] = []
    top = _Section(raw, "", problems)
    config = Config(
        example=_example(top.section("example")),
        data=_data(top.section("data")),
        inputs=_inputs(top.section("inputs")),
        outputs={},
        model=_model(top.section("model")),
        train=_train(top.section("train")),
    )
    outputs = _outputs(top.section("outputs"), config.inputs)
    top.done()
    multiple = 2**config.model.depth
    for spec in config.inputs.values():
        if spec.size[0] % multiple or spec.size[1] % multiple:
            problems.append(
                f"inputs.{spec.name}.size: {list(spec.size)} must be divisible by 2**model.depth = {multiple}; "
                "change the size or lower model.depth"
            )
    for name in sorted(set(config.inputs) & set(outputs)):
        problems.append(f"inputs.{name} and outputs.{name}: input and output names must not overlap; rename one")
    if problems:
        raise UserError("\n".join(f"{source}: {p}" for p in problems))
    return Config(**{**config.__dict__, "outputs": outputs})


def _example(s: _Section) -> ExampleConfig:
    cfg = ExampleConfig(rows=s.int("rows", minimum=12), size=s.size("size"), seed=s.int("seed", minimum=0))
    s.done()
    return cfg


def _data(s: _Section) -> DataConfig:
    csv, root = s.str("csv"), s.str("root", default=None)
    sp = s.section("split")
    split = SplitConfig(
        val=sp.float("val"),
        test=sp.float("test"),
        seed=sp.int("seed", minimum=0),
        column=sp.str("column", default=None),
    )
    for name in ("val", "test"):
        if getattr(split, name) >= 1:
            s.problems.append(f"data.split.{name}: expected a fraction below 1, got {getattr(split, name)}")
    if split.val + split.test >= 1:
        s.problems.append("data.split: val + test must leave rows for training (sum below 1)")
    sp.done()
    s.done()
    return DataConfig(csv=csv, root=root, split=split)


def _inputs(s: _Section) -> dict[str, InputSpec]:
    inputs = {}
    for name in s.values:
        d = s.section(name)
        d.str("type", choices=("image",))
        spec = InputSpec(
            name=name, column=d.str("column", default=name), size=d.size("size"), channels=d.int("channels")
        )
        if spec.channels not in (1, 3):
            s.problems.append(f"inputs.{name}.channels: expected 1 or 3, got {spec.channels}")
        d.done()
        inputs[name] = spec
    if not inputs:
        s.problems.append("inputs: define at least one input, e.g. image: {type: image, size: [64, 64], channels: 3}")
    sizes = {spec.size for spec in inputs.values()}
    if len(sizes) > 1:
        s.problems.append(f"inputs: all inputs must share one size, got {sorted(sizes)}")
    return inputs


def _outputs(s: _Section, inputs: dict[str, InputSpec]) -> dict[str, OutputSpec]:
    outputs = {}
    default_size = next(iter(inputs.values())).size if inputs else (1, 1)
    for name in s.values:
        d = s.section(name)
        kind = d.str("type", choices=OUTPUT_TYPES)
        losses = LOSSES.get(kind, ())
        common = dict(
            name=name,
            type=kind,
            column=d.str("column", default=name),
            loss=d.str("loss", default=losses[0] if losses else None, choices=losses),
            weight=d.float("weight", default=1.0),
        )
        if kind == "segmentation":
            spec = OutputSpec(**common, size=d.size("size", default=list(default_size)), labels=_labels(d))
        elif kind == "category":
            spec = OutputSpec(**common, classes=_classes(d))
        else:
            spec = OutputSpec(**common)
        d.done()
        outputs[name] = spec
    if not outputs:
        s.problems.append("outputs: define at least one output (segmentation, category or numeric)")
    return outputs


def _labels(d: _Section) -> tuple[int, ...]:
    value = d.raw("label")
    values = value if isinstance(value, list) else [value]
    if (
        value is None
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
    ):
        if value is not None:
            d.problems.append(
                f"{d.key('label')}: expected a label value (integer >= 0) or a list of them, got {_show(value)}"
            )
        return ()
    return tuple(values)


def _classes(d: _Section) -> tuple[str, ...]:
    size, classes = d.raw("size", None), d.raw("classes", None)
    if classes is not None:
        if not isinstance(classes, list) or not classes or len(set(map(str, classes))) != len(classes):
            d.problems.append(f"{d.key('classes')}: expected a list of distinct class names, got {_show(classes)}")
            return ()
        if size is not None and size != len(classes):
            d.problems.append(f"{d.key('size')}: is {size} but classes lists {len(classes)} names; make them agree")
        return tuple(str(c) for c in classes)
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        d.problems.append(f"{d.key('size')}: expected the number of classes (integer >= 2), got {_show(size)}")
        return ()
    return tuple(str(i) for i in range(size))


def _model(s: _Section) -> ModelConfig:
    cfg = ModelConfig(name=s.str("name"), depth=s.int("depth"), filters=s.int("filters"))
    if cfg.name and ("/" in cfg.name or "\\" in cfg.name):
        s.problems.append(f"model.name: expected a plain file name without folders, got {cfg.name!r}")
    s.done()
    return cfg


def _train(s: _Section) -> TrainConfig:
    cfg = TrainConfig(
        epochs=s.int("epochs"),
        batch_size=s.int("batch_size"),
        lr=s.float("lr", positive=True),
        optimizer=s.str("optimizer", choices=OPTIMIZERS),
        scheduler=s.str("scheduler", choices=SCHEDULERS),
        num_augs=s.int("num_augs", minimum=0),
        shuffle=s.bool("shuffle"),
        seed=s.int("seed", minimum=0),
        device=s.str("device", choices=DEVICES),
    )
    s.done()
    return cfg

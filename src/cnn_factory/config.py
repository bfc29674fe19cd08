"""params.yaml, parsed and checked once into typed, frozen dataclasses.

Every stage calls `load_params()` at its start and passes plain values on; nothing else
reads params.yaml. All problems are collected and raised together as one `UserError`,
one line each, naming the key (`train.lr`) and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cnn_factory.errors import UserError
from cnn_factory.param_reader import Section, show
from cnn_factory.specs import (  # noqa: F401  (re-exported: stages import them from here)
    DEVICES,
    LOSSES,
    METRICS,
    NORMS,
    OPTIMIZERS,
    OUTPUT_TYPES,
    PRECISIONS,
    PREPARED,
    SCHEDULERS,
    SKIPS,
    SPLITS,
    UPSAMPLES,
    AugmentConfig,
    Config,
    DataConfig,
    EarlyStopping,
    ExampleConfig,
    InputSpec,
    ModelConfig,
    OutputSpec,
    SplitConfig,
    TrainConfig,
)

PARAMS_FILE = "params.yaml"


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
    top = Section(raw, "", problems)
    config = Config(
        example=_example(top.section("example")),
        data=_data(top.section("data")),
        inputs=_inputs(top.section("inputs")),
        outputs={},
        model=_model(top.section("model")),
        train=_train(top.section("train")),
        augment=_augment(top.section("augment")),
    )
    outputs = _outputs(top.section("outputs"), config.inputs)
    top.done()
    _check_early_stopping(config.train.early_stopping, outputs, problems)
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


def _example(s: Section) -> ExampleConfig:
    cfg = ExampleConfig(rows=s.int("rows", minimum=12), size=s.size("size"), seed=s.int("seed", minimum=0))
    s.done()
    return cfg


def _data(s: Section) -> DataConfig:
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


def _inputs(s: Section) -> dict[str, InputSpec]:
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


def _outputs(s: Section, inputs: dict[str, InputSpec]) -> dict[str, OutputSpec]:
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
            classes = _classes(d)
            weights = d.raw("class_weights", None)
            if weights is not None and not (
                isinstance(weights, list)
                and len(weights) == len(classes)
                and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)
            ):
                d.problems.append(
                    f"{d.key('class_weights')}: expected {len(classes)} numbers >= 0, "
                    f"one per class, got {show(weights)}"
                )
                weights = None
            smoothing = d.float("label_smoothing", default=0.0)
            if smoothing >= 1:
                d.problems.append(f"{d.key('label_smoothing')}: expected a number below 1, got {smoothing}")
            spec = OutputSpec(
                **common,
                classes=classes,
                label_smoothing=smoothing,
                class_weights=tuple(float(w) for w in weights or ()),
            )
        else:
            spec = OutputSpec(**common)
        d.done()
        outputs[name] = spec
    if not outputs:
        s.problems.append("outputs: define at least one output (segmentation, category or numeric)")
    return outputs


def _labels(d: Section) -> tuple[int, ...]:
    value = d.raw("label")
    values = value if isinstance(value, list) else [value]
    if (
        value is None
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
    ):
        if value is not None:
            d.problems.append(
                f"{d.key('label')}: expected a label value (integer >= 0) or a list of them, got {show(value)}"
            )
        return ()
    return tuple(values)


def _classes(d: Section) -> tuple[str, ...]:
    size, classes = d.raw("size", None), d.raw("classes", None)
    if classes is not None:
        if not isinstance(classes, list) or not classes or len(set(map(str, classes))) != len(classes):
            d.problems.append(f"{d.key('classes')}: expected a list of distinct class names, got {show(classes)}")
            return ()
        if size is not None and size != len(classes):
            d.problems.append(f"{d.key('size')}: is {size} but classes lists {len(classes)} names; make them agree")
        return tuple(str(c) for c in classes)
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        d.problems.append(f"{d.key('size')}: expected the number of classes (integer >= 2), got {show(size)}")
        return ()
    return tuple(str(i) for i in range(size))


def _model(s: Section) -> ModelConfig:
    depth = s.int("depth")
    filters = s.raw("filters")
    if isinstance(filters, list):
        if len(filters) != depth + 1 or not all(
            isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters
        ):
            s.problems.append(f"model.filters: expected depth + 1 = {depth + 1} positive integers, got {filters}")
        filters = tuple(filters)
    elif isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
        s.problems.append(f"model.filters: expected a positive integer or a list per level, got {show(filters)}")
    cfg = ModelConfig(
        name=s.str("name"),
        depth=depth,
        filters=filters,
        norm=s.str("norm", choices=NORMS),
        dropout=s.float("dropout", default=0.0),
        upsample=s.str("upsample", choices=UPSAMPLES),
        skip=s.str("skip", choices=SKIPS),
    )
    if cfg.name and ("/" in cfg.name or "\\" in cfg.name):
        s.problems.append(f"model.name: expected a plain file name without folders, got {cfg.name!r}")
    if cfg.dropout >= 1:
        s.problems.append(f"model.dropout: expected a probability below 1, got {cfg.dropout}")
    s.done()
    return cfg


def _train(s: Section) -> TrainConfig:
    es = s.section("early_stopping")
    early = EarlyStopping(
        metric=es.str("metric"), mode=es.str("mode", choices=("min", "max")), patience=es.int("patience", minimum=0)
    )
    es.done()
    cfg = TrainConfig(
        epochs=s.int("epochs"),
        batch_size=s.int("batch_size"),
        lr=s.float("lr", positive=True),
        optimizer=s.str("optimizer", choices=OPTIMIZERS),
        momentum=s.float("momentum"),
        weight_decay=s.float("weight_decay"),
        scheduler=s.str("scheduler", choices=SCHEDULERS),
        step_epochs=s.int("step_epochs"),
        warmup_epochs=s.int("warmup_epochs", minimum=0),
        early_stopping=early,
        grad_clip=s.float("grad_clip"),
        accumulate=s.int("accumulate"),
        precision=s.str("precision", choices=PRECISIONS),
        num_augs=s.int("num_augs", minimum=0),
        shuffle=s.bool("shuffle"),
        seed=s.int("seed", minimum=0),
        device=s.str("device", choices=DEVICES),
        sync_batchnorm=s.bool("sync_batchnorm"),
        log_images_every=s.int("log_images_every", minimum=0),
        val_every=s.int("val_every", minimum=1),
    )
    s.done()
    return cfg


def _check_early_stopping(es: EarlyStopping, outputs: dict[str, OutputSpec], problems: list[str]) -> None:
    valid = ["val/loss"] + [
        f"val/{name}/{metric}" for name, spec in outputs.items() for metric in ("loss", *METRICS.get(spec.type, ()))
    ]
    if es.metric and es.metric not in valid:
        problems.append(
            f"train.early_stopping.metric: unknown metric {es.metric!r}; expected one of {', '.join(valid)}"
        )


def _augment(s: Section) -> AugmentConfig:
    cfg = AugmentConfig(
        hflip=s.float("hflip"),
        vflip=s.float("vflip"),
        rotate=s.float("rotate"),
        scale=_zoom(s.raw("scale")),
        translate=s.float("translate"),
        shear=s.float("shear"),
        crop=s.float("crop", positive=True),
        brightness=s.float("brightness"),
        contrast=s.float("contrast"),
        blur=s.float("blur"),
        noise=s.float("noise"),
    )
    for key in ("hflip", "vflip", "blur", "crop"):
        if getattr(cfg, key) > 1:
            s.problems.append(f"augment.{key}: expected a number from 0 to 1, got {getattr(cfg, key)}")
    if cfg.scale is None:
        s.problems.append(
            f"augment.scale: expected [smallest, largest] zoom, e.g. [0.9, 1.1], got {show(s.raw('scale'))}"
        )
    s.done()
    return cfg


def _zoom(value: Any) -> tuple[float, float] | None:
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
        and value[0] <= value[1]
    )
    return (float(value[0]), float(value[1])) if ok else None

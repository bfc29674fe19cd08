"""`cnn-factory train`: the original cnn-factory's training flags, turned into `dvc exp run -S key=value`.

Each flag maps onto the params.yaml key it means (TRAIN_FLAGS); the overrides are applied to a
copy of params.yaml with dvc's own code and checked before dvc starts, so a bad value is
reported with its key. The run is a DVC experiment, so `dvc exp show` lists it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from cnn_factory.config import DEVICES, LOSSES, OPTIMIZERS, SCHEDULERS, parse_params
from cnn_factory.errors import UserError
from cnn_factory.outputs import kind_name
from cnn_factory.params import read_yaml

EXAMPLE_DIR = "data/example"  # the `example` stage's output (dvc.yaml)
ALL_LOSSES = tuple(dict.fromkeys(loss for losses in LOSSES.values() for loss in losses))


def json_definitions(text: str) -> dict:
    """--inputs/--outputs: JSON (a trailing comma, as the original cnn-factory's README has, is fine) or a file."""
    if not text.lstrip().startswith("{") and Path(text).is_file():
        text = Path(text).read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        try:
            value = read_yaml(text)  # JSON is YAML; YAML also takes trailing commas
        except yaml.YAMLError:
            raise argparse.ArgumentTypeError(f"not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object of definitions by name, e.g. {"mask": {...}}')
    return value


def filter_sizes(text: str) -> int | list[int]:
    """--filter-sizes: the first level's filters (16), or one number per level (16,32,64 or [16, 32, 64])."""
    try:
        numbers = [int(v) for v in text.strip("[]").replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or a list of them, got {text!r}") from None
    if not numbers:
        raise argparse.ArgumentTypeError("expected an integer or a list of them")
    return numbers[0] if len(numbers) == 1 and "," not in text and "[" not in text else numbers


DEFINITIONS = {"type": json_definitions, "metavar": "JSON"}  # --inputs and --outputs
# (flag, params.yaml key, argparse arguments): the original cnn-factory's train flags and what each sets
TRAIN_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--modelname", "model.name", {"help": "the model file is models/<modelname>.pt"}),
    ("--csv", "data.csv", {"help": "the CSV; its header names the inputs' and outputs' columns"}),
    ("--inputs", "inputs", {**DEFINITIONS, "help": "input definitions (JSON or file)"}),
    ("--outputs", "outputs", {**DEFINITIONS, "help": "output definitions (JSON or file)"}),
    ("--batch-size", "train.batch_size", {"type": int, "help": "images per optimiser step"}),
    ("--num-augs", "train.num_augs", {"type": int, "help": "extra flipped/turned copies of each image per epoch"}),
    ("--num-epochs", "train.epochs", {"type": int, "help": "passes over the training split"}),
    ("--shuffle-data", "train.shuffle", {"action": argparse.BooleanOptionalAction, "help": "shuffle every epoch"}),
    ("--learning-rate", "train.lr", {"type": float, "help": "learning rate"}),
    ("--optimizer", "train.optimizer", {"choices": OPTIMIZERS, "help": "optimiser"}),
    ("--learning-rate-scheduler", "train.scheduler", {"choices": SCHEDULERS, "help": "schedule over the epochs"}),
    ("--loss-function", "outputs.<each>.loss", {"choices": ALL_LOSSES, "help": "loss of every output"}),
    ("--network-depth", "model.depth", {"type": int, "help": "down-sampling levels of the UNet encoder"}),
    (
        "--filter-sizes",
        "model.filters",
        {
            "type": filter_sizes,
            "metavar": "N|N,N,..",
            "help": "first level's filters (doubled per level) or one per level",
        },
    ),
    ("--device", "train.device", {"choices": DEVICES, "help": "auto: CUDA when present"}),
]


def hydra_value(value, where: str) -> str:
    """A params value in the override grammar of `dvc exp run -S` (Hydra's): strings quoted."""
    if isinstance(value, dict):
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(key)):
                raise UserError(f"{where}: name {key!r} cannot be passed to dvc; use letters, digits, _ and -")
        return "{" + ", ".join(f"{k}: {hydra_value(v, f'{where}.{k}')}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(hydra_value(v, where) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(value))  # Hydra: escape \ only before '
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text) + "'"


def refuse_root_holding(root: str, repository: Path, what: str, remedy: str) -> None:
    """A UserError where `root` is the repository or a folder holding it: dvc.yaml's prepare stage
    would depend on the folder it writes into, which DVC refuses before any stage runs."""
    if repository.resolve().is_relative_to(Path(root).resolve()):
        raise UserError(
            f"{what} {root!r}, the repository root or a folder holding it: prepare cannot depend on the folder it "
            f"writes into; keep the CSV and images in a folder of their own (e.g. data/raw/; /data in the Docker "
            f"image) {remedy}"
        )


def dvc_overrides(args: dict, extra: list[str], params: dict) -> list[str]:
    """`-S` values for the given train flags (absent flags keep params.yaml's values), then `extra`."""
    overrides = []
    for flag, key, _ in TRAIN_FLAGS:
        dest = flag.lstrip("-").replace("-", "_")
        if dest not in args or dest == "loss_function":
            continue
        if key in ("inputs", "outputs"):  # replace the whole mapping, not merge into it
            overrides += [f"~{key}", f"+{key}={hydra_value(args[dest], key)}"]
        else:
            overrides.append(f"{key}={hydra_value(args[dest], key)}")
    if "csv" in args or "data_root" in args:
        root = args.get("data_root", str(Path(args.get("csv", "")).parent))
        refuse_root_holding(root, Path.cwd(), "data.root would be", "or give --data-root")
        overrides.append(f"++data.root={hydra_value(root, 'data.root')}")
    if "loss_function" in args:
        loss, outputs = args["loss_function"], args.get("outputs") or params.get("outputs") or {}
        kinds = {name: kind_name(spec) for name, spec in outputs.items()}
        unfit = [
            f"outputs.{name} is {tag} (its losses: {', '.join(LOSSES[tag])})"
            for name, tag in kinds.items()
            if tag in LOSSES and loss not in LOSSES[tag]
        ]
        if unfit:
            raise UserError(
                f"--loss-function {loss}: applies to every output but does not fit {'; '.join(unfit)}. "
                "Set losses per output in --outputs or with -S outputs.<name>.loss=..."
            )
        overrides += [f"++outputs.{name}.loss={hydra_value(loss, 'loss')}" for name in outputs]
    return overrides + list(extra)


def preview_params(path: Path, overrides: list[str]):
    """Applies the overrides as dvc will, to a copy of params.yaml, and parses the result."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        try:
            shutil.copy(path, copy)
        except FileNotFoundError:
            raise UserError(f"{path}: not found; run from the repository root") from None
        for override in overrides:
            try:
                apply_overrides(copy, [override])
            except InvalidArgumentError as err:
                reason = str(err.__cause__ or err).splitlines()[0]
                raise UserError(f"-S {override}: dvc cannot apply it ({reason})") from None
        raw = read_yaml(copy.read_text(encoding="utf-8"))
    try:
        return parse_params(raw, f"{path} with the flags")
    except UserError as err:
        raise UserError(f"the flags lead to invalid params:\n{err}") from None


def current_value(params: dict, key: str):
    """The value params.yaml holds for a dotted key (the first output's for outputs.<each>.loss)."""
    value = params
    for part in key.split("."):
        if part == "<each>" and isinstance(value, dict) and value:
            value = next(iter(value.values()))
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return "?"
    return json.dumps(value) if isinstance(value, (dict, list, bool)) or value is None else value


def read_mapping(path: Path) -> dict:
    """A YAML file's mapping (params.yaml, dvc.yaml); {} where it is missing, no YAML or no mapping."""
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def train(args: argparse.Namespace) -> None:
    """Checks the flags against params.yaml, runs `dvc exp run -S ...`, copies the model."""
    if not Path("dvc.yaml").is_file():
        raise UserError("no dvc.yaml here; run cnn-factory train from the repository root")
    overrides = dvc_overrides(vars(args), args.set, read_mapping(Path("params.yaml")))
    cfg = preview_params(Path("params.yaml"), overrides)
    stages = pipeline_stages(cfg.data.csv)
    command = [sys.executable, "-m", "cnn_factory.cli.exp_run", "exp", "run", *stages]
    command += [a for o in overrides for a in ("-S", o)]
    print("cnn-factory: dvc exp run " + " ".join([*stages, *(f"-S {_quote(o)}" for o in overrides)]), flush=True)
    if args.dry_run:
        return
    # the stages run `python -m stages.<name>`: this interpreter must be the `python` they find
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    code = subprocess.run(command, env=env).returncode
    if code != 0:
        raise UserError(f"`dvc exp run` failed with exit code {code}; its messages are above")
    if getattr(args, "output_path", None):
        target = Path(args.output_path) / cfg.model.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cfg.model.path, target)
        print(f"cnn-factory: model copied to {target}")


def pipeline_stages(csv: Path) -> list[str]:
    """The stages `dvc exp run` is given: none (all of dvc.yaml's) for the built-in example; for the
    user's own CSV every stage but `example`, so that no example data is generated beside it."""
    if Path(csv).resolve().is_relative_to(Path(EXAMPLE_DIR).resolve()):
        return []
    stages = read_mapping(Path("dvc.yaml")).get("stages") or {}
    return [name for name in stages if name != "example"] if "example" in stages else []


def _quote(text: str) -> str:
    """Shell quoting for the command shown to the user."""
    if all(c.isalnum() or c in "._-=/+~" for c in text):
        return text
    if not any(c in text for c in '"$`\\!'):
        return f'"{text}"'
    return "'" + text.replace("'", "'\\''") + "'"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, params_file: Path) -> None:
    """`cnn-factory train`: the original cnn-factory's flags, `--set` for any other key, `--dry-run`;
    `--help` shows params_file's values as the flags' defaults."""
    p = sub.add_parser(
        "train", parents=[common], help="run the pipeline as a DVC experiment (flags of the original cnn-factory)"
    )
    params = read_mapping(params_file)  # its values are the flags' defaults, shown in --help
    for flag, key, kwargs in TRAIN_FLAGS:
        shown = f" = {current_value(params, key)}" if params and key not in ("inputs", "outputs") else ""
        text = f"{kwargs['help']} (sets {key}; default: params.yaml's value{shown})"
        if key.endswith("<each>.loss"):
            text = f"{kwargs['help']} (sets {key}; default: each output's own loss in params.yaml)"
        p.add_argument(flag, default=argparse.SUPPRESS, **{**kwargs, "help": text})
    p.add_argument(
        "--output-path",
        default=argparse.SUPPRESS,
        help="folder the model file is copied to after the run (default: none)",
    )
    p.add_argument(
        "--data-root",
        default=argparse.SUPPRESS,
        help="data.root: folder relative paths in the CSV resolve against (default with --csv: the CSV's folder)",
    )
    p.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other params.yaml key, passed to `dvc exp run -S` as it is (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="check the flags and print the dvc command; run nothing")

"""The `cnn-factory` command: the original cnn-factory's training flags on top of the DVC pipeline, and tools.

    cnn-factory validate                      # check the CSV named in params.yaml, print the data report
    cnn-factory train --num-epochs 5 ...      # `dvc exp run -S ...` with the original cnn-factory's flags
    cnn-factory predict MODEL IMAGES...       # masks and predictions.csv (cnn_factory/predict.py)
    cnn-factory evaluate MODEL CSV            # figures, per-image table, plots on any labelled CSV
    cnn-factory folds                         # write folds/dvc.yaml: K-fold cross-validation (data.split.folds)
    cnn-factory summary                       # the headline test figures of the last run, a screen wide
    cnn-factory compare [REV ...]             # runs side by side, paired differences on the same test images
    cnn-factory export MODEL --format onnx    # TorchScript or ONNX with a JSON sidecar (cnn_factory/export.py)
    cnn-factory serve MODEL [--port 8000]     # a page to try the model and an HTTP API (cnn_factory/serve/)
    cnn-factory make-csv IMAGES LABELS        # pair images and label maps by file name

`ARGS_FILE=<file.json>` holding a JSON list of train flags works as in the original cnn-factory; flags given on
the command line win. A flag before any subcommand (`cnn-factory --modelname m ...`) means `train`.
In the Docker image, train, validate, plan and summary run in a clone of the image's repository under
/out, reset to the image's settings for every run (container.py); the other commands make no clone.
User errors print one line and exit 1 (`--debug` or CNN_FACTORY_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cnn_factory import __version__
from cnn_factory.cli import compare as compare_command
from cnn_factory.cli import container
from cnn_factory.cli import evaluate as evaluate_command
from cnn_factory.cli import folds as folds_command
from cnn_factory.cli import serve as serve_command
from cnn_factory.cli import train as train_command
from cnn_factory.cli.make_csv import make_csv
from cnn_factory.cli.train import train
from cnn_factory.config import DEVICES, SPLITS, load_params
from cnn_factory.errors import UserError, run_stage

GLOBAL_FLAGS = {"-h", "--help", "--debug", "--version"}


class ArgError(Exception):
    """A command-line mistake; printed as one line with a pointer to --help."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    commands: dict[str, Parser]  # the subcommands' parsers, on the top-level parser

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # a misspelt flag is an error, not a guess
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            flags = [a for a in message.split(":", 1)[1].split() if a.startswith("-")]
            known = [s for action in self._actions for s in action.option_strings]
            for flag in flags:
                close = difflib.get_close_matches(flag.split("=")[0], known, n=1, cutoff=0.75)
                if close:
                    message += f" (did you mean {close[0]}?)"
        raise ArgError(message, self.prog)


def build_parser(params: Path = Path("params.yaml")) -> Parser:
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = Parser(prog="cnn-factory", description=__doc__.split("\n")[0], parents=[common])
    parser.add_argument("--version", action="version", version=f"cnn-factory {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    p = sub.add_parser("validate", parents=[common], help="check the CSV and print the data report")
    p.add_argument("--params", default="params.yaml", help="params file naming the CSV, inputs and outputs")

    train_command.add_parser(sub, common, params)
    add_predict_parsers(sub, common)
    evaluate_command.add_parser(sub, common)
    serve_command.add_parser(sub, common)
    add_data_parsers(sub, common)
    compare_command.add_parser(sub, common)
    folds_command.add_parser(sub, common)
    parser.commands = sub.choices
    return parser


def add_predict_parsers(sub: Any, common: Parser) -> None:
    """predict and export: what takes a model file."""
    p = sub.add_parser("predict", parents=[common], help="predict masks, categories and numbers for images")
    p.add_argument("model", help=f"{evaluate_command.MODEL_FILES}, which predict as one (their probabilities averaged)")
    p.add_argument("images", nargs="+", help="image files, globs (quote them), or a CSV with the model's input columns")
    p.add_argument("--out", default="predictions", help="folder for <output>/<stem>.png masks and predictions.csv")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present")
    p.add_argument("--tta", action="store_true", help="average over horizontal, vertical and both flips (4x slower)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability above which a pixel is set")
    p.add_argument(
        "--tile",
        action="store_true",
        help="slide a window of the model's input size over each image at its own resolution, "
        "blending overlapping windows, instead of resizing the image (always, for a patch-trained model)",
    )
    p.add_argument("--overlap", type=float, default=0.5, help="with --tile: fraction of a window shared by neighbours")

    p = sub.add_parser("export", parents=[common], help="write the model as TorchScript or ONNX with a JSON sidecar")
    p.add_argument("model", help=f"{evaluate_command.MODEL_FILES} (models/folds), exported as their ensemble")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript", help="file format")
    p.add_argument(
        "--out",
        default=argparse.SUPPRESS,
        help="output file (default: the model file's or folder's name with .ts or .onnx)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the example input used for tracing")


def add_data_parsers(sub: Any, common: Parser) -> None:
    """plan, summary and make-csv: what reads the data set or a run's figures."""
    p = sub.add_parser(
        "plan", parents=[common], help="read the CSV's images or scans and propose mode, spacing, sizes, depth, batch"
    )
    p.add_argument("--params", default="params.yaml", help="params file naming the CSV, inputs and outputs")
    p.add_argument("--sample", type=int, default=50, help="images (scans) read, spread over the CSV")
    p.add_argument(
        "--budget-gb", type=float, help="memory for activations (default: 60%% of the GPU's, else of the RAM)"
    )

    p = sub.add_parser("summary", parents=[common], help="print the headline test figures with their intervals")
    p.add_argument("--params", default="params.yaml", help="params file naming the outputs")
    p.add_argument(
        "--figures", "--metrics", default="eval/figures.json", help="every test figure, as evaluate writes them"
    )

    p = sub.add_parser(
        "make-csv", parents=[common], help="pair images and label maps by file name (or a COCO export's) into a CSV"
    )
    p.add_argument("images_dir", metavar="IMAGES_DIR", help="folder of images")
    p.add_argument("labels_dir", metavar="LABELS_DIR", nargs="?", help="folder of label maps, named like their images")
    p.add_argument(
        "--coco",
        metavar="JSON",
        help="a COCO annotation export instead of LABELS_DIR: its polygons and RLE become label maps in "
        "labels/ beside the CSV, the category ids the label values (labels.json says which)",
    )
    p.add_argument("--out", default="data.csv", help="CSV to write; paths in it are relative to its folder")
    p.add_argument(
        "--join",
        metavar="CSV",
        help="another CSV of per-image values (a column naming each image's file): its other columns added",
    )
    p.add_argument("--image-column", default="image", help="header of the image column")
    p.add_argument("--label-column", default="labels", help="header of the label-map column")


def parse(argv: list[str], params: Path = Path("params.yaml")) -> argparse.Namespace:
    """Parses argv; a flag the subcommand does not know is that subcommand's error. `params`: the
    params.yaml whose values `train --help` shows."""
    parser = build_parser(params)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def expand_argv(argv: list[str], environ: dict) -> list[str]:
    """The original cnn-factory's forms: flags without a subcommand mean train, and so does ARGS_FILE with no arguments
    at all (nothing at all without ARGS_FILE is a usage error, never a training run); ARGS_FILE's flags
    come before the command line's."""
    if (argv and argv[0].startswith("-") and argv[0] not in GLOBAL_FLAGS) or (not argv and environ.get("ARGS_FILE")):
        argv = ["train", *argv]
    if not argv or argv[0] != "train" or not environ.get("ARGS_FILE"):
        return argv
    path = Path(environ["ARGS_FILE"])
    try:
        flags = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"ARGS_FILE {path}: not found") from None
    except json.JSONDecodeError as err:
        raise UserError(f"ARGS_FILE {path}: not valid JSON ({err})") from None
    if not isinstance(flags, list):
        raise UserError(f'ARGS_FILE {path}: expected a JSON list of flags, e.g. ["--num-epochs", "2"]')
    flags = [json.dumps(f) if isinstance(f, (dict, list)) else str(f) for f in flags]
    if flags[:1] == ["train"]:
        flags = flags[1:]
    try:
        parse(["train", *flags])  # its own mistakes are reported as its own
    except ArgError as err:
        raise UserError(f"ARGS_FILE {path}: {err}") from None
    return ["train", *flags, *argv[1:]]  # the last occurrence of a flag wins: the command line's


def validate(args: argparse.Namespace) -> None:
    """Runs prepare's checks on every row and prints its report, writing nothing."""
    from cnn_factory.data.prepare import print_report, validate_and_load
    from cnn_factory.data.splits import split_report
    from cnn_factory.device import pick_device
    from cnn_factory.model import stem_advice

    cfg = load_params(args.params)
    if cfg.data.root is not None and (Path(args.params).resolve().parent / "dvc.yaml").is_file():
        where = f"{args.params}: data.root is"
        remedy = "and point data.csv and data.root there"
        train_command.refuse_root_holding(cfg.data.root, Path(args.params).resolve().parent, where, remedy)
    table, splits, rows = validate_and_load(cfg)  # with data.split.folds: each row's fold, or "test"
    parts = [p for p in [*cfg.data.split.fold_names, *SPLITS] if p in splits]
    report: dict[str, Any] = {"rows": {s: splits.count(s) for s in parts}, "outputs": {}}  # as prepare's report.json
    if drawn := split_report(table, cfg.data, splits, parts):
        report["split"] = drawn
    for spec in cfg.outputs.values():
        values = {s: np.stack([r[spec.name] for r, t in zip(rows, splits) if t == s]) for s in parts}
        report["outputs"][spec.name] = spec.summary(values)
    print_report(report)
    print(f"validate: {cfg.data.csv}: {len(rows)} rows, all valid")
    cuda = pick_device(cfg.train.device).type == "cuda"
    sizes = [spec.size for spec in cfg.inputs.values()]
    if advice := stem_advice(cfg.model, sizes, list(rows.spacing or ()) or None, cuda):
        print(advice)


def plan(args: argparse.Namespace) -> None:
    """Prints the data set's fingerprint, the proposed settings with their reasons, and the dvc line."""
    from cnn_factory.plan import run_plan

    if args.sample < 1:
        raise UserError(f"--sample: expected an integer >= 1, got {args.sample}")
    if args.budget_gb is not None and args.budget_gb <= 0:
        raise UserError(f"--budget-gb: expected a number > 0, got {args.budget_gb}")
    print(run_plan(load_params(args.params), args.sample, args.budget_gb))


def summary(args: argparse.Namespace) -> None:
    from cnn_factory.summary import print_summary

    print_summary(args.params, args.figures)


def predict(args: argparse.Namespace) -> None:
    from cnn_factory.predict import predict_images

    predict_images(
        args.model,
        args.images,
        Path(args.out),
        args.batch_size,
        args.device,
        args.tta,
        args.threshold,
        tile=args.tile,
        overlap=args.overlap,
    )


def export(args: argparse.Namespace) -> None:
    from cnn_factory.export import export_model

    export_model(args.model, args.format, getattr(args, "out", None), args.batch_size)


COMMANDS = {
    "plan": plan,
    "validate": validate,
    "train": train,
    "predict": predict,
    "evaluate": evaluate_command.evaluate,
    "export": export,
    "serve": serve_command.serve,
    "summary": summary,
    "compare": compare_command.compare,
    "make-csv": make_csv,
    "folds": folds_command.folds,
}


def run(argv: list[str]) -> None:
    """Parses argv, then runs the command; in the Docker image a pipeline command runs in its clone
    (container.py), after parsing, so that nothing else makes one."""
    environ = dict(os.environ)
    argv = expand_argv(argv, environ)
    try:
        args = parse(argv, container.help_params(environ))
    except ArgError as err:
        print(f"{err.prog}: error: {err} (see {err.prog} --help)", file=sys.stderr)
        sys.exit(2)
    with container.workdir(environ, args):
        COMMANDS[args.command](args)


def main() -> None:
    """Console-script entry point (`cnn-factory`)."""
    run_stage(lambda: run(sys.argv[1:]))


if __name__ == "__main__":
    main()

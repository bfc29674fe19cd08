"""`cnn-factory evaluate MODEL CSV [--out DIR]`: scores a model file on any labelled CSV.

MODEL may also be a folder or a quoted glob of model files of one model (the folds of a
cross-validation): they are scored as one, their probabilities averaged before any threshold.

The model file names its input and output columns, label values and classes; the CSV's rows are
read as prepare reads them (every problem listed, nothing written on a bad row) into a temporary
prepared folder, and scored by the evaluate stage's own code (report.py): the same figures with
intervals, per_image.csv, plots and pictures, under --out. No params.yaml or DVC needed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from cnn_factory.config import DEVICES, Config, DataConfig, EvaluateConfig, SplitConfig
from cnn_factory.errors import UserError

if TYPE_CHECKING:  # the command line imports torch only when a command needs it
    from cnn_factory.model import ModelFile

# the MODEL argument of evaluate, predict and export
MODEL_FILES = "model file written by train (models/<name>.pt), or a folder or quoted glob of model files of one model"


def model_config(model_file: ModelFile, csv: str, root: str | None) -> Config:
    """What prepare needs to read `csv` for this model: its inputs and outputs, as the model file
    describes them, and the CSV (paths relative to `root`, else to the CSV's folder)."""
    data = DataConfig(
        csv=csv, root=root, split=SplitConfig(val=0, test=0, seed=0, column=None, group=None, stratify=None, folds=None)
    )
    # only the sections prepare reads: the rest describe training, which this command does not do
    return Config.model_construct(data=data, inputs=model_file.input_specs(), outputs=model_file.outputs)


def prepare_rows(cfg: Config, folder: Path, workers: int, group: str | None = None) -> dict:
    """Every row of cfg's CSV decoded into `folder` as one split; returns its files and CSV rows,
    and with `group` (a column, e.g. patient) each row's group, which the intervals draw whole."""
    from cnn_factory.data.prepare import validate_and_load, write_arrays, write_native
    from cnn_factory.data.splits import cells
    from cnn_factory.data.table import read_table

    if group and group not in (header := read_table(cfg.data.csv).header):  # before any row is decoded
        raise UserError(f"--group: {cfg.data.csv} has no column {group!r}; its columns: {', '.join(header)}")
    table, _, rows = validate_and_load(cfg, workers, split=False)
    if not table.rows:
        raise UserError(f"{cfg.data.csv}: no rows to score")
    index = list(range(len(table.rows)))
    write_arrays(rows, index, [*cfg.inputs, *cfg.outputs], folder)
    write_native(rows, index, cfg, folder)
    column = cfg.first_input.column
    split = {"files": [table.rows[i][column] for i in index], "rows": list(table.numbers)}
    return split | ({"groups": cells(table, group, "--group")} if group else {})


def evaluate(args: argparse.Namespace) -> None:
    from cnn_factory.data.prepare import default_workers
    from cnn_factory.device import pick_device
    from cnn_factory.model import model_files
    from cnn_factory.native import load_models
    from cnn_factory.report import evaluate_and_report

    for flag, low in (("batch_size", 1), ("bootstrap", 0), ("worst", 0)):
        if getattr(args, flag) < low:
            raise UserError(f"--{flag.replace('_', '-')}: expected an integer >= {low}, got {getattr(args, flag)}")
    if args.tolerance <= 0:
        raise UserError(f"--tolerance: expected a number of pixels > 0, got {args.tolerance}")
    if not Path(args.csv).is_file():
        raise UserError(f"{args.csv}: CSV not found")
    device = pick_device(args.device)
    model, model_file = load_models(model_files(args.model), device)  # several of one model: an ensemble
    cfg = model_config(model_file, args.csv, args.root)
    options = EvaluateConfig(bootstrap=args.bootstrap, seed=args.seed, tolerance=args.tolerance, worst=args.worst)
    with tempfile.TemporaryDirectory(prefix="cnn-factory-evaluate-") as tmp:
        rows = Path(tmp) / "rows"
        split = prepare_rows(cfg, rows, default_workers(), args.group)
        print(f"evaluate: {len(split['rows'])} rows of {args.csv}", file=sys.stderr)
        evaluate_and_report(
            Path(args.out), model, model_file, dict(cfg.outputs), rows, split, args.batch_size, device, options
        )
    print(f"evaluate: every figure in {Path(args.out) / 'figures.json'}, the headline ones in metrics.json")


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    defaults = EvaluateConfig()
    p = sub.add_parser(
        "evaluate", parents=[common], help="score a model file on a labelled CSV, as the evaluate stage does"
    )
    p.add_argument("model", help=f"{MODEL_FILES} (e.g. models/folds), scored as one (their probabilities averaged)")
    p.add_argument("csv", help="CSV with the model's input and output columns (as for training)")
    p.add_argument("--out", default="eval", help="folder for metrics.json, figures.json, per_image.csv, plots/")
    p.add_argument("--root", help="folder relative paths in the CSV resolve against (default: the CSV's)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present")
    p.add_argument("--bootstrap", type=int, default=defaults.bootstrap, help="resamples for 95%% intervals; 0: none")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the bootstrap resampling")
    p.add_argument("--group", metavar="COLUMN", help="CSV column of each row's patient: intervals draw them whole")
    p.add_argument("--tolerance", type=float, default=defaults.tolerance, help="surface dice tolerance, pixels")
    p.add_argument("--worst", type=int, default=defaults.worst, help="lowest-dice images drawn per mask output")

"""What evaluate writes from an Evaluation: test figures with 95% intervals, the per-image table,
plots and pictures. The evaluate stage and `cnn-factory evaluate` both call `write_report`.

    figures = write_report(Path("eval"), result, outputs, manifest["splits"]["test"], resamples=1000, seed=0)

Files under `out` (docs/evaluation.md):

    metrics.json                    the headline figures, a screen wide: <output>/<figure> (its kind's
                                    first: dice, accuracy, MAE) and the saved epoch (DVC's metrics file)
    figures.json                    every figure: test/<output>/<figure>, with _ci_low/_ci_high bounds
    per_image.csv                   one row per test image: its file, CSV row and scores per output
    plots/sklearn/<output>.json     confusion matrix per category output
    plots/dice/<output>.json        per segmentation output: dice per image against the truth's size
    plots/calibration/<output>.json per category output: accuracy per confidence bin
    plots/values/<output>.json      per numeric output: predicted against true values
    plots/images/<output>.png       the first test images with true and predicted masks
    plots/images/<output>_worst.png the lowest-dice test images, lowest first
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from cnn_factory.atomic import replace_file
from cnn_factory.config import EvaluateConfig
from cnn_factory.evaluate import Evaluation, Scoring, evaluate_split
from cnn_factory.model import ModelFile
from cnn_factory.native import Network
from cnn_factory.outputs import Output, Scorer
from cnn_factory.scores.bootstrap import intervals
from cnn_factory.training.live import AtomicLive

PLOT_FOLDERS = ("dice", "calibration", "values", "bland_altman")  # written here (dvc.yaml's plots draw each folder)
FIGURES = "figures.json"  # every test figure, beside metrics.json's headline ones


def test_figures(
    result: Evaluation, outputs: Mapping[str, Output], resamples: int, seed: int, groups: list[str] | None = None
) -> dict[str, float]:
    """{"<output>/<figure>": value}: each output's `figures_of` its test images, every output on the
    same resampled images (one seed), so that an output's intervals do not depend on the others."""
    figures: dict[str, float] = {}
    for name, columns in result.rows.items():
        found = figures_of(columns, Scorer.of(outputs[name]), resamples, seed, groups)
        figures.update({f"{name}/{k}": v for k, v in found.items()})
    return figures


def figures_of(
    columns: dict[str, np.ndarray], scorer: Scorer, resamples: int, seed: int, groups: list[str] | None = None
) -> dict[str, float]:
    """An output's figures over the images of its per-image `columns`, then the bootstrap interval of
    each headline figure as `<figure>_ci_low` and `<figure>_ci_high`, over images or, with `groups`
    (each image's `data.split.group` value), over whole groups. Undefined figures (NaN: e.g. ROC AUC
    with one class in the test split) are left out."""
    figures = dict(scorer.summarise(columns))
    bounds = intervals(columns, scorer.summarise, scorer.interval_metrics, resamples, seed, groups)
    for figure, (low, high) in bounds.items():
        figures[f"{figure}_ci_low"], figures[f"{figure}_ci_high"] = low, high
    return {k: float(v) for k, v in figures.items() if math.isfinite(v)}


def per_image_table(result: Evaluation, outputs: Mapping[str, Output], split: dict) -> str:
    """eval/per_image.csv's text: image file, CSV row, its group (with `data.split.group`), then
    `<output>/<column>` per output."""
    columns: dict[str, list] = {"image": split["files"], "csv_row": split["rows"]}
    if "groups" in split:
        columns["group"] = split["groups"]
    for name, values in result.rows.items():
        columns.update({f"{name}/{k}": v for k, v in Scorer.of(outputs[name]).table_cells(values).items()})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in zip(*columns.values()):  # an undefined score (NaN) is an empty cell
        writer.writerow(["" if isinstance(c, float) and math.isnan(c) else c for c in row])
    return buffer.getvalue()


def headline(figures: Mapping[str, float], outputs: Mapping[str, Output], epoch: int | None) -> dict:
    """metrics.json's contents: each output's headline test figure and the saved epoch, so that
    `dvc exp show` has a few columns a screen wide; every other figure is in figures.json."""
    data = {n: {o.headline: figures[f"{n}/{o.headline}"]} for n, o in outputs.items() if f"{n}/{o.headline}" in figures}
    return data | ({"epoch": epoch} if epoch is not None else {})


def write_report(
    out: Path,
    result: Evaluation,
    outputs: Mapping[str, Output],
    split: dict,
    resamples: int,
    seed: int,
    epoch: int | None = None,
) -> dict[str, float]:
    """Writes everything under `out` (see the module's docstring); returns the logged figures.

    split: the test split's entry of the prepared manifest (its `files`, CSV `rows` and their
    `groups`, with data.split.group); epoch: the model's saved epoch, beside the headline figures."""
    figures = test_figures(result, outputs, resamples, seed, split.get("groups"))
    for folder in PLOT_FOLDERS:  # figures of outputs no longer defined must not linger
        shutil.rmtree(out / "plots" / folder, ignore_errors=True)
    with FiguresLive(str(out), save_dvc_exp=False, dvcyaml=None) as live:
        for key, value in figures.items():
            live.log_metric(f"test/{key}", value, plot=False)
        for key, value in result.resized.items():
            live.log_metric(f"test/{key}_resized", value, plot=False)
        for name, (truth, predicted) in result.confusion.items():
            live.log_sklearn_plot(
                "confusion_matrix",
                truth,
                predicted,
                name=f"{name}.json",
                title=f"{name}: confusion matrix (test split)",
            )
        result.gallery.log(live, "{output}.png")
        for name, worst in result.worst.items():
            captions = [
                f"{i + 1}. {split['files'][row]} (CSV row {split['rows'][row]}): dice {score:.3f}"
                + (f"  [{Scorer.of(outputs[name]).picture_legend()}]" if i == 0 else "")
                for i, (score, row, _) in enumerate(worst.items)
            ]
            if (picture := worst.picture(captions)) is not None:
                live.log_image(f"{name}_worst.png", picture)
    for name, columns in result.rows.items():
        for folder, points in Scorer.of(outputs[name]).plots(columns).items():
            write_text(out / "plots" / folder / f"{name}.json", json.dumps(points, indent=1) + "\n")
    write_text(out / "per_image.csv", per_image_table(result, outputs, split))
    write_text(out / "metrics.json", json.dumps(headline(figures, outputs, epoch), indent=4) + "\n")
    return figures


class FiguresLive(AtomicLive):
    """dvclive's Live for evaluate: its summary of every logged figure goes to figures.json, an
    output DVC caches; metrics.json, DVC's metrics file, holds the headline figures (`headline`)."""

    @property
    def metrics_file(self) -> str:
        return os.path.join(self.dir, FIGURES)


def write_text(path: Path, text: str) -> None:
    replace_file(path, lambda tmp: tmp.write_text(text))


def evaluate_and_report(
    out: Path,
    model: Network,
    model_file: ModelFile,
    outputs: Mapping[str, Output],
    folder: Path,
    split: dict,
    batch_size: int,
    device: torch.device,
    options: EvaluateConfig,
) -> dict[str, float]:
    """Scores a model on a prepared split and writes the report: the evaluate stage and the
    `cnn-factory evaluate` command both run this. Prints the headline figures with their intervals."""
    scoring = Scoring(options.tolerance, options.worst)
    result = evaluate_split(model, model_file, outputs, folder, batch_size, device, scoring=scoring)
    figures = write_report(out, result, outputs, split, options.bootstrap, options.seed, model_file.epoch)
    for name, output in outputs.items():
        for figure in Scorer.of(output).interval_metrics:
            key = f"{name}/{figure}"
            if key not in figures:
                continue
            line = f"test/{key}: {figures[key]:.4f}"
            if f"{key}_ci_low" in figures:
                line += f"  95% CI [{figures[f'{key}_ci_low']:.4f}, {figures[f'{key}_ci_high']:.4f}]"
            if key in result.resized:
                line += f"  (at the input size: {result.resized[key]:.4f})"
            print(line)
    print(f"per-image scores: {out / 'per_image.csv'}")
    return figures

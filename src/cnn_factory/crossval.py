"""The figures of a cross-validation: every fold's images, each scored once by the fold's model that
did not train on it, pooled (the crossval stage of folds/dvc.yaml; docs/small-data.md).

    figures = cross_validate(EVAL, outputs, ["0", "1", "2"], resamples=1000, seed=0)

Reads each fold's per-image table (`eval/folds/<k>/per_image.csv`, as evaluate wrote it), and
computes each output's figures from the tables put together, with the bootstrap interval over
images (with data.split.group, over groups) of each headline one, by the same functions as
evaluate (`Scorer.summarise`, scores/bootstrap.py); each fold's figures from its own table beside
them. Writes under `folder`:

    figures.json     {"out_of_fold": {output: {figure: value, <figure>_ci_low, _ci_high}},
                      "folds": {k: {output: {figure: value}}}, "images": {k: count}}
    metrics.json     each output's headline out-of-fold figure (DVC's metrics file)
    per_image.csv    the folds' tables one after another, with each row's fold first
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cnn_factory.errors import UserError
from cnn_factory.outputs import Output, Scorer
from cnn_factory.report import figures_of, headline, write_text

TABLE = "per_image.csv"

Table = dict[str, list[str]]  # a per-image table's cells by column


def read_table(path: Path) -> Table:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `dvc repro folds/dvc.yaml` (each fold's evaluate writes it)") from None
    header, *rows = list(csv.reader(io.StringIO(text))) or [[]]
    return {name: [row[i] if i < len(row) else "" for row in rows] for i, name in enumerate(header)}


def output_columns(table: Table, name: str, scorer: Scorer, path: Path) -> dict[str, np.ndarray]:
    """The output's per-image scores in a table, as `Scorer.summarise` takes them."""
    prefix = f"{name}/"
    try:
        return scorer.table_columns({k[len(prefix) :]: v for k, v in table.items() if k.startswith(prefix)})
    except (KeyError, ValueError) as err:
        raise UserError(
            f"{path}: lacks what output {name!r} needs ({type(err).__name__}: {err}); run the folds' evaluate "
            "stages again (dvc repro folds/dvc.yaml)"
        ) from None


def cross_validate(
    folder: Path, outputs: Mapping[str, Output], folds: list[str], resamples: int, seed: int
) -> dict[str, dict]:
    """Reads folder/<k>/per_image.csv of every fold; writes figures.json, metrics.json and
    per_image.csv into `folder` (see the module's docstring); returns figures.json's contents."""
    tables = {k: read_table(folder / k / TABLE) for k in folds}
    header = next(iter(tables.values())).keys()
    for k, table in tables.items():
        if table.keys() != header:
            raise UserError(f"{folder / k / TABLE}: its columns differ from fold {folds[0]}'s; run every fold again")
    pooled = {c: [cell for table in tables.values() for cell in table[c]] for c in header}
    result: dict[str, dict] = {"out_of_fold": {}, "folds": {k: {} for k in folds}}
    result["images"] = {k: len(table["image"]) for k, table in tables.items()}
    for name, output in outputs.items():  # every output on the same resampled images, as evaluate's
        scorer = Scorer.of(output)
        columns = output_columns(pooled, name, scorer, folder / TABLE)
        result["out_of_fold"][name] = figures_of(columns, scorer, resamples, seed, pooled.get("group"))
        for k, table in tables.items():
            result["folds"][k][name] = figures_of(output_columns(table, name, scorer, folder / k / TABLE), scorer, 0, 0)
    flat = {f"{n}/{f}": v for n, figures in result["out_of_fold"].items() for f, v in figures.items()}
    write_text(folder / "figures.json", json.dumps(result, indent=2) + "\n")
    write_text(folder / "metrics.json", json.dumps(headline(flat, outputs, None), indent=4) + "\n")
    write_text(folder / TABLE, _joined(tables))
    return result


def _joined(tables: dict[str, Table]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = list(next(iter(tables.values())))
    writer.writerow(["fold", *header])
    for k, table in tables.items():
        for row in zip(*(table[c] for c in header)):
            writer.writerow([k, *row])
    return buffer.getvalue()


def summary_lines(result: dict[str, dict], outputs: Mapping[str, Output]) -> list[str]:
    """Each output's headline out-of-fold figure with its interval, then each fold's."""
    images = sum(result["images"].values())
    lines = [f"out-of-fold figures: {images} images, {len(result['images'])} folds [95% interval]"]
    for name, output in outputs.items():
        figures, key = result["out_of_fold"].get(name, {}), output.headline
        if key not in figures:
            continue
        line = f"  {name}/{key}: {figures[key]:.4f}"
        if f"{key}_ci_low" in figures:
            line += f" [{figures[f'{key}_ci_low']:.4f}, {figures[f'{key}_ci_high']:.4f}]"
        each = [f"{k} {f[name][key]:.4f}" for k, f in result["folds"].items() if key in f.get(name, {})]
        lines.append(line + "   by fold: " + ", ".join(each))
    return lines

"""The headline test figures in a few lines: what `make run` ends with (`cnn-factory summary`).

    cnn-factory summary [--params params.yaml] [--figures eval/figures.json]

Per output, the figures its kind names in `summary_figures` (dice and HD95 for masks, accuracy
and macro F1 for categories, MAE and R^2 for numbers), each with its 95% bootstrap interval as
evaluate wrote it to eval/figures.json, which holds every test figure (eval/metrics.json, DVC's
metrics file, holds each output's headline figure only). A cross-validation's
eval/folds/figures.json gives its out-of-fold figures the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnn_factory.config import load_params
from cnn_factory.errors import UserError
from cnn_factory.outputs import Output, Scorer


def summary_lines(
    figures: Mapping[str, Any], outputs: Mapping[str, Output], source: str, volumes: bool = False
) -> list[str]:
    """The summary of eval/figures.json's contents, or of a cross-validation's (its out-of-fold
    figures); `source` names the file in the first line. Distances in mm for `volumes` (evaluate
    measures them at the scans' spacing), else in pixels."""
    if "out_of_fold" in figures:  # crossval's eval/folds/figures.json
        found, images = figures["out_of_fold"], figures.get("images", {})
        title = f"out-of-fold figures ({source}): {sum(images.values())} images, {len(images)} folds [95% interval]"
        missing = "no out-of-fold figures: run dvc repro folds/dvc.yaml"
    else:
        found, title = figures.get("test", {}), f"test figures ({source}) [95% interval]"
        missing = "no test figures: run dvc repro"
    width = max((len(name) for name in outputs), default=0)
    lines, unit = [title], "mm" if volumes else "px"
    for name, output in outputs.items():
        figures = found.get(name)
        if not isinstance(figures, Mapping):
            lines.append(f"  {name:<{width}}  {missing}")
            continue
        labels = [(key, label.format(unit=unit), spec) for key, label, spec in Scorer.of(output).summary_figures]
        shown = [_figure(figures, key, label, spec) for key, label, spec in labels]
        lines.append(f"  {name:<{width}}  " + "   ".join(shown))
    return lines


def _figure(figures: Mapping[str, Any], key: str, label: str, spec: str) -> str:
    value = figures.get(key)
    if not isinstance(value, (int, float)):
        return f"{label} n/a"
    text = f"{label} {value:{spec}}"
    low, high = figures.get(f"{key}_ci_low"), figures.get(f"{key}_ci_high")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        text += f" [{low:{spec}}, {high:{spec}}]"
    return text


def print_summary(params: str, figures: str) -> None:
    """Reads params.yaml's outputs and evaluate's figures file; prints the summary."""
    cfg = load_params(params)
    try:
        data = json.loads(Path(figures).read_text())
    except FileNotFoundError:
        raise UserError(f"{figures}: not found; run dvc repro (or make run) first") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{figures}: not valid JSON ({err}); run dvc repro to write it again") from None
    print("\n".join(summary_lines(data, cfg.outputs, figures, cfg.volumes)))

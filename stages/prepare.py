"""Stage `prepare`: validates the CSV, splits label maps into masks, caches uint8 arrays.

    python -m stages.prepare

Reads params.yaml (`data`, `inputs`, `outputs`) and the CSV it names. Any problem in any
row stops the stage with the full list (row, column, what was expected) and leaves the
previous `data/prepared/` untouched. On success it writes, atomically:

    data/prepared/<split>/<name>.npy   one array per input/output per split (memory-mapped by train)
    data/prepared/manifest.json        rows per split, source rows/files, channel mean/std
    data/prepared/report.json          rows per split, class counts, mask coverage
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages.config import PREPARED, SPLITS, Config, load_params
from stages.errors import UserError, run_stage
from stages.validate import Table, assign_splits, check_columns, load_row, read_table

MAX_LISTED = 50  # problems printed before "... and N more"


def validate_and_load(cfg: Config) -> tuple[Table, list[str], list[dict]]:
    """Checks every row; returns the table, split per row and arrays per row, or raises all problems."""
    table = read_table(cfg.data.csv)
    check_columns(table, cfg)
    splits = assign_splits(table, cfg.data)
    problems, rows = [], []
    missing: dict[str, list[int]] = {name: [] for name in cfg.outputs}
    for i in tqdm(range(len(table.rows)), desc="prepare", unit="row", disable=None, file=sys.stdout):
        result = load_row(table, i, cfg)
        problems += result.problems
        rows.append(result.arrays)
        for name in result.missing_labels:
            missing[name].append(table.numbers[i])
    for name, numbers in missing.items():
        if not numbers:
            continue
        spec = cfg.outputs[name]
        text = (
            f"outputs.{name}: {len(numbers)} of {len(rows)} label maps in column '{spec.column}' "
            f"hold none of the label values {list(spec.labels)} (rows {_listing(numbers)})"
        )
        if len(numbers) == len(rows):
            problems.append(f"{table.path}: {text}; check outputs.{name}.label")
        else:
            print(f"warning: {text}", file=sys.stderr)
    if problems:
        shown = problems[:MAX_LISTED]
        if len(problems) > MAX_LISTED:
            shown.append(f"... and {len(problems) - MAX_LISTED} more problems")
        raise UserError(f"{len(problems)} problem(s) in the data:\n" + "\n".join(shown))
    return table, splits, rows


def _listing(numbers: list[int], limit: int = 10) -> str:
    text = ", ".join(map(str, numbers[:limit]))
    return text + (f", ... ({len(numbers) - limit} more)" if len(numbers) > limit else "")


def write_prepared(cfg: Config, table: Table, splits: list[str], rows: list[dict], out: Path) -> dict:
    """Writes arrays, manifest and report into `out` (a fresh folder); returns the report."""
    names = list(cfg.inputs) + list(cfg.outputs)
    manifest = {"csv": table.path, "splits": {}, "inputs": {}, "outputs": {}}
    report = {"rows": {}, "outputs": {}}
    for split in SPLITS:
        index = [i for i, s in enumerate(splits) if s == split]
        (out / split).mkdir(parents=True)
        for name in names:
            np.save(out / split / f"{name}.npy", np.stack([rows[i][name] for i in index]))
        first_input = next(iter(cfg.inputs.values())).column
        manifest["splits"][split] = {
            "count": len(index),
            "rows": [table.numbers[i] for i in index],
            "files": [table.rows[i][first_input] for i in index],
        }
        report["rows"][split] = len(index)
    train = [rows[i] for i, s in enumerate(splits) if s == "train"]
    for spec in cfg.inputs.values():
        pixels = np.stack([r[spec.name] for r in train]).astype(np.float64) / 255  # (N, C, H, W)
        manifest["inputs"][spec.name] = {
            "mean": pixels.mean(axis=(0, 2, 3)).tolist(),
            "std": np.maximum(pixels.std(axis=(0, 2, 3)), 1e-3).tolist(),
        }
    for spec in cfg.outputs.values():
        values = {s: np.stack([rows[i][spec.name] for i, t in enumerate(splits) if t == s]) for s in SPLITS}
        if spec.type == "segmentation":
            report["outputs"][spec.name] = {f"coverage_{s}": round(float(v.mean()), 4) for s, v in values.items()}
        elif spec.type == "category":
            report["outputs"][spec.name] = {
                f"counts_{s}": dict(zip(spec.classes, np.bincount(v, minlength=spec.num_classes).tolist()))
                for s, v in values.items()
            }
        else:
            report["outputs"][spec.name] = {f"mean_{s}": round(float(v.mean()), 4) for s, v in values.items()}
            manifest["outputs"][spec.name] = {
                "mean": float(values["train"].mean()),
                "std": float(max(values["train"].std(), 1e-6)),
            }
    _write_json(out / "manifest.json", manifest)
    _write_json(out / "report.json", report)
    return report


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def replace_folder(new: Path, target: Path) -> None:
    """Moves `new` into place of `target` so a reader never sees a half-written folder."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def print_report(report: dict) -> None:
    rows = report["rows"]
    print(f"prepare: {rows['train']} train, {rows['val']} val, {rows['test']} test rows")
    for name, stats in report["outputs"].items():
        print(f"  {name}: {json.dumps(stats)}")


def main() -> None:
    cfg = load_params()
    table, splits, rows = validate_and_load(cfg)
    tmp = PREPARED.with_name(PREPARED.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    report = write_prepared(cfg, table, splits, rows, tmp)
    replace_folder(tmp, PREPARED)
    print_report(report)


if __name__ == "__main__":
    run_stage(main)

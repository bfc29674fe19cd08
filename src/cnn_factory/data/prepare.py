"""Prepare: validates the CSV, splits label maps into masks, caches uint8 arrays (stage: stages/prepare.py).

Reads the CSV that `data.csv` names. Rows are decoded in N processes (default: one per CPU); the
result does not depend on N. Any problem in any row stops the stage with the full list (row,
column, what was expected) and leaves the previous `data/prepared/` untouched. On success it
writes, atomically:

    data/prepared/<split>/<name>.npy   one array per input/output per split (memory-mapped by train)
    data/prepared/manifest.json        rows per split, source rows/files, channel mean/std
    data/prepared/report.json          rows per split, class counts, mask coverage

Decoded rows are kept in data/cache/ (a persisted DVC output, see `RowCache`), keyed by the
bytes of their files, their cells and the definitions that shape them: a re-run decodes only
new or changed rows, and rows no longer in the CSV are pruned from it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cnn_factory.config import SPLITS, Config
from cnn_factory.data.folds import TEST, assign_folds, fold_splits
from cnn_factory.data.grids import grid_for, measured, resolve_spacing
from cnn_factory.data.ragged import RaggedWriter, foreground_name
from cnn_factory.data.row_cache import CACHE_FORMAT, CachedRows, RowCache, record_dtype
from cnn_factory.data.row_keys import decoding_key, row_key
from cnn_factory.data.rows import cell_path, load_row, native_names, pack_native, unpack_native
from cnn_factory.data.splits import assign_splits, split_report
from cnn_factory.data.table import Table, check_columns, check_root, lossy_label_maps, read_table, repeated_rows
from cnn_factory.errors import UserError, listing
from cnn_factory.outputs.decoding import foreground

CACHE = Path("data/cache")  # decoded rows, kept between runs (dvc.yaml: persist)
MAX_LISTED = 50  # problems printed before "... and N more"
BLOCK = 256  # rows copied at a time into the prepared arrays (and counted, for their statistics)


@dataclass(frozen=True)
class RowJob:
    """What a worker needs to turn row i into (key, record or None if cached, problems, missing)."""

    table: Table
    cfg: Config
    defs: str
    dtype: np.dtype
    known: frozenset[str]
    stated: tuple[float, float, float] | None = None  # volumes: the spacing params.yaml gives, not auto

    def __call__(self, i: int) -> tuple[str | None, tuple[bytes, bytes] | None, list[str], list[str]]:
        key = row_key(self.table, i, self.cfg, self.defs)
        if key is not None and key in self.known:
            return key, None, [], []
        result = load_row(self.table, i, self.cfg, self.stated)
        if result.problems:
            return None, None, result.problems, result.missing_labels
        record = np.zeros((), self.dtype)
        record["key"] = (key or "").encode()  # no key (a file changed while read): never found again
        record["missing"] = [name in result.missing_labels for name in self.cfg.outputs]
        record["size"], record["native"], record["spacing"] = result.size, result.native_size, result.spacing
        for name, value in result.arrays.items():
            record["arrays"][name] = value
        return key, (record.tobytes(), pack_native(result, self.cfg)), [], result.missing_labels


_job: RowJob | None = None  # the job of a worker process, set once by its initializer


def _init_worker(job: RowJob) -> None:
    global _job
    _job = job


def _run_in_worker(i: int):
    assert _job is not None  # set by _init_worker in every worker
    return _job(i)


def _each_row(job: RowJob, n: int, workers: int) -> Iterator:
    """job(i) for every row in order, in `workers` processes (chunks of rows per task)."""
    if workers <= 1 or n < 2:
        yield from map(job, range(n))
        return
    with multiprocessing.Pool(min(workers, n), _init_worker, (job,)) as pool:
        yield from pool.imap(_run_in_worker, range(n), chunksize=max(1, min(64, n // (workers * 8))))


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def validate_and_load(
    cfg: Config, workers: int = 1, cache_dir: Path | None = None, split: bool = True
) -> tuple[Table, list[str], CachedRows]:
    """Checks every row; returns the table, split per row and arrays per row, or raises all problems.
    With split=False every row is a test row (`cnn-factory evaluate`); with `data.split.folds`, each
    row's fold or "test" (data/folds.py) takes its split's place.

    Rows whose key is in `cache_dir` are not decoded again; the rest are added to it, even
    when other rows have problems (so they are not decoded again once the CSV is fixed)."""
    table = read_table(cfg.data.csv)
    check_columns(table, cfg)
    check_root(table, cfg)
    if split and cfg.data.split.folds:  # each row's fold, or the test split; every fold trains some run
        parts = assign_folds(table, cfg.data)
        splits = ["test" if p == TEST else "train" for p in parts]
    else:
        parts = splits = assign_splits(table, cfg.data) if split else ["test"] * len(table.rows)
    given = cfg.first_input.spacing
    stated = given if isinstance(given, tuple) else None
    cfg = resolve_spacing(cfg, table, splits)  # volumes: from the training scans' headers when auto
    for warning in filter(None, [repeated_rows(table, cfg, splits), *lossy_label_maps(table, cfg)]):
        print(f"warning: {warning}", file=sys.stderr)
    cache = RowCache(cache_dir, record_dtype(cfg))
    locations, problems, missing = load_rows(table, cfg, cache, workers, stated)
    problems += missing_label_problems(table, cfg, missing)
    if problems:
        cache.seal()
        shown = problems[:MAX_LISTED]
        if len(problems) > MAX_LISTED:
            shown.append(f"... and {len(problems) - MAX_LISTED} more problems")
        raise UserError(f"{len(problems)} problem(s) in the data:\n" + "\n".join(shown))
    rows = CachedRows(cache, [loc for loc in cache.compact(locations) if loc is not None])
    spacing = cfg.first_input.spacing
    rows.spacing = spacing if isinstance(spacing, tuple) else None  # volumes: resolved above
    return table, parts, rows


def load_rows(
    table: Table, cfg: Config, cache: RowCache, workers: int, stated: tuple[float, float, float] | None = None
) -> tuple[list, list[str], dict]:
    """Each row's place in the cache (None where it has problems), every problem in row order,
    and per output the rows whose label map holds none of its labels."""
    defs = json.dumps([CACHE_FORMAT, decoding_key(cfg)])
    job = RowJob(table, cfg, defs, cache.dtype, frozenset(cache.index), stated)
    problems: list[str] = []
    locations: list[tuple[str, int] | None] = []
    missing: dict[str, list[int]] = {name: [] for name in cfg.outputs}
    results = _each_row(job, len(table.rows), workers)
    bar = tqdm(results, desc="prepare", unit="row", disable=None, file=sys.stdout, total=len(table.rows))
    for i, (key, record, row_problems, row_missing) in enumerate(bar):
        problems += row_problems
        if row_problems:
            locations.append(None)
        elif record is None:
            location = cache.index[key]
            locations.append(location)
            row_missing = [n for n, m in zip(cfg.outputs, cache.record(location)["missing"]) if m]
            cache.reused += 1
        else:
            locations.append(cache.add(*record))
            cache.decoded += 1
        for name in row_missing:
            missing[name].append(table.numbers[i])
    return locations, problems, missing


def missing_label_problems(table: Table, cfg: Config, missing: dict[str, list[int]]) -> list[str]:
    """An output whose labels no label map holds is a problem; some lacking them, a warning."""
    problems = []
    for name, numbers in missing.items():
        if not numbers:
            continue
        spec = cfg.outputs.spatial[name]
        text = (
            f"outputs.{name}: {len(numbers)} of {len(table.rows)} label maps in column '{spec.column}' "
            f"hold none of the label values {list(spec.label_values)} (rows {listing(numbers, 10, ', ... ({} more)')})"
        )
        if len(numbers) == len(table.rows):
            held = held_values(table, cfg, name, numbers[0])
            problems.append(f"{table.path}: {text}; {held}check the label values of outputs.{name}")
        else:
            print(f"warning: {text}", file=sys.stderr)
    return problems


def held_values(table: Table, cfg: Config, name: str, number: int) -> str:
    """What the label map of file row `number` holds, for the message of an output whose labels
    none holds ("row 2's label map holds 0, 255; "); "" for a colour-coded one, or one not read."""
    spec = cfg.outputs.spatial[name]
    if spec.colour_table is not None:
        return ""
    i = table.numbers.index(number)
    where = table.where(i, spec.column)
    try:
        path = cell_path(table.rows[i], spec.column, cfg.data, where, series=cfg.first_input.volume)
        labels = grid_for(cfg.first_input).read_labels(path, where, colours=False)
    except UserError:
        return ""
    return f"row {number}'s label map holds {listing(np.unique(labels.array).tolist(), 10, ', ...')}; "


def write_prepared(cfg: Config, table: Table, splits: list[str], rows: CachedRows, out: Path) -> dict:
    """Writes arrays, manifest and report into `out` (a fresh folder); returns the report.

    Arrays are filled row by row into memory-mapped files and read back in blocks for the
    statistics, so memory does not grow with the number of rows."""
    manifest: dict[str, Any] = {"csv": table.path, "splits": {}, "inputs": {}, "outputs": {}}
    report: dict[str, Any] = {"rows": {}, "outputs": {}}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    points = [foreground_name(n) for n in cfg.outputs.spatial] if cfg.patch_mode else []  # where patches centre
    for split in [s for s in SPLITS if s in splits]:  # a fold's run may have no test split
        index = [i for i, s in enumerate(splits) if s == split]
        arrays[split] = write_arrays(rows, index, [*cfg.inputs, *cfg.outputs, *points], out / split)
        sizes = write_native(rows, index, cfg, out / split)
        entry = manifest["splits"][split] = {
            "count": len(index),
            "rows": [table.numbers[i] for i in index],
            "files": [table.rows[i][cfg.first_input.column] for i in index],
            "sizes": sizes.tolist(),  # (H, W) of each row's image file, a volume's (D, H, W)
        }
        if measured(cfg.first_input):  # each scan's own spacing: the scores' millimetres
            entry["spacing"] = [list(rows.grid(i)[1]) for i in index]
        if group := cfg.data.split.group:  # each row's patient: the intervals draw them whole
            entry["groups"] = [table.rows[i][group] for i in index]
        report["rows"][split] = len(index)
    if measured(cfg.first_input):
        manifest["spacing"] = report["spacing"] = list(rows.spacing or ())
    if drawn := split_report(table, cfg.data, splits):  # data.split.group / stratify: what each split holds
        manifest["split"] = report["split"] = drawn
    report["images"] = image_report(cfg, np.asarray(manifest["splits"]["train"]["sizes"]))  # (rows, dims)
    for spec in cfg.inputs.values():
        manifest["inputs"][spec.name] = channel_stats(arrays["train"][spec.name])
    for output in cfg.outputs.values():
        values = {s: arrays[s][output.name] for s in arrays}  # a fold's run may have no test split
        report["outputs"][output.name] = output.summary(values)
        if cfg.patch_mode and output.spatial and not foreground(np.asarray(values["train"])).any():
            print(
                f"warning: outputs.{output.name}: none of the {len(values['train'])} training rows holds any of "
                f"its foreground; patches cannot learn it: check the label values of outputs.{output.name} "
                "or the split",
                file=sys.stderr,
            )
        manifest["outputs"][output.name] = output.statistics(values["train"])  # e.g. a number's mean and std
    _write_json(out / "manifest.json", manifest)
    _write_json(out / "report.json", report)
    return report


def write_native(rows: CachedRows, index: list[int], cfg: Config, folder: Path) -> np.ndarray:
    """folder/<name>.u8 + index per array of native_names(): the rows' arrays at their image's own
    size (data/ragged.py), copied row by row from the cache; returns the rows' (H, W) or (D, H, W).
    Volumes also get folder/spacing.npy, each scan's own spacing."""
    dims = len(cfg.first_input.size)
    writers = {name: RaggedWriter(folder, name, dims=dims) for name in native_names(cfg)}
    sizes = np.zeros((len(index), dims), np.int64)
    for k, i in enumerate(index):
        size, blob = rows.native(i)
        sizes[k] = size
        for name, array in unpack_native(blob, cfg, size, rows.grid(i)[0]).items():
            writers[name].append(array)
    for writer in writers.values():
        writer.close()
    if measured(cfg.first_input):  # each scan's own mm per (D, H, W) axis: the units of its scores
        np.save(folder / "spacing.npy", np.array([rows.grid(i)[1] for i in index], np.float64).reshape(-1, dims))
    return sizes


def image_report(cfg: Config, sizes: np.ndarray) -> dict:
    """The training images' sizes, and in patch mode how many are smaller than a patch (padded)."""
    report = {
        "smallest": sizes.min(0).tolist(),
        "median": np.median(sizes, 0).astype(int).tolist(),
        "largest": sizes.max(0).tolist(),
    }
    if cfg.patch_mode and not cfg.volumes:  # volumes: `sizes` are at each scan's own spacing, not the patch's
        scaled = np.round(sizes * cfg.first_input.scale)
        report["padded"] = int((scaled < np.asarray(cfg.first_input.size)).any(1).sum())
    return report


def write_arrays(rows: CachedRows, index: list[int], names: list[str], folder: Path) -> dict[str, np.ndarray]:
    """folder/<name>.npy holding rows[i][name] for i in index, stacked; returned memory-mapped.

    Rows are copied a block at a time, one gather per cache shard and block."""
    folder.mkdir(parents=True)
    first = rows[index[0]]
    arrays: dict[str, np.ndarray] = {
        n: np.lib.format.open_memmap(
            folder / f"{n}.npy", "w+", np.asarray(first[n]).dtype, (len(index), *np.shape(first[n]))
        )
        for n in names
    }
    for start in range(0, len(index), BLOCK):
        part = index[start : start + BLOCK]
        block = rows.stacked(part)
        for n in names:
            arrays[n][start : start + len(part)] = block[n]
    return arrays


def channel_stats(images: np.ndarray) -> dict[str, list[float]]:
    """Per-channel mean and std (floored at 1e-3) of uint8 (N, C, H, W) images scaled to 0..1,
    from a histogram of the 256 values per channel, built a block of images at a time."""
    counts = np.zeros((images.shape[1], 256), np.int64)
    for start in range(0, len(images), BLOCK):
        part = np.asarray(images[start : start + BLOCK])
        for c in range(images.shape[1]):
            counts[c] += np.bincount(part[:, c].ravel(), minlength=256)
    values = np.arange(256) / 255
    mean = counts @ values / counts.sum(axis=1)
    std = np.sqrt((counts * (values[None] - mean[:, None]) ** 2).sum(axis=1) / counts.sum(axis=1))
    return {"mean": mean.tolist(), "std": np.maximum(std, 1e-3).tolist()}


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


def prepare(cfg: Config, out: Path, cache_dir: Path | None, workers: int) -> tuple[dict, CachedRows]:
    """The whole stage: validate and decode (through the cache), then replace `out` atomically."""
    table, splits, rows = validate_and_load(cfg, workers, cache_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    report = (write_folds if cfg.data.split.folds else write_prepared)(cfg, table, splits, rows, tmp)
    replace_folder(tmp, out)
    return report, rows


def write_folds(cfg: Config, table: Table, folds: list[str], rows: CachedRows, out: Path) -> dict:
    """With `data.split.folds`: `out/folds/<k>/`, each fold's run prepared as one split is (its fold
    the val split, the other folds train, the held-out test split), from the rows decoded once;
    `out/manifest.json` and `out/report.json` say which CSV rows each fold holds. Returns the report."""
    names = cfg.data.split.fold_names
    for name in names:
        write_prepared(cfg, table, fold_splits(folds, name), rows, out / "folds" / name)
    parts = [*names, TEST]
    counts = {p: [table.numbers[i] for i, f in enumerate(folds) if f == p] for p in parts}
    report: dict[str, Any] = {"rows": {p: len(r) for p, r in counts.items()}, "folds": names, "outputs": {}}
    first = out / "folds" / names[0]
    for output in cfg.outputs.values():  # a fold's rows are its own run's val split
        values = {n: np.load(out / "folds" / n / "val" / f"{output.name}.npy", mmap_mode="r") for n in names}
        if (first / TEST).is_dir():
            values[TEST] = np.load(first / TEST / f"{output.name}.npy", mmap_mode="r")
        report["outputs"][output.name] = output.summary(values)
    if drawn := split_report(table, cfg.data, folds, parts):
        report["split"] = drawn
    _write_json(out / "manifest.json", {"csv": table.path, "folds": names, "members": counts})  # CSV rows
    _write_json(out / "report.json", report)
    return report


def _per_part(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} in fold {p}" if p.isdigit() else f"{n} {p}" for p, n in counts.items())


def print_report(report: dict) -> None:
    rows, images = report["rows"], report.get("images", {})
    print("prepare: " + _per_part(rows) + " rows")  # per split, or per fold and the test split
    drawn = report.get("split", {})
    if "groups" in drawn:
        print(f"  groups of '{drawn['group']}': " + _per_part(drawn["groups"]))
    for split, counts in drawn.get("classes", {}).items():
        where = f"fold {split}" if split.isdigit() else split
        print(f"  '{drawn['stratify']}' in {where}: " + ", ".join(f"{c} {k}" for c, k in counts.items()))
    if images:
        small, median, large = ("x".join(map(str, images[k])) for k in ("smallest", "median", "largest"))
        print(f"  training {'scans' if len(images['median']) == 3 else 'images'}: {small} to {large}, median {median}")
    if report.get("spacing"):
        print(f"  resampled to {' x '.join(f'{s:g}' for s in report['spacing'])} mm (depth x height x width)")
    if images.get("padded"):
        print(f"  {images['padded']} training image(s) smaller than a patch: padded with zeros around them")
    for name, stats in report["outputs"].items():
        print(f"  {name}: {json.dumps(stats)}")

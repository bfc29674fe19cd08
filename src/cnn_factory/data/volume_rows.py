"""Decodes one CSV row of volumes (3-D scans) into the arrays prepare stores, as rows.py does images.

A row's scans (one file per input, stacked as channels) are read with their spacing
(volumes.py), their intensities brought to 0..255 (`inputs.*.window`, else each scan's 0.5th to
99.5th percentile), and resampled to the target spacing (`inputs.*.spacing`, resolved from the
training split before any row is decoded: `resolve_spacing`): cubic splines for intensities,
nearest neighbour for label volumes. prepare keeps, per row:

    <input>.native   (C, D', H', W') uint8 at the target spacing: what patches are cut from
    <mask>.native    (D', H', W') the mask at the target spacing
    <mask>.truth     (D, H, W) the mask on the label volume's own grid: what the scores compare with
    <input>          (C, d, h, w) the whole scan resized to the input size: the image-level outputs' view

Label volumes hold label values (no colour tables); an output's `label` selects among them as
for images. Every problem is one line naming the row, the column and the file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnn_factory.config import Config
from cnn_factory.data.ragged import foreground_name, foreground_pixels
from cnn_factory.data.resample import resample, resample_labels, resampled_shape, target_spacing, to_shape
from cnn_factory.data.rows import RowResult, cell_path
from cnn_factory.data.table import Table
from cnn_factory.errors import UserError
from cnn_factory.volumes import Volume, read_label_volume, read_volume, same_grid, volume_grid

PERCENTILES = (0.5, 99.5)  # a scan's intensities mapped to 0..255 without `window`, as nnU-Net clips them


def to_uint8(voxels: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """(C, D, H, W) float32 in 0..255: `window` [low, high] or each channel's percentiles to 0..255."""
    values = voxels.astype(np.float32)
    out = np.empty_like(values)
    for c, channel in enumerate(values):
        low, high = window if window is not None else np.percentile(channel, PERCENTILES)
        out[c] = (np.clip(channel, low, high) - low) * (255.0 / max(float(high - low), 1e-6))
    return out


def quantise(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def scan_voxels(scan: Volume, window: tuple[float, float] | None, target: tuple[float, ...]) -> np.ndarray:
    """A scan's (C, D', H', W') uint8 voxels at the `target` spacing (what the network sees)."""
    return quantise(resample(to_uint8(scan.array, window), scan.spacing, target, order=3))


def resolve_spacing(cfg: Config, table: Table, splits: list[str]) -> Config:
    """cfg with `inputs.*.spacing: auto` replaced by the target spacing of the training scans
    (data/resample.py's rule), read from their headers; rows whose file cannot be read are left
    to load_row to report."""
    spec = cfg.first_input
    if spec.spacing != "auto":
        return cfg
    spacings, shapes = [], []
    for i, split in enumerate(splits):
        if split != "train":
            continue
        value = table.rows[i][spec.column]
        path = cfg.data.resolve(value) if value else None
        if path is None or not (path.is_file() or path.is_dir()):  # a folder: a DICOM series
            continue
        try:
            shape, spacing = volume_grid(path, table.where(i, spec.column))
        except UserError:
            continue
        shapes.append(shape)
        spacings.append(spacing)
    if not spacings:
        raise UserError(
            f"inputs.{spec.name}.spacing: auto takes the training scans' spacing, and none of them has a readable "
            f"one; set inputs.{spec.name}.spacing to [depth, height, width] mm"
        )
    return with_spacing(cfg, target_spacing(spacings, shapes))


def with_spacing(cfg: Config, target: tuple[float, ...]) -> Config:
    """cfg whose inputs name `target` (mm per D, H, W axis) as their spacing."""
    target = tuple(round(float(t), 6) for t in target)
    inputs = {n: s.model_copy(update={"spacing": target}).named(n) for n, s in cfg.inputs.items()}
    return cfg.model_copy(update={"inputs": inputs})


def load_volume_row(
    table: Table, index: int, cfg: Config, stated: tuple[float, float, float] | None = None
) -> RowResult:
    """One row of volumes decoded (see the module's docstring), or its problems. `stated`: the
    spacing params.yaml gives (not auto), which a TIFF stack without calibration is read at."""
    row, result = table.rows[index], RowResult()

    def problem(column: str, text: str) -> None:
        line = f"{table.where(index, column)}: {text}"
        if line not in result.problems:
            result.problems.append(line)

    target = cfg.first_input.spacing
    assert target != "auto", "resolve_spacing() first"
    first: Volume | None = None
    for spec in cfg.inputs.values():
        path = cell_path(row, spec.column, cfg.data, problem, series=True)
        if path is None:
            continue
        where = table.where(index, spec.column)
        try:
            scan = read_volume(path, where, channels=spec.channels, default_spacing=stated)
            if first is not None:
                same_grid(first, scan, path, where)
        except UserError as err:  # its message names the row and column already
            problem(spec.column, str(err).removeprefix(f"{where}: "))
            continue
        first = first or scan
        native = scan_voxels(scan, spec.window, target)
        result.native[f"{spec.name}.native"] = native
        result.arrays[spec.name] = quantise(to_shape(native, spec.size, order=1))
    if first is not None:
        result.size, result.spacing = first.shape, first.spacing
        result.native_size = resampled_shape(first.shape, first.spacing, target)
    labels: dict[str, tuple[np.ndarray, np.ndarray | None] | None] = {}  # per column: values, at the target
    for output in cfg.outputs.values():
        values = None
        if output.reads_label_map:
            if output.colour_table is not None:
                problem(output.column, f"outputs.{output.name}: label volumes hold label values; remove its colours")
                continue
            if output.column not in labels:
                labels[output.column] = _label_volume(table, index, cfg, output.column, first, problem, stated)
            read = labels[output.column]
            if read is None:
                continue
            values, at_target = read
            if output.lacks_labels(values):
                result.missing_labels.append(output.name)
        try:
            result.arrays[output.name] = output.decode(row[output.column], values)
        except ValueError as err:
            problem(output.column, str(err))
        if output.spatial and values is not None and at_target is not None:
            result.native[f"{output.name}.truth"] = output.mask(values, values.shape)
            mask = output.mask(at_target, at_target.shape)
            result.native[f"{output.name}.native"] = mask
            result.arrays[foreground_name(output.name)] = foreground_pixels(mask)
    return result


def _label_volume(
    table: Table,
    index: int,
    cfg: Config,
    column: str,
    image: Volume | None,
    problem: Callable[[str, str], None],
    stated: tuple[float, float, float] | None,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The label values of the row's label volume in `column`, checked to lie on its image's grid,
    and resampled to the target spacing (nearest; None without an image to place them)."""
    path = cell_path(table.rows[index], column, cfg.data, problem)
    if path is None:
        return None
    where = table.where(index, column)
    try:
        labels = read_label_volume(path, where, stated)
        if image is not None:
            same_grid(image, labels, path, where)
    except UserError as err:  # its message names the row and column already
        problem(column, str(err).removeprefix(f"{where}: "))
        return None
    if image is None:
        return labels.array, None
    target = cfg.first_input.spacing
    assert target != "auto"
    return labels.array, resample_labels(labels.array, labels.spacing, target)

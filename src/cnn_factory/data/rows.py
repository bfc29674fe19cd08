"""Decodes one CSV row into the arrays prepare stores, collecting every problem with its row and column.

A row's input files are read as (C, *spatial) with their spacing and brought onto the network's
grid (data/grids.py: images at their scale, volumes at the target spacing); its label maps are
read once per column and turned into each output's label values, then each output's cell or
label values are decoded by its kind (`Output.decode`). Images and volumes take the same path;
what differs between them is all in data/grids.py. prepare keeps, per row:

    <input>          (C, *size) the whole image or scan at the input's size: the image-level outputs' view
    <input>.native   (C, *native) at the native grid: what patches are cut from (patch mode)
    <mask>.native    (*native) the mask at the native grid (patch mode)
    <mask>.truth     (*spatial) the mask on the label map's own grid: what the scores compare with

`row_key` (data/row_keys.py) names what a row decodes to, for the row cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnn_factory.config import Config, DataConfig
from cnn_factory.data.grids import Grid, Scan, grid_for
from cnn_factory.data.ragged import foreground_name, foreground_pixels
from cnn_factory.data.table import Table
from cnn_factory.errors import UserError
from cnn_factory.outputs import MaskOutput
from cnn_factory.outputs.decoding import foreground


@dataclass
class RowResult:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # fixed shapes: resized images, masks, values
    native: dict[str, np.ndarray] = field(default_factory=dict)  # any size: see native_names()
    size: tuple[int, ...] = (0, 0)  # (H, W) of the row's image file, a volume's (D, H, W)
    problems: list[str] = field(default_factory=list)
    missing_labels: list[str] = field(default_factory=list)  # outputs whose labels are absent
    native_size: tuple[int, ...] = ()  # the native grid's size: scaled, or at the target spacing
    spacing: tuple[float, ...] = ()  # the file's own mm per axis (images: 1)


def native_names(cfg: Config) -> list[str]:
    """The arrays of a row kept at the image's own size, in the order prepare stores them:
    `<input>.native` and `<mask>.native` at the native grid (patch mode, for training patches),
    and `<mask>.truth`, the label map's mask at its own size (what metrics compare with)."""
    spatial = list(cfg.outputs.spatial)
    names = [f"{n}.native" for n in [*cfg.inputs, *spatial]] if cfg.patch_mode else []
    return names + [f"{n}.truth" for n in spatial]


def pack_native(result: RowResult, cfg: Config) -> bytes:
    """A row's arrays of its image's size, back to back in native_names() order (the row cache's blob)."""
    return b"".join(np.ascontiguousarray(result.native[name], np.uint8).tobytes() for name in native_names(cfg))


def unpack_native(
    blob: np.ndarray, cfg: Config, size: tuple[int, ...], native: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """pack_native's arrays back from the blob, as views of it, for a row whose image is `size`
    (*spatial) and whose native grid is `native`."""
    arrays, offset = {}, 0
    for name in native_names(cfg):
        base, kind = name.rsplit(".", 1)
        if base in cfg.inputs:
            shape = (cfg.inputs[base].channels, *native)
        elif kind == "native":  # a mask at the native grid
            shape = native
        else:  # a mask's truth at the image's own size
            shape = size
        n = int(np.prod(shape))
        arrays[name] = blob[offset : offset + n].reshape(shape)
        offset += n
    return arrays


def load_row(table: Table, index: int, cfg: Config, stated: tuple[float, float, float] | None = None) -> RowResult:
    """Decodes one CSV row into arrays keyed by input/output name, or lists its problems (see the
    module's docstring). `stated`: the spacing params.yaml gives (not auto), which a TIFF stack
    without calibration is read at."""
    row, result, grid = table.rows[index], RowResult(), grid_for(cfg.first_input, stated)

    def problem(column: str, error: UserError) -> None:
        where = table.where(index, column)
        line = f"{where}: {str(error).removeprefix(f'{where}: ')}"
        if line not in result.problems:  # a label map read as values and as colours: one problem, said once
            result.problems.append(line)

    first: Scan | None = None
    for spec in cfg.inputs.values():
        where = table.where(index, spec.column)
        try:
            path = cell_path(row, spec.column, cfg.data, where, series=spec.volume)
            scan = grid.read(path, spec, where)
            if first is not None:
                grid.same_inputs(first, scan, path, where)
            first = first or scan
            result.arrays[spec.name], native = grid.input_arrays(scan, spec, path, where)
        except UserError as err:
            problem(spec.column, err)
            continue
        if native is not None:
            result.native[f"{spec.name}.native"] = native
    if first is not None:
        result.size, result.spacing, result.native_size = first.shape, first.spacing, grid.native_size(first)
    declared = {o.column: cfg.outputs.label_values(o.column) for o in cfg.outputs.spatial.values()}
    maps = RowLabelMaps(table, index, cfg.data, grid, first, declared)
    for output in cfg.outputs.values():
        labels = None
        if isinstance(output, MaskOutput):  # its cell names a label map
            try:
                labels = maps.values_for(output)
            except UserError as err:
                problem(output.column, err)
                continue
            if output.lacks_labels(labels.array):
                result.missing_labels.append(output.name)
        try:
            result.arrays[output.name] = output.decode_row(row, None if labels is None else labels.array)
        except ValueError as err:  # a CellError names another of its columns
            problem(getattr(err, "column", output.column), UserError(str(err)))
        if isinstance(output, MaskOutput) and labels is not None:
            result.native[f"{output.name}.truth"] = output.mask(labels.array, labels.array.shape)
            at_native = grid.native_labels(labels.array, labels.spacing) if cfg.patch_mode else None
            if at_native is not None:
                mask = output.mask(*at_native)
                result.native[f"{output.name}.native"] = mask
                result.arrays[foreground_name(output.name)] = foreground_pixels(foreground(mask))
    return result


def cell_path(row: dict[str, str], column: str, data: DataConfig, where: str, series: bool = False) -> Path:
    """The file a cell names, or a UserError saying why there is none to read; with `series`, a
    folder holding a DICOM series too (a scan: read_volume says what is wrong with its slices)."""
    if not row[column]:
        raise UserError(f"{where}: empty cell; expected a file path")
    path = data.resolve(row[column])
    if path.is_dir() and series:
        return path
    if path.is_dir():
        raise UserError(f"{where}: {path} is a directory, expected an image file")
    if not path.is_file():
        raise UserError(f"{where}: file not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"{where}: {path} is an empty file (0 bytes); replace it with the image it should hold")
    return path


@dataclass
class RowLabelMaps:
    """One row's label maps. Several outputs may read one label-map column: its file is read once
    (as values, or as colours for outputs with a colour table), checked against its image's grid,
    and turned into label values once per colour table."""

    table: Table
    index: int
    data: DataConfig
    grid: Grid
    image: Scan | None  # the row's first image, None where it could not be read
    declared: dict[str, tuple[int, ...]]  # per label-map column: the values its masks look for, and 0
    read: dict[tuple[str, bool], tuple[Path, Scan] | UserError] = field(default_factory=dict)
    values: dict[tuple[str, str], Scan | UserError] = field(default_factory=dict)

    def values_for(self, output: MaskOutput) -> Scan:
        """The (*spatial) label values `output` picks its mask from, with their spacing; a
        UserError (said once per file) where there are none."""
        table = output.colour_table
        as_read = (output.column, table is not None)
        if as_read not in self.read:
            self.read[as_read] = self._read(output.column, table is not None)
        key = (output.column, json.dumps(table, sort_keys=True))
        if key not in self.values:
            self.values[key] = self._values(self.read[as_read], output)
        found = self.values[key]
        if isinstance(found, UserError):
            raise found
        return found

    def _read(self, column: str, colours: bool) -> tuple[Path, Scan] | UserError:
        where = self.table.where(self.index, column)
        try:
            path = cell_path(self.table.rows[self.index], column, self.data, where)
            labels = self.grid.read_labels(path, where, colours, on=self.image)
            if self.image is not None:
                self.grid.same_grid(self.image, labels, path, where)
        except UserError as err:
            return err
        return path, labels

    def _values(self, read: tuple[Path, Scan] | UserError, output: MaskOutput) -> Scan | UserError:
        if isinstance(read, UserError):
            return read
        path, labels = read
        where = self.table.where(self.index, output.column)
        try:
            values = self.grid.label_values(labels, output, path, where, self.declared[output.column])
        except UserError as err:
            return err
        return Scan(values, labels.shape, labels.spacing, labels.volume)

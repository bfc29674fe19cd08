"""Decodes one CSV row into the arrays prepare stores, collecting every problem with its row and column.

Images are read as prepare and predict both need them (alpha dropped, scaled to uint8, resized
to the input's size); label maps are turned into each output's label values (data/label_maps.py),
then each output's cell or label values are decoded by its kind (`Output.decode`).
`row_key` names what a row decodes to (its files' bytes, its cells, the definitions), for the
row cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnn_factory.config import Config, DataConfig, InputSpec
from cnn_factory.data.label_maps import label_values, read_label_map
from cnn_factory.data.ragged import foreground_name, foreground_pixels
from cnn_factory.data.table import Table
from cnn_factory.images import read_pixels
from cnn_factory.outputs import Output


@dataclass
class RowResult:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # fixed shapes: resized images, masks, values
    native: dict[str, np.ndarray] = field(default_factory=dict)  # any size: see native_names()
    size: tuple[int, ...] = (0, 0)  # (H, W) of the row's image file, a volume's (D, H, W)
    problems: list[str] = field(default_factory=list)
    missing_labels: list[str] = field(default_factory=list)  # outputs whose labels are absent
    native_size: tuple[int, ...] = ()  # volumes: (D, H, W) at the target spacing
    spacing: tuple[float, ...] = ()  # volumes: the scan's own mm per (D, H, W) axis


def native_names(cfg: Config) -> list[str]:
    """The arrays of a row kept at the image's own size, in the order prepare stores them:
    `<input>.native` and `<mask>.native` at `inputs.*.scale` times it (patch mode, for training
    patches), and `<mask>.truth`, the label map's mask at its own size (what metrics compare with)."""
    spatial = [n for n, o in cfg.outputs.items() if o.spatial]
    names = [f"{n}.native" for n in [*cfg.inputs, *spatial]] if cfg.patch_mode else []
    return names + [f"{n}.truth" for n in spatial]


def scaled_size(size: tuple[int, ...], scale: float) -> tuple[int, int]:
    return (round(size[0] * scale), round(size[1] * scale))


def native_shapes(cfg: Config, size: tuple[int, ...], scaled: tuple[int, ...] = ()) -> dict[str, tuple[int, ...]]:
    """The shape of each of native_names() for a row whose image is `size` (H, W), or a volume of
    `size` (D, H, W) that is `scaled` (D, H, W) at the target spacing."""
    scaled = scaled or scaled_size(size, cfg.first_input.scale)
    shapes: dict[str, tuple[int, ...]] = {}
    for name in native_names(cfg):
        base, kind = name.rsplit(".", 1)
        if base in cfg.inputs:
            shapes[name] = (cfg.inputs[base].channels, *scaled)
        else:
            shapes[name] = scaled if kind == "native" else size
    return shapes


def pack_native(result: RowResult, cfg: Config) -> bytes:
    """A row's arrays of its image's size, back to back in native_names() order (the row cache's blob)."""
    return b"".join(np.ascontiguousarray(result.native[name], np.uint8).tobytes() for name in native_names(cfg))


def unpack_native(
    blob: np.ndarray, cfg: Config, size: tuple[int, ...], scaled: tuple[int, ...] = ()
) -> dict[str, np.ndarray]:
    """pack_native's arrays back from the blob, as views of it."""
    arrays, offset = {}, 0
    for name, shape in native_shapes(cfg, size, scaled).items():
        n = int(np.prod(shape))
        arrays[name] = blob[offset : offset + n].reshape(shape)
        offset += n
    return arrays


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Scales any image dtype to uint8: integers by their dtype's range, floats from [0, 1]."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    if np.issubdtype(img.dtype, np.integer):
        return (img.astype(np.float64) * (255 / np.iinfo(img.dtype).max)).round().astype(np.uint8)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def read_input(path: Path | bytes, spec: InputSpec) -> np.ndarray:
    """(C, H, W) uint8 at the file's own size: alpha dropped, any bit depth scaled to 0..255.
    `path` may also be an image file's bytes (`cnn-factory serve`'s uploads)."""
    img = read_pixels(path)
    if img.ndim == 3 and img.shape[-1] in (2, 4):  # drop alpha
        img = img[..., :-1]
    channels = 1 if img.ndim == 2 else img.shape[-1]
    if img.ndim not in (2, 3) or channels not in (1, 3):
        raise ValueError(f"has shape {img.shape}; expected an image of height x width (x channels)")
    if channels != spec.channels:
        raise ValueError(f"has {channels} channel(s) but inputs.{spec.name}.channels is {spec.channels}")
    img = to_uint8(img)
    return img.reshape(*img.shape[:2], spec.channels).transpose(2, 0, 1).copy()


def resize_image(img: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """(C, H, W) uint8 resized to `size` (bilinear, anti-aliased when shrinking)."""
    if img.shape[-2:] == tuple(size):
        return img
    from skimage.transform import resize  # here: it loads scipy (0.3 s), which a prepare of cached rows skips

    out = resize(img.transpose(1, 2, 0), size, order=1, preserve_range=True, anti_aliasing=True)
    return out.round().astype(np.uint8).reshape(*size, img.shape[0]).transpose(2, 0, 1).copy()


def load_row(table: Table, index: int, cfg: Config) -> RowResult:
    """Decodes one CSV row into arrays keyed by input/output name, or lists its problems."""
    row, result = table.rows[index], RowResult()

    def problem(column: str, text: str) -> None:
        line = f"{table.where(index, column)}: {text}"
        if line not in result.problems:  # a label map read as values and as colours: one problem, said once
            result.problems.append(line)

    image_size, scale = None, cfg.first_input.scale
    for spec in cfg.inputs.values():
        path = cell_path(row, spec.column, cfg.data, problem)
        if path is None:
            continue
        try:
            image = read_input(path, spec)
        except ValueError as err:
            problem(spec.column, f"{path} {err}")
            continue
        image_size = result.size = image.shape[-2:]
        result.arrays[spec.name] = resize_image(image, spec.size)
        if cfg.patch_mode:
            native = scaled_size(image_size, scale)
            if min(native) < 1:
                problem(
                    spec.column,
                    f"{path} is {image_size[0]}x{image_size[1]}; inputs.{spec.name}.scale {scale} "
                    f"leaves {native[0]}x{native[1]} pixels; raise the scale",
                )
                continue
            result.native[f"{spec.name}.native"] = resize_image(image, native)
    maps = RowLabelMaps(row, cfg.data, image_size, problem)
    for output in cfg.outputs.values():
        labels = None
        if output.reads_label_map:
            labels = maps.values_for(output)
            if labels is None:
                continue
            if output.lacks_labels(labels):
                result.missing_labels.append(output.name)
        try:
            result.arrays[output.name] = output.decode(row[output.column], labels)
        except ValueError as err:
            problem(output.column, str(err))
        if output.spatial and labels is not None:
            result.native[f"{output.name}.truth"] = output.mask(labels, labels.shape)
            if cfg.patch_mode and min(scaled_size(labels.shape, scale)) >= 1:
                mask = output.mask(labels, scaled_size(labels.shape, scale))
                result.native[f"{output.name}.native"] = mask
                result.arrays[foreground_name(output.name)] = foreground_pixels(mask)
    return result


def cell_path(row, column, data: DataConfig, problem, series: bool = False) -> Path | None:
    """The file a cell names, or None after reporting the problem; with `series`, a folder holding
    a DICOM series too (a scan)."""
    if not row[column]:
        problem(column, "empty cell; expected a file path")
        return None
    path = data.resolve(row[column])
    if path.is_dir():
        if series:
            return path  # read_volume says what is wrong with the folder's slices, if anything
        problem(column, f"{path} is a directory, expected an image file")
        return None
    if not path.is_file():
        problem(column, f"file not found: {path}")
        return None
    if path.stat().st_size == 0:
        problem(column, f"{path} is an empty file (0 bytes); replace it with the image it should hold")
        return None
    return path


@dataclass
class RowLabelMaps:
    """One row's label maps. Several outputs may read one label-map column: its file is read once
    (as values, or as colours for outputs with a colour table) and turned into label values once
    per colour table."""

    row: dict[str, str]
    data: DataConfig
    image_size: tuple[int, int] | None
    problem: Callable[[str, str], None]
    read: dict[tuple[str, bool], tuple[Path, np.ndarray] | None] = field(default_factory=dict)
    values: dict[tuple[str, str], np.ndarray | None] = field(default_factory=dict)

    def values_for(self, output: Output) -> np.ndarray | None:
        """The (H, W) label values `output` picks its mask from; None (and a problem) when there are none."""
        table = output.colour_table
        as_read = (output.column, table is not None)
        if as_read not in self.read:
            self.read[as_read] = self._read(output.column, table is not None)
        key = (output.column, json.dumps(table, sort_keys=True))
        if key not in self.values:
            self.values[key] = self._values(self.read[as_read], output)
        return self.values[key]

    def _read(self, column: str, colours: bool) -> tuple[Path, np.ndarray] | None:
        path = cell_path(self.row, column, self.data, self.problem)
        if path is None:
            return None
        try:
            labels = read_label_map(path, colours)
        except ValueError as err:
            self.problem(column, f"{path} {err}")
            return None
        size = self.image_size
        if size is not None and labels.shape[:2] != tuple(size):
            self.problem(
                column,
                f"{path} is {labels.shape[0]}x{labels.shape[1]} but its image is "
                f"{size[0]}x{size[1]}; a label map must match its image's size",
            )
            return None
        return path, labels

    def _values(self, read: tuple[Path, np.ndarray] | None, output: Output) -> np.ndarray | None:
        if read is None:
            return None
        path, labels = read
        try:
            return label_values(labels, output)
        except ValueError as err:
            self.problem(output.column, f"{path} {err}")
            return None

"""Checks a CSV against params and decodes each row into arrays, collecting every problem.

Used by `stages/prepare.py`. Row numbers are those a spreadsheet shows: the header is
row 1, the first data row is row 2. Each problem names the CSV, row, column and what
was expected; nothing is raised until every row has been looked at. `row_key` names what a
row decodes to (its files' bytes, its cells, the definitions), for prepare's cache.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import skimage
from skimage import io as skio
from skimage.transform import resize

from cnn_factory.config import SPLITS, Config, DataConfig, InputSpec, OutputSpec
from cnn_factory.errors import UserError


@dataclass
class Table:
    """The CSV as text cells; `numbers[i]` is the file row of `rows[i]` (the header is row 1)."""

    path: str
    header: list[str]
    rows: list[dict[str, str]]
    numbers: list[int]

    def where(self, index: int, column: str) -> str:
        return f"{self.path}: row {self.numbers[index]}, column '{column}'"


@dataclass
class RowResult:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    missing_labels: list[str] = field(default_factory=list)  # outputs whose labels are absent


def read_table(path: str) -> Table:
    """Reads the CSV (BOM, Windows line endings and quoted cells are fine)."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: CSV not found; check data.csv in params.yaml") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); save the CSV as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": csv handles \n, \r\n and \r itself
    try:
        lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as err:
        raise UserError(f"{path}: row {reader.line_num}: not valid CSV ({err}); check the quotes on that row") from None
    if not lines:
        raise UserError(f"{path}: the CSV is empty; expected a header row naming the columns, then one row per image")
    header = [cell.strip() for cell in lines[0][1]]
    seen: set[str] = set()
    for i, name in enumerate(header):
        if not name:
            raise UserError(f"{path}: row 1, column {i + 1}: empty column name; every column needs a header")
        if name in seen:
            raise UserError(f"{path}: row 1: column name '{name}' appears twice; column names must be unique")
        seen.add(name)
    rows = []
    for number, cells in lines[1:]:
        if len(cells) != len(header):
            raise UserError(
                f"{path}: row {number}: {len(cells)} cells but the header has {len(header)}; "
                "quote cells that contain commas"
            )
        rows.append({name: cell.strip() for name, cell in zip(header, cells)})
    if not rows:
        raise UserError(f"{path}: the CSV has a header but no data rows")
    return Table(path=path, header=header, rows=rows, numbers=[number for number, _ in lines[1:]])


def check_columns(table: Table, cfg: Config) -> None:
    """Every column named in params must be in the CSV header."""
    needed = [(f"inputs.{s.name}", s.column) for s in cfg.inputs.values()]
    needed += [(f"outputs.{s.name}", s.column) for s in cfg.outputs.values()]
    if cfg.data.split.column:
        needed.append(("data.split.column", cfg.data.split.column))
    problems = [
        f"{table.path}: row 1: no column '{column}' (needed by {key}); columns are: {', '.join(table.header)}"
        for key, column in needed
        if column not in table.header
    ]
    if problems:
        if not any(spec.column in table.header for spec in cfg.inputs.values()):
            problems.append(f"{table.path}: row 1 must be the header naming the columns")
        raise UserError("\n".join(problems))


def assign_splits(table: Table, data: DataConfig) -> list[str]:
    """train/val/test per row, from data.split.column or from seeded random fractions."""
    n = len(table.rows)
    if data.split.column:
        names, problems = [], []
        for i, row in enumerate(table.rows):
            value = row[data.split.column].lower()
            if value not in SPLITS:
                problems.append(
                    f"{table.where(i, data.split.column)}: unknown split {row[data.split.column]!r}; "
                    "expected train, val or test"
                )
            names.append(value)
        if problems:
            raise UserError("\n".join(problems))
    else:
        n_val, n_test = round(n * data.split.val), round(n * data.split.test)
        order = np.random.default_rng(data.split.seed).permutation(n)
        names = ["train"] * n
        for k, i in enumerate(order):
            names[i] = "val" if k < n_val else "test" if k < n_val + n_test else "train"
    for split in SPLITS:
        if split not in names:
            how = (
                f"column '{data.split.column}' names no {split} row"
                if data.split.column
                else (f"data.split fractions leave it empty with {n} rows")
            )
            raise UserError(f"{table.path}: the {split} split is empty ({how}); add rows or change data.split")
    return names


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Scales any image dtype to uint8: integers by their dtype's range, floats from [0, 1]."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    if np.issubdtype(img.dtype, np.integer):
        return (img.astype(np.float64) * (255 / np.iinfo(img.dtype).max)).round().astype(np.uint8)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _read_image(path: Path) -> np.ndarray:
    try:
        return np.asarray(skio.imread(path))
    except Exception as err:  # decoders raise many types; all mean "not an image"
        raise ValueError(f"cannot be read as an image ({type(err).__name__}: {err})") from None


def load_input(path: Path, spec: InputSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """(C, H, W) uint8 at spec.size, and the file's own (H, W); raises ValueError with the reason."""
    img = _read_image(path)
    original_size = img.shape[:2]
    if img.ndim == 3 and img.shape[-1] in (2, 4):  # drop alpha
        img = img[..., :-1]
    channels = 1 if img.ndim == 2 else img.shape[-1]
    if img.ndim not in (2, 3) or channels not in (1, 3):
        raise ValueError(f"has shape {img.shape}; expected an image of height x width (x channels)")
    if channels != spec.channels:
        raise ValueError(f"has {channels} channel(s) but inputs.{spec.name}.channels is {spec.channels}")
    img = to_uint8(img)
    if img.shape[:2] != spec.size:
        img = resize(img, spec.size, order=1, preserve_range=True, anti_aliasing=True).round().astype(np.uint8)
    return img.reshape(*spec.size, spec.channels).transpose(2, 0, 1).copy(), original_size


def load_label_map(path: Path) -> np.ndarray:
    labels = _read_image(path)
    if labels.ndim == 3:
        if not (labels == labels[..., :1]).all():
            raise ValueError("is a colour image; expected a single-channel label map of integer values")
        labels = labels[..., 0]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"has shape {labels.shape} and type {labels.dtype}; expected a 2-D map of integers")
    return labels


def split_mask(labels: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Boolean (H, W) uint8 mask of the label values in spec.labels, at spec.size (nearest)."""
    mask = np.isin(labels, spec.labels)
    if mask.shape != spec.size:
        mask = resize(mask, spec.size, order=0, preserve_range=True, anti_aliasing=False)
    return mask.astype(np.uint8)


def parse_category(value: str, spec: OutputSpec) -> int:
    if value in spec.classes:
        return spec.classes.index(value)
    raise ValueError(f"{value!r} is not a known class; expected one of {', '.join(spec.classes)}")


def parse_numeric(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def load_row(table: Table, index: int, cfg: Config) -> RowResult:
    """Decodes one CSV row into arrays keyed by input/output name, or lists its problems."""
    row, result = table.rows[index], RowResult()

    def problem(column: str, text: str) -> None:
        result.problems.append(f"{table.where(index, column)}: {text}")

    image_size = None
    for spec in cfg.inputs.values():
        path = _cell_path(row, spec.column, cfg.data, problem)
        if path is None:
            continue
        try:
            result.arrays[spec.name], image_size = load_input(path, spec)
        except ValueError as err:
            problem(spec.column, f"{path} {err}")
    label_maps: dict[str, np.ndarray | None] = {}
    for spec in cfg.outputs.values():
        value = row[spec.column]
        if spec.type == "segmentation":
            if spec.column not in label_maps:
                label_maps[spec.column] = _label_map(row, spec.column, cfg.data, image_size, problem)
            labels = label_maps[spec.column]
            if labels is not None:
                result.arrays[spec.name] = split_mask(labels, spec)
                if not np.isin(spec.labels, labels).any():
                    result.missing_labels.append(spec.name)
            continue
        if not value:
            problem(spec.column, f"empty cell; expected a value for outputs.{spec.name}")
            continue
        try:
            if spec.type == "category":
                result.arrays[spec.name] = np.int64(parse_category(value, spec))
            else:
                result.arrays[spec.name] = np.float32(parse_numeric(value))
        except ValueError as err:
            problem(spec.column, str(err))
    return result


def _cell_path(row, column, data: DataConfig, problem) -> Path | None:
    if not row[column]:
        problem(column, "empty cell; expected a file path")
        return None
    path = data.resolve(row[column])
    if not path.is_file():
        problem(column, f"file not found: {path}")
        return None
    return path


def _label_map(row, column, data, image_size, problem) -> np.ndarray | None:
    path = _cell_path(row, column, data, problem)
    if path is None:
        return None
    try:
        labels = load_label_map(path)
    except ValueError as err:
        problem(column, f"{path} {err}")
        return None
    if image_size is not None and labels.shape != tuple(image_size):
        problem(
            column,
            f"{path} is {labels.shape[0]}x{labels.shape[1]} but its image is "
            f"{image_size[0]}x{image_size[1]}; a label map must match its image's size",
        )
        return None
    return labels


TRAINING_ONLY = {"loss", "weight", "label_smoothing", "class_weights"}  # output fields no array depends on


def definitions(cfg: Config) -> str:
    """Everything besides a row's own files and cells that decides its arrays: the input and
    output specs (less the training-only fields), this module's code and the decoders' versions."""
    inputs = [dataclasses.asdict(s) for s in cfg.inputs.values()]
    outputs = [{k: v for k, v in dataclasses.asdict(s).items() if k not in TRAINING_ONLY} for s in cfg.outputs.values()]
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    return json.dumps([inputs, outputs, code, np.__version__, skimage.__version__], default=str)


def row_key(table: Table, index: int, cfg: Config, defs: str) -> str | None:
    """32 hex digits naming what load_row makes of this row: a hash of `defs`, the bytes of the
    files it names and its category/numeric cells. None when a file is missing or unreadable
    (load_row then says why)."""
    row = table.rows[index]
    files = [s.column for s in cfg.inputs.values()] + [
        s.column for s in cfg.outputs.values() if s.type == "segmentation"
    ]
    cells = [s.column for s in cfg.outputs.values() if s.type != "segmentation"]
    digest = hashlib.sha256(defs.encode())
    for column in dict.fromkeys(files):
        if not row[column]:
            return None
        try:
            with open(cfg.data.resolve(row[column]), "rb") as f:
                content = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            return None
        digest.update(f"\nfile {column!r} {content}".encode())
    for column in dict.fromkeys(cells):
        digest.update(f"\ncell {column!r} {row[column]!r}".encode())
    return digest.hexdigest()[:32]

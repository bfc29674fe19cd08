"""The CSV as a table of text cells, its columns checked against params (each row's split: splits.py).

Row numbers are those a spreadsheet shows: the header is row 1, the first data row is row 2.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from cnn_factory.config import Config
from cnn_factory.errors import UserError, listing
from cnn_factory.outputs.base import csv_columns

SEPARATORS = {",": "commas", ";": "semicolons", "\t": "tabs"}
DECIMAL_COMMA = re.compile(r"^([+-]?\d*),(\d+(?:[eE][+-]?\d+)?)$")  # 3,5 or -0,25 or 1,5E-3: one number


@dataclass
class Table:
    """The CSV as text cells; `numbers[i]` is the file row of `rows[i]` (the header is row 1)."""

    path: str
    header: list[str]
    rows: list[dict[str, str]]
    numbers: list[int]

    def where(self, index: int, column: str) -> str:
        return f"{self.path}: row {self.numbers[index]}, column '{column}'"


def read_table(path: str) -> Table:
    """Reads the CSV (BOM, Windows line endings and quoted cells are fine). Its separator is a
    comma, or the semicolon or tab of a header without commas: spreadsheets where the comma is the
    decimal mark save CSV with semicolons, and there a number's decimal comma reads as a point."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: CSV not found; check data.csv in params.yaml") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); save the CSV as UTF-8") from None
    first = text.split("\n", 1)[0]
    delimiter = next((d for d in SEPARATORS if d in first), ",")
    # newline="": csv handles \n, \r\n and \r itself
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as err:
        raise UserError(f"{path}: row {reader.line_num}: not valid CSV ({err}); check the quotes on that row") from None
    if not lines:
        raise UserError(f"{path}: the CSV is empty; expected a header row naming the columns, then one row per image")
    header = [cell.strip() for cell in lines[0][1]]
    for i, name in enumerate(header):
        if not name:
            raise UserError(f"{path}: row 1, column {i + 1}: empty column name; every column needs a header")
        if name in header[:i]:
            raise UserError(f"{path}: row 1: column name '{name}' appears twice; column names must be unique")
    rows = []
    for number, cells in lines[1:]:
        if len(cells) != len(header):
            raise UserError(
                f"{path}: row {number}: {len(cells)} cells but the header has {len(header)}; "
                f"quote cells that contain {SEPARATORS[delimiter]}"
            )
        cells = [cell.strip() for cell in cells]
        if delimiter == ";":
            cells = [DECIMAL_COMMA.sub(r"\1.\2", cell) for cell in cells]
        rows.append(dict(zip(header, cells)))
    if not rows:
        raise UserError(f"{path}: the CSV has a header but no data rows")
    return Table(path=path, header=header, rows=rows, numbers=[number for number, _ in lines[1:]])


def check_columns(table: Table, cfg: Config) -> None:
    """Every column named in params must be in the CSV header."""
    needed = [(f"inputs.{s.name}", s.column) for s in cfg.inputs.values()]
    needed += [(f"outputs.{s.name}", c) for s in cfg.outputs.values() for c in csv_columns(s)]
    split = cfg.data.split
    needed += [(f"data.split.{k}", getattr(split, k)) for k in ("column", "group", "stratify") if getattr(split, k)]
    problems = [
        f"{table.path}: row 1: no column '{column}' (needed by {key}); columns are: {', '.join(table.header)}"
        for key, column in needed
        if column not in table.header
    ]
    if problems:
        if not any(spec.column in table.header for spec in cfg.inputs.values()):
            problems.append(f"{table.path}: row 1 must be the header naming the columns")
        raise UserError("\n".join(problems))


def check_root(table: Table, cfg: Config) -> None:
    """A CSV outside data.root whose relative paths exist next to it: data.root was not set for it.

    Left unchecked, its paths would resolve under data.root (by default the example's folder),
    against other files that may have the same names."""
    data = cfg.data
    if data.root is None:
        return
    here, root = Path(data.csv).parent.resolve(), Path(data.root).resolve()
    if here == root or root in here.parents:
        return
    column = cfg.first_input.column
    for i, row in enumerate(table.rows[:20]):
        value = row.get(column, "")
        if value and not Path(value).is_absolute() and (Path(data.csv).parent / value).is_file():
            raise UserError(
                f"{table.where(i, column)}: {value} is relative and resolves against data.root = {data.root}, "
                f"but the CSV is in {Path(data.csv).parent} where that file exists; set data.root to "
                f"{Path(data.csv).parent} (or null, to resolve paths against the CSV's folder)"
            )


def repeated_rows(table: Table, cfg: Config, splits: list[str]) -> str | None:
    """A warning naming the rows whose input files (paths resolved, links followed) repeat an
    earlier row's, or None. A repeat in another split than the row it repeats is pointed out: an
    image in both the training and the test split inflates the test figures."""
    columns = [spec.column for spec in cfg.inputs.values()]
    first: dict[tuple[Path, ...], int] = {}
    repeats: list[tuple[int, int]] = []  # (row index, index of the row it repeats)
    for i, row in enumerate(table.rows):
        if all(row[c] for c in columns):  # an empty cell is a problem of its own
            original = first.setdefault(tuple(cfg.data.resolve(row[c]).resolve() for c in columns), i)
            if original != i:
                repeats.append((i, original))
    if not repeats:
        return None

    def pair(i: int, j: int) -> str:
        if splits[i] == splits[j]:
            return f"row {table.numbers[i]} repeats row {table.numbers[j]}"
        return f"row {table.numbers[i]} ({splits[i]}) repeats row {table.numbers[j]} ({splits[j]})"

    listed = listing((pair(i, j) for i, j in repeats), 10, ", ... ({} more)")
    text = f"{table.path}: {len(repeats)} row(s) repeat an earlier row's input files: {listed}"
    crossed = sum(splits[i] != splits[j] for i, j in repeats)
    if crossed:
        text += (
            f"; {crossed} of them in a different split from the row it repeats: an image in the training "
            "split and in val or test inflates their figures (the model is scored on what it trained on)"
        )
    return text + "; remove the repeated rows"


def lossy_label_maps(table: Table, cfg: Config) -> list[str]:
    """A warning per label-map column naming JPEG files (by name): their compression blurs label
    values along every edge, so their pixels are snapped (data/label_maps.py)."""
    warnings = []
    for column in dict.fromkeys(o.column for o in cfg.outputs.spatial.values()):
        rows = [i for i, row in enumerate(table.rows) if row[column].lower().endswith((".jpg", ".jpeg"))]
        if rows:
            first = f"{table.where(rows[0], column)}: {table.rows[rows[0]][column]}"
            files = f"{first} and {len(rows) - 1} more label maps in the column are" if len(rows) > 1 else f"{first} is"
            warnings.append(
                f"{files} JPEG, whose compression blurs values along edges: each pixel is read as the nearest of "
                f"{', '.join(map(str, cfg.outputs.label_values(column)))}; PNG keeps label maps exact"
            )
    return warnings

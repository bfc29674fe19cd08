"""The fingerprint `cnn-factory plan` proposes from, images and volumes alike: each file's grid
(shape and spacing; an image's spacing is 1 a pixel), the first input's intensities, per mask
output its foreground share and objects, per image-level output its column. Files are read
through data/grids.py, which knows how images and volumes are read; nothing here asks which.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnn_factory.config import Config
from cnn_factory.data.grids import Grid, Scan, file_reader
from cnn_factory.data.resample import resampled_shape, target_spacing
from cnn_factory.data.table import Table, read_table
from cnn_factory.errors import UserError
from cnn_factory.outputs.decoding import foreground
from cnn_factory.volumes import NIFTI, volume_grid

GRID_ROWS = 10  # NIfTI headers read: up to this many times --sample rows
MAX_VOXELS = 2**21  # a file's intensity percentiles are taken from at most about this many of its values


@dataclass(frozen=True, kw_only=True)
class Grids:
    """The files' grids and the spacing they are resampled to."""

    shapes: np.ndarray  # (n, axes): (H, W) pixels or (D, H, W) voxels of the files whose grids were read
    spacings: np.ndarray  # (n, axes) their spacing: mm per voxel, 1 a pixel
    auto: tuple[float, ...]  # what `spacing: auto` resolves to on these files
    given: tuple[float, ...] | None = None  # the params' `spacing`; None: auto

    @classmethod
    def of(cls, shapes: Sequence, spacings: Sequence, given: tuple[float, ...] | None = None) -> Grids:
        grid, mm = np.asarray(shapes, np.int64), np.asarray(spacings, float)
        return cls(shapes=grid, spacings=mm, auto=target_spacing(spacings, shapes), given=given)

    @property
    def axes(self) -> int:
        return int(self.shapes.shape[1])

    @property
    def target(self) -> tuple[float, ...]:
        """The spacing files are resampled to: the params' or auto's."""
        return self.given or self.auto

    @property
    def at_target(self) -> np.ndarray:
        """(n, axes) the files' shapes at the target spacing."""
        return np.array([resampled_shape(n, s, self.target) for n, s in zip(self.shapes, self.spacings)])

    @property
    def median(self) -> np.ndarray:
        return np.median(self.at_target, 0)

    @property
    def anisotropy(self) -> float:
        return max(self.target) / min(self.target)


@dataclass(frozen=True, kw_only=True)
class Masks:
    foreground: dict[str, float]  # per mask output: mean share of pixels or voxels
    objects: dict[str, float]  # per mask output: median object diameter in px or mm (0: none found)
    # per label-map column: its values other than 0 that no output names (label, labels, ignore) -> share of pixels
    unnamed: dict[str, dict[int, float]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Columns:
    values: dict[str, np.ndarray] = field(default_factory=dict)  # per image-level output: every valid row's value
    owners: dict[str, int] = field(default_factory=dict)  # columns naming whose image a row is: distinct values


@dataclass(frozen=True, kw_only=True)
class Fingerprint:
    rows: int
    read: int  # files whose pixels or voxels were read
    channels: int
    grids: Grids
    intensity: tuple[float, float, float]  # median over the read files of their 0.5th, 50th and 99.5th percentile
    masks: Masks
    columns: Columns = field(default_factory=Columns)


def fingerprint(cfg: Config, sample: int = 50, table: Table | None = None) -> Fingerprint:
    """Reads up to `sample` rows spread over the CSV (and every row's cells for the columns);
    `table`: the CSV already read."""
    table = read_table(cfg.data.csv) if table is None else table
    picks = spread(len(table.rows), sample)
    spec = cfg.first_input
    stated = spec.spacing if isinstance(spec.spacing, tuple) else None  # an uncalibrated TIFF stack's, as prepare
    grid = file_reader(spec, stated)
    shapes, spacings, levels = [], [], []
    share: dict[str, list[float]] = {n: [] for n, o in cfg.outputs.items() if o.spatial}
    diameters: dict[str, list[float]] = {n: [] for n in share}
    counts: dict[str, Counter] = {}  # per label-map column: pixels per value
    for i in np.union1d(picks, spread(len(table.rows), GRID_ROWS * sample)):
        cell, where = table.rows[i][spec.column], table.where(i, spec.column)
        if i in picks:
            with readable():
                scan = grid.read(row_file(cfg, table, i, spec.column), spec, where)
            shape, spacing = scan.shape, scan.spacing
            levels.append(np.percentile(scan.array.ravel()[:: max(1, scan.array.size // MAX_VOXELS)], (0.5, 50, 99.5)))
            found, maps = masks(cfg, table, i, scan, grid)
            for name, mask in found.items():
                share[name].append(float(mask.mean()))
                diameters[name] += object_diameters(mask, spacing)
            for column, values in maps.items():
                seen, pixels = np.unique(values, return_counts=True)
                counts.setdefault(column, Counter()).update(dict(zip(seen.tolist(), pixels.tolist())))
        elif cell.lower().endswith(NIFTI):
            shape, spacing = volume_grid(cfg.data.resolve(cell), where)  # the header alone
        else:
            continue
        shapes.append(shape)
        spacings.append(spacing)
    low, middle, high = np.median(levels, 0)
    return Fingerprint(
        rows=len(table.rows),
        read=len(picks),
        channels=sum(s.channels for s in cfg.inputs.values()),
        grids=Grids.of(shapes, spacings, stated),
        intensity=(float(low), float(middle), float(high)),
        masks=Masks(
            foreground={n: float(np.mean(v)) for n, v in share.items()},
            objects={n: float(np.median(v)) if v else 0.0 for n, v in diameters.items()},
            unnamed=unnamed_values(cfg, counts),
        ),
        columns=Columns(values=column_values(cfg, table), owners=owners(cfg, table)),
    )


# words of a column's name that say whose image a row is (a patient ID, a subject, a slide)
OWNER_WORDS = frozenset(
    {"patient", "subject", "case", "participant", "individual", "donor", "animal", "mouse", "specimen", "slide", "id"}
)


def owners(cfg: Config, table: Table) -> dict[str, int]:
    """Columns that the pipeline does not read, whose name says whose image a row is (a word of
    OWNER_WORDS: `patient_id`, `SubjectID`, `case`) and whose values repeat: {column: distinct values}."""
    read = {s.column for s in cfg.inputs.values()} | {getattr(o, "column", n) for n, o in cfg.outputs.items()}
    found = {}
    for column in (c for c in table.header if c not in read):
        words = {w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", column)}
        distinct = len({row[column] for row in table.rows})
        if words & OWNER_WORDS and 1 < distinct < len(table.rows):
            found[column] = distinct
    return found


def masks(
    cfg: Config, table: Table, index: int, scan: Scan, grid: Grid
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A row's mask per mask output at the shape of its `scan` (image) (a class mask: any class), and
    its label map's values per column; each label file read once per column (and colours or values)."""
    found, read, maps = {}, {}, {}
    for name, output in cfg.outputs.spatial.items():
        path, where = row_file(cfg, table, index, output.column), table.where(index, output.column)
        key = (output.column, output.colour_table is not None)
        with readable():
            if key not in read:
                read[key] = grid.read_labels(path, where, colours=key[1], on=scan)
            values = grid.label_values(read[key], output, path, where, cfg.outputs.label_values(output.column))
            found[name], maps[output.column] = foreground(output.mask(values, scan.shape)), values
    return found, maps


def unnamed_values(cfg: Config, counts: Mapping[str, Counter]) -> dict[str, dict[int, float]]:
    """Per label-map column, the share of pixels of each value other than 0 that no output reading
    it names: pixels counted as background, silently (Pascal VOC's 255 borders, a class left out)."""
    unnamed = {}
    for column, count in counts.items():
        named, total = set(cfg.outputs.label_values(column)), max(sum(count.values()), 1)
        if left := {v: n / total for v, n in sorted(count.items()) if v not in named}:
            unnamed[column] = left
    return unnamed


def object_diameters(mask: np.ndarray, spacing: Sequence[float]) -> list[float]:
    """Each connected object's diameter as a disc or sphere of its area or volume, in the spacing's
    unit (objects touch along edges and corners too, as skimage's default)."""
    from scipy.ndimage import label

    n = mask.ndim
    components, _ = label(mask, np.ones((3,) * n))
    sizes = np.bincount(components.ravel())[1:] * float(np.prod(spacing))
    return list(2 * (sizes * math.gamma(n / 2 + 1) / math.pi ** (n / 2)) ** (1 / n))


def spread(rows: int, sample: int) -> np.ndarray:
    """Indices of up to `sample` rows spread evenly over `rows`, first and last included."""
    if rows == 0:
        raise UserError("plan: the CSV has no rows")
    return np.unique(np.linspace(0, rows - 1, min(sample, rows)).round().astype(int))


def row_file(cfg: Config, table: Table, index: int, column: str) -> Path:
    """The file a row's cell names; a UserError for an empty cell."""
    value = table.rows[index][column]
    if not value:
        raise UserError(f"{table.where(index, column)}: empty cell; expected a file path")
    return cfg.data.resolve(value)


@contextmanager
def readable() -> Iterator[None]:
    """A file that cannot be read: the reader's message on one line, with where to see every row's problems."""
    try:
        yield
    except UserError as err:
        said = " ".join(str(err).split())  # some decoders' reasons run over several lines
        raise UserError(f"{said}; `cnn-factory validate` lists every row's problems") from None


def column_values(cfg: Config, table: Table) -> dict[str, np.ndarray]:
    """Per image-level output, its decoded cells (those that do not decode are validate's to
    report); no entry for an output read from label maps or a column without a valid cell."""
    found = {}
    for name, output in cfg.outputs.items():
        decoded = []
        for row in [] if output.reads_label_map else table.rows:
            with suppress(ValueError):
                decoded.append(output.decode_row(row, None))
        if decoded:
            found[name] = np.stack(decoded)
    return found

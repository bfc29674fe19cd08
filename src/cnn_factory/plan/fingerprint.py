"""The fingerprint `cnn-factory plan` proposes from, images and volumes alike; and `Dims`, all that
a plan does differently for images (two spatial axes) and volumes (three): the one place that asks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnn_factory.config import Config
from cnn_factory.data.grids import read_input
from cnn_factory.data.label_maps import load_labels
from cnn_factory.data.resample import resampled_shape, target_spacing
from cnn_factory.data.table import Table, read_table
from cnn_factory.errors import UserError
from cnn_factory.volumes import NIFTI, read_label_volume, read_volume, volume_grid

GRID_ROWS = 10  # NIfTI headers read: up to this many times --sample rows
MAX_VOXELS = 2**21  # a file's intensity percentiles are taken from at most about this many of its values


@dataclass(frozen=True)
class Dims:
    item: str  # what a row's input is called
    cell: str  # its pixels or voxels
    unit: str  # of sizes: mm for volumes; images are planned in pixels (a spacing of 1 a pixel)
    spacing: bool  # files carry a spacing and are resampled to a target (nnU-Net's rule); else the mode is chosen
    deepest: int  # `model.depth`: pool while the deepest map's in-plane side stays at least this
    min_depth: int
    nearest: bool  # sides round to the nearest multiple of 2**depth (the whole median scan, little padding), else down
    data_share: float | None  # nnU-Net: a batch covers at most this share of the data set's voxels
    stem: bool  # `model.stem` strided on a CPU budget: a 3-D step 2-3x cheaper (benchmarks/volumes.py)
    encoders: bool  # timm's pretrained encoders are 2-D


IMAGES = Dims(item="image", cell="pixel", unit="px", spacing=False, deepest=6, min_depth=2, nearest=False,
              data_share=None, stem=False, encoders=True)  # fmt: skip
VOLUMES = Dims(item="scan", cell="voxel", unit="mm", spacing=True, deepest=4, min_depth=1, nearest=True,
               data_share=0.05, stem=True, encoders=False)  # fmt: skip


@dataclass
class Fingerprint:
    rows: int
    shapes: np.ndarray  # (n, axes): (H, W) pixels or (D, H, W) voxels of the files whose grids were read
    spacings: np.ndarray  # (n, axes) their spacing: mm per voxel, 1 a pixel
    auto: tuple[float, ...]  # what `spacing: auto` resolves to on these files
    given: tuple[float, ...] | None  # the params' `spacing`; None: auto
    read: int  # files whose pixels or voxels were read
    channels: int
    intensity: tuple[float, float, float]  # median over the read files of their 0.5th, 50th and 99.5th percentile
    foreground: dict[str, float]  # per mask output: mean share of pixels or voxels
    objects: dict[str, float]  # per mask output: median object diameter in px or mm (0: none found)
    classes: dict[str, dict[str, int]] = field(default_factory=dict)  # per category output: rows per class
    values: dict[str, np.ndarray] = field(default_factory=dict)  # per image-level output: every valid row's value

    @property
    def dims(self) -> Dims:
        return VOLUMES if self.shapes.shape[1] == 3 else IMAGES

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


def fingerprint(cfg: Config, sample: int = 50) -> Fingerprint:
    """Reads up to `sample` rows spread over the CSV (and every row's cells for the columns)."""
    table = read_table(cfg.data.csv)
    picks = spread(len(table.rows), sample)
    spec = cfg.first_input
    stated = spec.spacing if isinstance(spec.spacing, tuple) else None  # an uncalibrated TIFF stack's, as prepare
    shapes, spacings, levels = [], [], []
    share: dict[str, list[float]] = {n: [] for n, o in cfg.outputs.items() if o.spatial}
    diameters: dict[str, list[float]] = {n: [] for n in share}
    for i in np.union1d(picks, spread(len(table.rows), GRID_ROWS * sample)):
        cell, where = table.rows[i][spec.column], table.where(i, spec.column)
        if i in picks:
            image, spacing = read_image(cfg, row_file(cfg, table, i, spec.column), where, stated)
            shape = image.shape[1:]
            levels.append(np.percentile(image.ravel()[:: max(1, image.size // MAX_VOXELS)], (0.5, 50, 99.5)))
            for name, mask in masks(cfg, table, i, shape, stated).items():
                share[name].append(float(mask.mean()))
                diameters[name] += object_diameters(mask, spacing)
        elif cell.lower().endswith(NIFTI):
            shape, spacing = volume_grid(cfg.data.resolve(cell), where)  # the header alone
        else:
            continue
        shapes.append(shape)
        spacings.append(spacing)
    low, middle, high = np.median(levels, 0)
    classes = {
        n: {c: sum(row[o.column] == c for row in table.rows) for c in getattr(o, "class_names", ())}
        for n, o in cfg.outputs.items()
        if hasattr(o, "class_names")
    }
    return Fingerprint(
        rows=len(table.rows),
        shapes=np.asarray(shapes, np.int64),
        spacings=np.asarray(spacings, float),
        auto=target_spacing(spacings, shapes),
        given=stated,
        read=len(picks),
        channels=sum(s.channels for s in cfg.inputs.values()),
        intensity=(float(low), float(middle), float(high)),
        foreground={n: float(np.mean(v)) for n, v in share.items()},
        objects={n: float(np.median(v)) if v else 0.0 for n, v in diameters.items()},
        classes=classes,
        values=column_values(cfg, table),
    )


def read_image(
    cfg: Config, path: Path, where: str, stated: tuple[float, float, float] | None
) -> tuple[np.ndarray, tuple]:
    """A row's first input: (C, *spatial) values in the file's units (an image's: 0..255) and its
    spacing (an image's: 1 a pixel)."""
    if cfg.volumes:
        scan = read_volume(path, where, cfg.first_input.channels, stated)
        return scan.array, scan.spacing
    with readable(where, path):
        image = read_input(path, cfg.first_input)
    return image, (1.0,) * (image.ndim - 1)


def masks(
    cfg: Config, table: Table, index: int, shape: tuple[int, ...], stated: tuple[float, float, float] | None
) -> dict[str, np.ndarray]:
    """A row's mask per mask output at the input's `shape` (a class mask: any class), each label
    file read once per column (and colour table)."""
    found, read = {}, {}
    for name, output in cfg.outputs.spatial.items():
        key = (output.column, json.dumps(output.colour_table, sort_keys=True))
        if key not in read:
            path, where = row_file(cfg, table, index, output.column), table.where(index, output.column)
            if cfg.volumes:
                read[key] = read_label_volume(path, where, stated).array
            else:
                with readable(where, path):
                    read[key] = load_labels(path, output)
        found[name] = output.mask(read[key], shape) > 0
    return found


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
def readable(where: str, path: Path) -> Iterator[None]:
    """An image reader's ValueError (the file cannot be read) as a one-line UserError naming the row and column."""
    try:
        yield
    except ValueError as err:
        said = " ".join(str(err).split())  # some decoders' reasons run over several lines
        raise UserError(f"{where}: {path} {said}; `cnn-factory validate` lists every row's problems") from None


def column_values(cfg: Config, table: Table) -> dict[str, np.ndarray]:
    """Per image-level output, its decoded cells (those that do not decode are validate's to
    report); no entry for an output read from label maps or a column without a valid cell."""
    found = {}
    for name, output in cfg.outputs.items():
        decoded = []
        for row in [] if output.reads_label_map else table.rows:
            try:
                decoded.append(output.decode_row(row, None))
            except ValueError:
                continue
        if decoded:
            found[name] = np.stack(decoded)
    return found

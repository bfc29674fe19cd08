"""`cnn-factory plan` for volumes (an input `size` of [depth, height, width]), as nnU-Net's
experiment planner plans its 3-D full-resolution network.

The fingerprint: each scan's shape and spacing from its header (`volume_grid`: the sampled rows'
and, NIfTI headers being cheap, those of up to GRID_ROWS times --sample rows spread over the CSV),
the target spacing (`inputs.*.spacing`, or what `auto` resolves to by data/resample.py's rule),
the scans' shapes at it and its anisotropy (largest over smallest axis); from the sampled scans'
voxels their intensity percentiles and, per mask output, its foreground share and objects
(connected components in 3-D, each one's equivalent sphere diameter in mm, and in voxels at the
target spacing); per image-level output its column, as for images. A TIFF stack without
calibration is read at the params' stated `spacing`, as prepare reads it.

The proposals: `spacing` (auto, and what it resolves to and why, or the params' own); the patch
`size`, from a voxel budget: the median shape at the target spacing, its axis longest in mm cut
by a step of 2**depth until the activations of two patches fit the memory budget (a coarse axis,
long in mm for few voxels, gives up voxels first), each side the nearest multiple of 2**depth; `model.depth`,
pooling until the deepest map is 4-8 voxels along the in-plane axes (those other than the coarsest)
and no further than the shortest side has voxels; `model.filters` as for images; the batch that
fits the budget, at least 2, and, as nnU-Net, covering no more than 5% of the data set's voxels;
`train.foreground` and the validation's cost as for images; `model.stem` strided on a budget
that is not a GPU's (the first level at half the resolution: a 3-D step 2-3x cheaper on a CPU,
measured by benchmarks/volumes.py), so that one of those halvings is the stem's and `model.depth`
counts the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cnn_factory.config import Config
from cnn_factory.data.resample import ANISOTROPY, resampled_shape, target_spacing
from cnn_factory.data.table import read_table
from cnn_factory.model import stem_strides
from cnn_factory.plan import BYTES_PER_FEATURE, budget_of, column_values, row_file, spread, table_lines, validation_rows
from cnn_factory.volumes import NIFTI, read_label_volume, read_volume, volume_grid

GRID_ROWS = 10  # headers read: up to this many times --sample rows
MAX_VOXELS = 2**21  # a scan's intensity percentiles are taken from at most about this many of its voxels
MIN_SIDE = 8  # a patch side is not cut below this many voxels
MAX_DEPTH = 5
GPU_BUDGET = 12 * 2**30  # a budget above this is a GPU's: 32 filters and a full-resolution stem
DATA_SHARE = 0.05  # nnU-Net: a batch covers at most 5% of the data set's voxels
AXES = ("depth", "height", "width")


@dataclass
class VolumeFingerprint:
    rows: int
    shapes: np.ndarray  # (n, 3) voxels (D, H, W) of the scans whose headers were read
    spacings: np.ndarray  # (n, 3) their mm per axis
    auto: tuple[float, ...]  # what `spacing: auto` resolves to on these scans
    given: tuple[float, ...] | None  # the params' `spacing`; None: auto
    read: int  # scans whose voxels were read
    channels: int
    intensity: tuple[float, float, float]  # median over the read scans of their 0.5th, 50th and 99.5th percentile
    foreground: dict[str, float]  # per mask output: mean share of voxels
    objects: dict[str, float]  # per mask output: median object diameter in mm (0: none found)
    values: dict[str, np.ndarray] = field(default_factory=dict)  # per image-level output: every valid row's value

    @property
    def target(self) -> tuple[float, ...]:
        """The spacing scans are resampled to: the params' or auto's."""
        return self.given or self.auto

    @property
    def at_target(self) -> np.ndarray:
        """(n, 3) the scans' shapes at the target spacing."""
        return np.array([resampled_shape(n, s, self.target) for n, s in zip(self.shapes, self.spacings)])

    @property
    def median(self) -> np.ndarray:
        return np.median(self.at_target, 0)

    @property
    def anisotropy(self) -> float:
        return max(self.target) / min(self.target)


def volume_fingerprint(cfg: Config, sample: int = 50) -> VolumeFingerprint:
    """Reads the headers of up to GRID_ROWS x `sample` rows and the voxels of up to `sample` rows."""
    from scipy.ndimage import label

    table = read_table(cfg.data.csv)
    picks = spread(len(table.rows), sample)
    spec = cfg.first_input
    stated = spec.spacing if isinstance(spec.spacing, tuple) else None  # an uncalibrated TIFF stack's, as prepare
    shapes, spacings = [], []
    for i in np.union1d(picks, spread(len(table.rows), GRID_ROWS * sample)):
        path, where = row_file(cfg, table, i, spec.column), table.where(i, spec.column)
        if path.name.lower().endswith(NIFTI):
            shape, spacing = volume_grid(path, where)  # the header alone
        elif i in picks:  # a TIFF stack's grid means reading it
            scan = read_volume(path, where, default_spacing=stated)
            shape, spacing = scan.shape, scan.spacing
        else:
            continue
        shapes.append(shape)
        spacings.append(spacing)
    levels = []
    share: dict[str, list[float]] = {n: [] for n, o in cfg.outputs.items() if o.spatial}
    diameters: dict[str, list[float]] = {n: [] for n in share}
    for i in picks:
        scan = read_volume(row_file(cfg, table, i, spec.column), table.where(i, spec.column), spec.channels, stated)
        levels.append(np.percentile(scan.array.ravel()[:: max(1, scan.array.size // MAX_VOXELS)], (0.5, 50, 99.5)))
        labels = {}
        for name in share:
            output = cfg.outputs[name]
            if output.column not in labels:
                path = row_file(cfg, table, i, output.column)
                labels[output.column] = read_label_volume(path, table.where(i, output.column), stated)
            volume = labels[output.column]
            mask = output.mask(volume.array, volume.shape) > 0  # a class mask: any class
            share[name].append(float(mask.mean()))
            components, _ = label(mask, np.ones((3, 3, 3)))  # 26-connected, as skimage's default in 3-D
            sizes = np.bincount(components.ravel())[1:]  # voxels per object
            diameters[name] += list(np.cbrt(6 * sizes * np.prod(volume.spacing) / np.pi))  # a sphere's, mm
    auto = target_spacing(spacings, shapes)
    low, middle, high = np.median(levels, 0)
    values = {n: column_values(o, [row[o.column] for row in table.rows]) for n, o in cfg.outputs.items()}
    return VolumeFingerprint(
        rows=len(table.rows),
        shapes=np.asarray(shapes, np.int64),
        spacings=np.asarray(spacings, float),
        auto=auto,
        given=stated,
        read=len(picks),
        channels=sum(s.channels for s in cfg.inputs.values()),
        intensity=(float(low), float(middle), float(high)),
        foreground={n: float(np.mean(v)) for n, v in share.items()},
        objects={n: float(np.median(v)) if v else 0.0 for n, v in diameters.items()},
        values={n: v for n, v in values.items() if v is not None},
    )


def mm(values: Sequence[float] | np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def voxels(shape: Sequence[float] | np.ndarray) -> str:
    return "x".join(f"{round(n)}" for n in shape)


def volume_depth(patch: Sequence[int] | np.ndarray, target: Sequence[float]) -> int:
    """Poolings until the deepest map is 4-8 voxels along the in-plane axes (all but the coarsest),
    and no more than leave a voxel along the shortest side."""
    coarse = int(np.argmax(target))
    plane = min(n for a, n in enumerate(patch) if a != coarse)
    depth = math.floor(math.log2(max(plane / 4, 1)))
    return max(1, min(depth, MAX_DEPTH, math.floor(math.log2(max(min(patch), 1)))))


def activations(sides: Sequence[float], depth: int, filters: int, heads: int, channels: int) -> float:
    """Bytes of activations kept for backward per patch, as plan.py counts them for images."""
    per_level = [filters * 2**k * float(np.prod(sides)) / 8**k for k in range(depth + 1)]
    return BYTES_PER_FEATURE * sum(per_level) * heads * (channels / 3 + 1)


def volume_patch(
    median: np.ndarray, target: Sequence[float], budget: float, filters: int, heads: int, channels: int
) -> tuple[list[int], int, float, list[int]]:
    """nnU-Net's patch: from the median shape, the axis longest in mm (then in voxels) cut by 2**depth
    until two patches fit `budget`. (sides, depth, bytes per patch, the axes cut, one entry a cut)."""
    patch = np.maximum(np.round(median), 1).astype(int)
    cut: list[int] = []
    while True:
        depth = volume_depth(patch, target)
        step = 2**depth
        patch = np.maximum(np.round(patch / step), 1).astype(int) * step  # the nearest multiple: little padding
        per_patch = activations(patch, depth, filters, heads, channels)
        longer = [a for a in range(3) if patch[a] > MIN_SIDE]
        if 2 * per_patch <= budget or not longer:
            return [int(n) for n in patch], depth, per_patch, cut
        axis = max(longer, key=lambda a: (patch[a] * target[a], patch[a]))
        patch[axis] = max(MIN_SIDE, patch[axis] - step)
        cut.append(axis)


def spacing_row(fp: VolumeFingerprint) -> tuple:
    n = len(fp.spacings)
    if fp.given:
        return ("inputs.*.spacing", list(fp.given), f"as params; auto would resolve to {mm(fp.auto)} mm here")
    median = np.median(fp.spacings, 0)
    why = f"resolves to {mm(fp.auto)} mm here: the median spacing per axis of {n} scans (prepare: the training split's)"
    coarse = int(np.argmax(median))
    others = [a for a in range(3) if a != coarse]
    size = np.median(fp.shapes, 0)
    finest = max(median[others])
    coarser = f"{AXES[coarse]} is coarse ({median[coarse]:.3g} mm, over {ANISOTROPY}x the others' {finest:.3g} mm)"
    if not np.isclose(fp.auto[coarse], median[coarse]):  # nnU-Net's rule for a coarse, short axis
        why += (
            f", but {coarser} and short ({size[coarse]:.0f} voxels, under a third of {min(size[others]):.0f}): "
            "its 10th percentile, as nnU-Net, so that the finer scans keep their slices"
        )
    elif median[coarse] > ANISOTROPY * max(median[others]):
        why += (
            f"; {coarser} but not short ({size[coarse]:.0f} voxels, not under a third of {min(size[others]):.0f}), "
            "so nnU-Net's 10th-percentile rule does not apply"
        )
    return ("inputs.*.spacing", "auto", why)


def propose_volumes(
    fp: VolumeFingerprint,
    budget: float,
    outputs: Mapping[str, object],
    filters: int | None = None,
    val_share: float = 0.0,
    epoch_patches: int = 0,
) -> list[tuple]:
    """(params key, value, reason) rows for volumes; val_share and epoch_patches as plan.propose's."""
    rows = [spacing_row(fp)]
    filters = filters or (32 if budget > GPU_BUDGET else 16)
    heads = 1 + sum(1 for o in outputs.values() if getattr(o, "spatial", False))  # the encoder and a decoder per mask
    median = fp.median
    patch, depth, per_patch, cut = volume_patch(median, fp.target, budget, filters, heads, fp.channels)
    why = f"{mm(np.multiply(patch, fp.target))} mm; the median scan at the target spacing is {voxels(median)}"
    if cut:
        shrunk = ", ".join(f"{AXES[a]} {cut.count(a)}x" for a in sorted(set(cut)))
        why += f", cut where longest in mm ({shrunk}) until 2 patches fit the budget"
    rows.append(("inputs.*.size", patch, why + f"; each side a multiple of 2**{depth}"))
    deepest = [n // 2**depth for n in patch]
    why = f"the deepest map is {voxels(deepest)} voxels (4-8 in plane is the aim"
    why += f"; the {min(patch)}-voxel side allows no more)" if min(deepest) == 1 and depth < MAX_DEPTH else ")"
    gpu = budget > GPU_BUDGET
    if gpu or depth < 2:
        stem, stem_why = "full", "a GPU-sized budget: the first level at full resolution, as nnU-Net's"
        stem_why = stem_why if gpu else f"{depth} halving only: the first level keeps full resolution"
    else:
        strides = stem_strides("strided", 3, list(fp.target))
        kept = [AXES[a] for a in range(3) if strides[a] == 1]
        stem, stem_why = "strided", "no GPU-sized budget: the first level at half resolution (2-3x cheaper a step)"
        stem_why += f"; {', '.join(kept)}, over twice as coarse, keeps its resolution there" if kept else ""
        deepest = [n // (s * 2 ** (depth - 1)) for n, s in zip(patch, strides)]
        why = f"the deepest map is {voxels(deepest)} voxels (4-8 in plane is the aim), after the strided stem"
        depth, per_patch = (
            depth - 1,
            activations([n / s for n, s in zip(patch, strides)], depth - 1, filters, heads, fp.channels),
        )
    rows.append(("model.stem", stem, stem_why))
    rows.append(("model.depth", depth, why))
    rows.append(("model.filters", filters, "32 with a GPU-sized budget, else 16 (doubled per level)"))
    fits = int(np.clip(2 ** math.floor(math.log2(max(budget / per_patch, 1))), 2, 64))
    data = float(np.prod(median)) * fp.rows
    most = max(2, int(DATA_SHARE * data / np.prod(patch)))
    batch = max(2, min(fits, 2 ** math.floor(math.log2(most))))
    why = f"~{per_patch / 2**20:.0f} MiB of activations per patch"
    if 2 * per_patch > budget:
        why += f": over the budget even at {voxels(patch)}; lower model.filters or raise --budget-gb"
    elif batch < fits:
        why += f"; {fits} would fit, but a batch stays under 5% of the data's ~{data / 1e6:.1f} M voxels (nnU-Net)"
    rows.append(("train.batch_size", batch, why))
    rare = [n for n, v in fp.foreground.items() if v < 0.05]
    why = "masks are not rare: patches anywhere"
    if rare:
        covers = ", ".join(f"{n} {fp.foreground[n]:.1%}" for n in rare)
        why = f"foreground covers {covers} of the voxels: a third of each batch centred on it, as nnU-Net"
    rows.append(("train.foreground", 0.33 if rare else 0.0, why))
    if val_share and epoch_patches:
        rows += validation_rows(fp.at_target, patch, round(fp.rows * val_share), epoch_patches, unit="scans")
    return rows


def run_volume_plan(cfg: Config, sample: int, budget_gb: float | None) -> str:
    fp = volume_fingerprint(cfg, sample)
    budget, source = budget_of(budget_gb)
    split = cfg.data.split
    train_rows = round(fp.rows * (1 - split.val - split.test))
    rows = propose_volumes(fp, budget, cfg.outputs, None, split.val, cfg.train.patches_per_epoch or train_rows)
    spec, at = cfg.first_input, fp.at_target
    at_range = f"{voxels(fp.median)} voxels (median; {voxels(at.min(0))} to {voxels(at.max(0))})"
    ranges = " x ".join(f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(fp.spacings.min(0), fp.spacings.max(0)))
    window = f"window {list(spec.window)}" if spec.window else "window null: each scan's own to 0..255"
    lines = [
        f"plan: {cfg.data.csv}: {fp.rows} rows, {len(fp.shapes)} scan headers and {fp.read} scans read; "
        f"budget {budget / 2**30:.1f} GiB ({source})",
        f"  scans: {voxels(fp.shapes.min(0))} to {voxels(fp.shapes.max(0))} voxels, spacing {ranges} mm "
        f"(depth x height x width), {fp.channels} channel(s)",
        f"  target spacing {mm(fp.target)} mm ({'params' if fp.given else 'auto'}), anisotropy "
        f"{fp.anisotropy:.1f}: scans of {at_range}",
        f"  {spec.name}: intensity {fp.intensity[0]:.4g} to {fp.intensity[2]:.4g}, median {fp.intensity[1]:.4g} "
        f"(0.5th-99.5th percentile, median of the scans; {window})",
    ]
    for name, diameter in fp.objects.items():
        across = f"{voxels(diameter / np.asarray(fp.target))} voxels at the target spacing"
        objects = f"objects ~{diameter:.0f} mm across ({across})" if diameter else "no objects in the scans read"
        lines.append(f"  {name}: foreground {fp.foreground[name]:.2%} of voxels, {objects}")
    for name, values in fp.values.items():
        line, warnings = cfg.outputs[name].column_report(values)
        lines.append(f"  {name}: {line}")
        lines += [f"  warning: {name}: {w}" for w in warnings]
    return "\n".join(lines + table_lines(cfg, rows))

"""`cnn-factory plan`: reads the CSV's images (or scans) and proposes the settings that fit them and the machine.

    cnn-factory plan [--params params.yaml] [--budget-gb N] [--sample N]

Like nnU-Net's planner, from a fingerprint of the data set: image sizes, channels and intensity
range; per mask output its foreground share and object sizes (connected components); per
image-level output the spread of its column (class balance, range of a number) and what would make
its head hard to train (a class with very few rows, a constant number). From it: the mode (whole
images resized when they are small, patches at native resolution when they are large or their
objects small), the input/patch size, `model.depth` (down-sampling until the deepest feature map is
about 4-8 pixels), `model.filters` and the batch size that fits a memory budget (the GPU's memory
when there is one, else a share of the RAM). For three-channel images and a small training split it
proposes a pretrained timm encoder, but only when its weights are already on the machine; else it
says where they would help. It prints the table with the reason for each choice
and the `dvc exp run -S ...` line; it writes nothing. The proposals are plain params: read them,
run them, override any of them. Volumes (a [depth, height, width] input size) are planned by
plan_volumes.py, as nnU-Net plans its 3-D networks: spacing, a patch from a voxel budget, depth.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnn_factory.config import Config
from cnn_factory.data.label_maps import load_labels
from cnn_factory.data.rows import read_input
from cnn_factory.data.table import Table, read_table
from cnn_factory.encoder_weights import pretrained_cached
from cnn_factory.errors import UserError
from cnn_factory.outputs import Output

# bytes of activations kept for backward per pixel and filter of a level, measured for this UNet in
# fp32 (conv, norm and ReLU outputs of two convolutions, the pool, the decoder's copies): ~ 4 x 12
BYTES_PER_FEATURE = 48
# below this many rows, three-channel images may gain from an encoder pretrained on natural images
# (ImageNet); from random weights a timm encoder is a bigger network, not a better one (docs/encoders.md)
FEW_ROWS = 2000
ENCODER = "resnet18"  # the smallest of the usual choices, largest stride 32


@dataclass
class Fingerprint:
    rows: int
    sizes: np.ndarray  # (n, 2) of the sampled images
    channels: int
    intensity: tuple[int, int]  # 1st and 99th percentile of the uint8 pixels
    foreground: dict[str, float]  # per mask output: mean share of pixels
    objects: dict[str, float]  # per mask output: median object diameter in pixels (0: none found)
    classes: dict[str, dict[str, int]]  # per category output: rows per class
    values: dict[str, np.ndarray] = field(default_factory=dict)  # per image-level output: every valid row's value


def fingerprint(cfg: Config, sample: int = 50) -> Fingerprint:
    """Reads up to `sample` rows spread over the CSV (every row's cells for the class counts)."""
    from skimage.measure import label, regionprops

    table = read_table(cfg.data.csv)
    picks = spread(len(table.rows), sample)
    spec = cfg.first_input
    sizes, lows, highs = [], [], []
    share: dict[str, list[float]] = {n: [] for n, o in cfg.outputs.items() if o.spatial}
    diameters: dict[str, list[float]] = {n: [] for n in share}
    for i in picks:
        path = row_file(cfg, table, i, spec.column)
        with readable(table, i, spec.column, path):
            image = read_input(path, spec)
        sizes.append(image.shape[-2:])
        lows.append(np.percentile(image, 1))
        highs.append(np.percentile(image, 99))
        for name in share:
            output = cfg.outputs[name]
            path = row_file(cfg, table, i, output.column)
            with readable(table, i, output.column, path):
                mask = output.mask(load_labels(path, output), image.shape[-2:])
            share[name].append(float(np.count_nonzero(mask)) / mask.size)  # a class mask: any class
            diameters[name] += [r.equivalent_diameter_area for r in regionprops(label(mask))]
    classes = {
        n: {c: sum(row[o.column] == c for row in table.rows) for c in getattr(o, "class_names", ())}
        for n, o in cfg.outputs.items()
        if hasattr(o, "class_names")
    }
    values = {n: column_values(o, [row[o.column] for row in table.rows]) for n, o in cfg.outputs.items()}
    return Fingerprint(
        rows=len(table.rows),
        sizes=np.asarray(sizes, np.int64).reshape(-1, 2),
        channels=sum(s.channels for s in cfg.inputs.values()),
        intensity=(int(np.median(lows)), int(np.median(highs))),
        foreground={n: float(np.mean(v)) for n, v in share.items()},
        objects={n: float(np.median(v)) if v else 0.0 for n, v in diameters.items()},
        classes=classes,
        values={n: v for n, v in values.items() if v is not None},
    )


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
def readable(table: Table, index: int, column: str, path: Path) -> Iterator[None]:
    """A ValueError (the file cannot be read) as a one-line UserError naming the row and column."""
    try:
        yield
    except ValueError as err:
        said = " ".join(str(err).split())  # some decoders' reasons run over several lines
        raise UserError(
            f"{table.where(index, column)}: {path} {said}; `cnn-factory validate` lists every row's problems"
        ) from None


def column_values(output: Output, cells: list[str]) -> np.ndarray | None:
    """An image-level output's decoded cells (those that do not decode are validate's to report);
    None for an output read from label maps or a column without a valid cell."""
    if output.reads_label_map:
        return None
    decoded = []
    for cell in cells:
        try:
            decoded.append(output.decode(cell, None))
        except ValueError:
            continue
    return np.stack(decoded) if decoded else None


def memory_budget() -> tuple[float, str]:
    """Bytes training may use for activations, and where that figure comes from."""
    import torch

    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        return 0.6 * total, f"60% of the GPU's {total / 2**30:.0f} GiB"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 8 * 2**30
    budget = min(0.25 * total, 8 * 2**30)
    return budget, f"a quarter of the {total / 2**30:.0f} GiB of RAM, at most 8 GiB (no GPU)"


def _multiple(value: float, of: int) -> int:
    return max(of, int(value // of) * of)


def wants_pretrained(fp: Fingerprint) -> bool:
    """Three-channel images (natural ones, as far as a channel count tells) and a small data set."""
    return fp.channels == 3 and fp.rows < FEW_ROWS


def propose(
    fp: Fingerprint,
    budget: float,
    outputs: Mapping[str, object],
    filters: int | None = None,
    weights: bool = False,
    val_share: float = 0.0,
    epoch_patches: int = 0,
) -> list[tuple]:
    """(params key, value, reason) rows; the first decides the others. `weights`: the pretrained
    weights of ENCODER are on this machine (never assumed). val_share (data.split.val) and
    epoch_patches (train.patches_per_epoch or the training rows) let patch mode cost its validation."""
    median = np.median(fp.sizes, 0)
    small_objects = [n for n, d in fp.objects.items() if 0 < d < max(median) / 32]
    large = max(median) > 256
    rows: list[tuple] = []
    if large or small_objects:
        why = f"median image {int(median[0])}x{int(median[1])}" if large else ""
        if small_objects:
            d = min(fp.objects[n] for n in small_objects)
            why += ("; " if why else "") + f"objects of {d:.0f} px across ({', '.join(small_objects)})"
            why += f": resized to 64 px they would be {d * 64 / max(median):.1f} px"
        rows.append(("inputs.*.mode", "patch", f"{why}; train at native resolution on patches"))
        smallest = max((d for d in fp.objects.values() if d), default=16)
        patch = min(max(4 * smallest, 64), max(median), 256)
    else:
        rows.append(
            ("inputs.*.mode", "resize", f"median image {int(median[0])}x{int(median[1])} is small: whole images")
        )
        patch = max(median)
    depth = int(np.clip(math.floor(math.log2(patch / 6)), 2, 5))
    encoder = weights and wants_pretrained(fp)
    size = _multiple(min(patch, 512), 32 if encoder else 2**depth)
    rows.append(
        (
            "inputs.*.size",
            [size, size],
            f"{'patches' if rows[0][1] == 'patch' else 'images'} of {size} px, a multiple of 2**depth",
        )
    )
    rows.append(("model.depth", depth, f"the deepest feature map is {size // 2**depth} px (4-8 is the aim)"))
    filters = filters or (32 if budget > 12 * 2**30 else 16)
    rows.append(("model.filters", filters, "32 with a GPU-sized budget, else 16 (doubled per level)"))
    if encoder:
        why = f"3-channel images, {fp.rows} rows: start from weights pretrained on natural images (found in the cache)"
        rows += [("model.encoder", ENCODER, why), ("model.weights", "pretrained", f"{ENCODER}'s, in timm's cache")]
    heads = 1 + sum(1 for o in outputs.values() if getattr(o, "spatial", False))  # the encoder and a decoder per mask
    per_image = BYTES_PER_FEATURE * sum(filters * 2**k * (size / 2**k) ** 2 for k in range(depth + 1)) * heads
    per_image *= fp.channels / 3 + 1  # the input's share, small
    batch = int(np.clip(2 ** math.floor(math.log2(max(budget / per_image, 1))), 2, 64))
    rows.append(
        (
            "train.batch_size",
            batch,
            f"~{per_image / 2**20:.0f} MiB of activations per {'patch' if rows[0][1] == 'patch' else 'image'}",
        )
    )
    if rows[0][1] == "patch":
        rare = [n for n, v in fp.foreground.items() if v < 0.05]
        share = 0.33 if rare else 0.0
        why = "masks are not rare: patches anywhere"
        if rare:
            covers = ", ".join(f"{n} {fp.foreground[n]:.1%}" for n in rare)
            why = f"foreground covers {covers}: a third of each batch centred on it, as nnU-Net"
        rows.append(("train.foreground", share, why))
        if val_share and epoch_patches:
            rows += validation_rows(fp.sizes, size, round(fp.rows * val_share), epoch_patches)
    return rows


def validation_rows(
    sizes: np.ndarray, patch: int | Sequence[int], val_images: int, epoch_patches: int, unit: str = "images"
) -> list[tuple]:
    """Patch mode: what validating the whole images (or scans: `sizes` (n, 3) and a (d, h, w) patch)
    every epoch would cost against the epoch's training, counted in forward passes (a training patch
    ~5: forward, backward and the optimiser, measured on CPU in benchmarks/large.py), and the
    validation proposed for that cost."""
    sides = np.broadcast_to(np.asarray(patch), np.shape(sizes)[1:])
    strides = sides // 2  # sliding windows overlap by half, as predict and evaluate slide them
    per_image = np.mean(
        [np.prod([math.ceil(max(n - p, 0) / s) + 1 for n, p, s in zip(shape, sides, strides)]) for shape in sizes]
    )
    windows, train = per_image * val_images, 5 * epoch_patches
    whole = (
        f"the whole {val_images} val {unit} are ~{windows:.0f} windows, {windows / train:.0%} of an epoch's training"
    )
    if windows <= 0.1 * train:
        return [("train.val_patches", 0, f"{whole}: cheap enough to validate them every epoch")]
    # what keeps validation (patches and the views) near 10% of the epoch: 32 to 256 patches
    count = int(np.clip(_multiple(0.1 * train - val_images, 16), 32, 256))
    cost = (count + val_images) / train
    rows = [("train.val_patches", count, f"{whole}; {count} fixed val patches and the views cost {cost:.0%}")]
    if cost > 0.2:
        every = math.ceil(cost / 0.1)
        rows.append(("train.val_every", every, f"short epochs: validating every {every} keeps it near 10%"))
    return rows


def run_plan(cfg: Config, sample: int, budget_gb: float | None) -> str:
    """The plan of an image data set (a volume one's: plan_volumes.run_volume_plan)."""
    fp = fingerprint(cfg, sample)
    budget, source = budget_of(budget_gb)
    split = cfg.data.split
    train_rows = round(fp.rows * (1 - split.val - split.test))
    cached = wants_pretrained(fp) and pretrained_cached(ENCODER)
    rows = propose(fp, budget, cfg.outputs, None, cached, split.val, cfg.train.patches_per_epoch or train_rows)
    read = f"{fp.rows} rows, {len(fp.sizes)} images read"
    lines = [
        f"plan: {cfg.data.csv}: {read}; budget {budget / 2**30:.1f} GiB ({source})",
        f"  images: {fp.sizes.min(0)[0]}x{fp.sizes.min(0)[1]} to {fp.sizes.max(0)[0]}x{fp.sizes.max(0)[1]}, "
        f"{fp.channels} channel(s), intensity {fp.intensity[0]}-{fp.intensity[1]} (1st-99th percentile)",
    ]
    for name in fp.foreground:
        lines.append(
            f"  {name}: foreground {fp.foreground[name]:.2%} of pixels, objects ~{fp.objects[name]:.0f} px across"
        )
    for name, values in fp.values.items():
        line, warnings = cfg.outputs[name].column_report(values)
        lines.append(f"  {name}: {line}")
        lines += [f"  warning: {name}: {w}" for w in warnings]
    if wants_pretrained(fp) and not cached:
        lines.append(
            f"  note: 3-channel images, {fp.rows} rows: an encoder pretrained on natural images may help "
            f"(model.encoder: {ENCODER}, model.weights: pretrained or a file); no weights for it on this machine, "
            "so none proposed (docs/encoders.md says how to bring them)"
        )
    return "\n".join(lines + table_lines(cfg, rows))


def budget_of(budget_gb: float | None) -> tuple[float, str]:
    """--budget-gb in bytes, else memory_budget(); and where it comes from."""
    return (budget_gb * 2**30, f"--budget-gb {budget_gb:g}") if budget_gb else memory_budget()


def table_lines(cfg: Config, rows: list[tuple]) -> list[str]:
    """The proposals' table with reasons, and the `dvc exp run -S ...` line that sets them."""
    width = max(len(k) for k, _, _ in rows)
    values = max(10, *(len(str(v)) for _, v, _ in rows))  # a volume's [d, h, w] may be longer
    lines = [""]
    lines += [f"  {key:<{width}}  {str(value):<{values}}  {why}" for key, value, why in rows]
    sets = []
    for key, value, _ in rows:
        for target in [key.replace("*", n) for n in cfg.inputs] if "*" in key else [key]:
            sets.append(
                f"-S {target}={value if not isinstance(value, list) else '[' + ','.join(map(str, value)) + ']'}"
            )
    return lines + ["", "dvc exp run " + " ".join(sets)]

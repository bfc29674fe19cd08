"""`run_plan`: the text `cnn-factory plan` prints: the fingerprint, the proposals with their
reasons and the `dvc exp run -S ...` line that sets them."""

from __future__ import annotations

import os

import numpy as np

from cnn_factory.config import Config
from cnn_factory.encoder_weights import pretrained_cached
from cnn_factory.plan.fingerprint import Fingerprint, fingerprint
from cnn_factory.plan.folds import folds_lines
from cnn_factory.plan.propose import ENCODER, axes, mm, propose, voxels, wants_pretrained


def run_plan(cfg: Config, sample: int, budget_gb: float | None) -> str:
    """The plan of the data set `cfg` names, images or volumes, from up to `sample` rows."""
    fp = fingerprint(cfg, sample)
    budget, source = budget_of(budget_gb)
    split = cfg.data.split
    train_rows = round(fp.rows * (1 - split.val - split.test))
    cached = wants_pretrained(fp) and pretrained_cached(ENCODER)
    epoch = cfg.train.patches_per_epoch or train_rows
    rows = propose(fp, budget, cfg.outputs, weights=cached, val_share=split.val, epoch_patches=epoch)
    item = fp.dims.item
    read = f"{fp.read} {item}s read"
    read = f"{len(fp.shapes)} {item} headers and {read}" if len(fp.shapes) > fp.read else read
    lines = [f"plan: {cfg.data.csv}: {fp.rows} rows, {read}; budget {budget / 2**30:.1f} GiB ({source})"]
    lines += fingerprint_lines(cfg, fp)
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
    lines += folds_lines(fp.rows, split)  # a small table: cross-validation (plan/folds.py)
    return "\n".join(lines + table_lines(cfg, rows))


def fingerprint_lines(cfg: Config, fp: Fingerprint) -> list[str]:
    """The grids (and for files with a spacing, the spacing and the target), intensities and masks."""
    dims, spec, at = fp.dims, cfg.first_input, fp.at_target
    grid = f"  {dims.item}s: {voxels(fp.shapes.min(0))} to {voxels(fp.shapes.max(0))} {dims.cell}s, "
    ranges = " x ".join(f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(fp.spacings.min(0), fp.spacings.max(0)))
    grid += f"spacing {ranges} mm ({' x '.join(axes(at[0]))}), " if dims.spacing else ""
    lines = [grid + f"{fp.channels} channel(s)"]
    if dims.spacing:
        at_range = f"{voxels(fp.median)} voxels (median; {voxels(at.min(0))} to {voxels(at.max(0))})"
        lines.append(
            f"  target spacing {mm(fp.target)} mm ({'params' if fp.given else 'auto'}), anisotropy "
            f"{fp.anisotropy:.1f}: scans of {at_range}"
        )
    window = f"; window {list(spec.window)}" if spec.window else "; window null: each scan's own to 0..255"
    lines.append(
        f"  {spec.name}: intensity {fp.intensity[0]:.4g} to {fp.intensity[2]:.4g}, median {fp.intensity[1]:.4g} "
        f"(0.5th-99.5th percentile, median of the {dims.item}s{'' if 'window' in spec.unused else window})"
    )
    for name, diameter in fp.objects.items():
        objects = f"objects ~{diameter:.0f} {dims.unit} across" if diameter else f"no objects in the {dims.item}s read"
        if diameter and dims.spacing:
            objects += f" ({voxels(diameter / np.asarray(fp.target))} voxels at the target spacing)"
        lines.append(f"  {name}: foreground {fp.foreground[name]:.2%} of {dims.cell}s, {objects}")
    return lines


def memory_budget() -> tuple[float, str]:
    """Bytes training may use for activations, and where that figure comes from."""
    import torch

    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        return 0.6 * total, f"60% of the GPU's {total / 2**30:.0f} GiB"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 8 * 2**30
    budget = min(0.25 * total, 8 * 2**30)
    return budget, f"a quarter of the {total / 2**30:.0f} GiB of RAM, at most 8 GiB (no GPU)"


def budget_of(budget_gb: float | None) -> tuple[float, str]:
    """--budget-gb in bytes, else memory_budget(); and where it comes from."""
    return (budget_gb * 2**30, f"--budget-gb {budget_gb:g}") if budget_gb else memory_budget()


def table_lines(cfg: Config, rows: list[tuple]) -> list[str]:
    """The proposals' table with reasons, and the `dvc exp run -S ...` line that sets them."""
    width = max(len(k) for k, _, _ in rows)
    values = max(10, *(len(str(v)) for _, v, _ in rows))  # a volume's [d, h, w] may be longer
    lines = [""]
    lines += [f"  {key:<{width}}  {str(value):<{values}}  {why}" for key, value, why in rows]
    sets = [
        f"-S {target}={'[' + ','.join(map(str, value)) + ']' if isinstance(value, list) else value}"
        for key, value, _ in rows
        for target in ([key.replace("*", n) for n in cfg.inputs] if "*" in key else [key])
    ]
    return lines + ["", "dvc exp run " + " ".join(sets)]

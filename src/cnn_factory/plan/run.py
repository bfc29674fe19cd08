"""`run_plan`: the text `cnn-factory plan` prints: the fingerprint, the proposals with their
reasons, the time the proposed run is expected to take here, and the `dvc exp run -S ...` line
that sets them (checked: the params with the line applied are parsed as training parses them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from cnn_factory.config import Config, DataConfig, parse_params
from cnn_factory.data.folds import assign_folds, fold_splits
from cnn_factory.data.splits import drawn_splits
from cnn_factory.data.table import Table, read_table
from cnn_factory.encoder_weights import pretrained_cached
from cnn_factory.errors import listing
from cnn_factory.outputs import ColumnReport
from cnn_factory.plan.budget import Training
from cnn_factory.plan.dims import dims_of
from cnn_factory.plan.fingerprint import Fingerprint, fingerprint
from cnn_factory.plan.folds import folds_lines, group_lines
from cnn_factory.plan.patch import voxels
from cnn_factory.plan.propose import ENCODER, propose, wants_pretrained, windows
from cnn_factory.plan.timing import expected_seconds, measure, work


@dataclass(frozen=True, kw_only=True)
class Plan:
    rows: list[tuple]  # (params key, value, reason)
    sets: list[tuple[str, Any]]  # (dotted key, value): what the `-S` line sets
    expected_s: float  # the proposed train stage's expected seconds on this machine
    text: str  # what `cnn-factory plan` prints


def run_plan(cfg: Config, sample: int, budget_gb: float | None) -> str:
    """The plan of the data set `cfg` names, images or volumes, from up to `sample` rows."""
    return make_plan(cfg, sample, budget_gb).text


def make_plan(cfg: Config, sample: int, budget_gb: float | None) -> Plan:
    """The proposals, the proposed run's expected time here, and the text that says them."""
    table = read_table(cfg.data.csv)
    fp = fingerprint(cfg, sample, table)
    budget, source = memory_budget(budget_gb)
    split = cfg.data.split
    trained, validated, tested = split_rows(table, cfg.data)
    patch = cfg.first_input.size if cfg.patch_mode else None
    training = Training(train=cfg.train, rows=trained, val=validated, patch=patch)
    cached = wants_pretrained(fp) and pretrained_cached(ENCODER)
    rows = propose(fp, budget, cfg.outputs, weights=cached, training=training)
    sets = settings(cfg, rows)
    expected, how = expected_time(applied(cfg, sets), fp, training)
    item = dims_of(fp).words.item
    read = f"{fp.read} {item}s read"
    read = f"{len(fp.grids.shapes)} {item} headers and {read}" if len(fp.grids.shapes) > fp.read else read
    lines = [f"plan: {cfg.data.csv}: {fp.rows} rows, {read}; budget {budget / 2**30:.1f} GiB ({source})"]
    lines += fingerprint_lines(cfg, fp)
    for name, values in fp.columns.values.items():
        line, warnings = ColumnReport.of(cfg.outputs[name]).report(values)
        lines.append(f"  {name}: {line}")
        lines += [f"  warning: {name}: {w}" for w in warnings]
    if wants_pretrained(fp) and not cached:
        lines.append(
            f"  note: 3-channel images, {fp.rows} rows: an encoder pretrained on natural images may help "
            f"(model.encoder: {ENCODER}, model.weights: pretrained or a file); no weights for it on this machine, "
            "so none proposed (docs/encoders.md says how to bring them)"
        )
    lines += group_lines(fp.rows, split, fp.columns.owners)  # several images per patient: data.split.group
    lines += folds_lines(fp.rows, split, expected, tested)  # a small table: cross-validation (plan/folds.py)
    lines += [*table_lines(rows), "", how, "", "dvc exp run " + " ".join(f"-S {k}={text(v)}" for k, v in sets)]
    return Plan(rows=rows, sets=sets, expected_s=expected, text="\n".join(lines))


def split_rows(table: Table, data: DataConfig) -> tuple[int, int, int]:
    """The training, validation and test rows of the run the params describe: the split prepare
    draws (or the CSV's column names), and with folds, fold 0's run's."""
    if data.split.folds:
        names = fold_splits(assign_folds(table, data), data.split.fold_names[0])
    else:
        names = drawn_splits(table, data)
    return names.count("train"), names.count("val"), names.count("test")


def fingerprint_lines(cfg: Config, fp: Fingerprint) -> list[str]:
    """The grids (and for files with a spacing, the spacing and the target), intensities and masks."""
    words, spec, g = dims_of(fp).words, cfg.first_input, fp.grids
    grid = f"{voxels(g.shapes.min(0))} to {voxels(g.shapes.max(0))} {words.cell}s, {fp.channels} channel(s)"
    lines = [f"  {words.item}s: {grid}", *dims_of(fp).spacing(fp)]
    window = f"; window {list(spec.window)}" if spec.window else "; window null: each scan's own to 0..255"
    lines.append(
        f"  {spec.name}: intensity {fp.intensity[0]:.4g} to {fp.intensity[2]:.4g}, median {fp.intensity[1]:.4g} "
        f"(0.5th-99.5th percentile, median of the {words.item}s{'' if 'window' in spec.unused else window})"
    )
    for name, diameter in fp.masks.objects.items():
        objects = (
            f"objects ~{diameter:.0f} {words.unit} across" if diameter else f"no objects in the {words.item}s read"
        )
        lines.append(f"  {name}: foreground {fp.masks.foreground[name]:.2%} of {words.cell}s, {objects}")
    for column, shares in fp.masks.unnamed.items():
        values = listing((f"{v} ({s:.1%} of its {words.cell}s)" for v, s in shares.items()), 8, ", ... ({} more)")
        lines.append(
            f"  note: column '{column}' holds label value(s) {values}, which no output names (label, labels or "
            f"ignore): they count as background; {words.cell}s nobody labelled (e.g. 255 borders) belong in an "
            "output's ignore (docs/your-data.md#label-maps-from-annotation-tools)"
        )
    return lines


def memory_budget(budget_gb: float | None) -> tuple[float, str]:
    """Bytes training may use for activations (--budget-gb's, else a share of the GPU's or the
    RAM's), and where that figure comes from."""
    if budget_gb:
        return budget_gb * 2**30, f"--budget-gb {budget_gb:g}"
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        return 0.6 * total, f"60% of the GPU's {total / 2**30:.0f} GiB"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 8 * 2**30
    return min(0.25 * total, 8 * 2**30), f"a quarter of the {total / 2**30:.0f} GiB of RAM, at most 8 GiB (no GPU)"


def settings(cfg: Config, rows: list[tuple]) -> list[tuple[str, Any]]:
    """(dotted params key, value) per proposal, `inputs.*` once per input; with patches proposed,
    each mask of another size takes the patch's (a mask is predicted patch by patch)."""
    sets = [
        (target, value)
        for key, value, _ in rows
        for target in ([key.replace("*", n) for n in cfg.inputs] if "*" in key else [key])
    ]
    proposed = {key: value for key, value, _ in rows}
    if proposed.get("inputs.*.mode", cfg.first_input.mode) == "patch" and "inputs.*.size" in proposed:
        size = list(proposed["inputs.*.size"])
        masks = cfg.outputs.spatial.items()
        sets += [(f"outputs.{n}.size", size) for n, o in masks if o.size_given and list(o.size or ()) != size]
    return sets


def applied(cfg: Config, sets: list[tuple[str, Any]]) -> Config:
    """The params with the proposals set, checked as any params file is (a UserError naming a key
    otherwise); a mask's size left out of the params follows the proposed input size."""
    raw = cfg.model_dump(mode="json")
    for name, output in cfg.outputs.spatial.items():
        if not output.size_given:
            raw["outputs"][name].pop("size")
    for key, value in sets:
        *path, last = key.split(".")
        section = raw
        for part in path:
            section = section[part]
        section[last] = value
    return parse_params(raw, "the plan's proposals")


def text(value: Any) -> str:
    """A value as `-S` takes it: lists without spaces."""
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def expected_time(proposed: Config, fp: Fingerprint, training: Training) -> tuple[float, str]:
    """The proposed run's expected seconds on this machine, and a line saying what they are made of."""
    rates = measure(proposed, list(fp.grids.target))
    per_val = windows(fp.grids.at_target, list(proposed.first_input.size))
    run = work(proposed, training.rows, training.val, per_val)
    seconds = expected_seconds(rates, run)
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return seconds, (
        f"expected: the train stage ~{took} on this machine: {run.steps} steps of "
        f"{rates.step_s * 1000:.0f} ms (measured here on the proposed network) and {run.forwards:.0f} "
        f"validation forwards of {rates.forward_s * 1000:.1f} ms, with start-up and checkpoints"
    )


def table_lines(rows: list[tuple]) -> list[str]:
    """The proposals' table with reasons."""
    width = max(len(k) for k, _, _ in rows)
    values = max(10, *(len(str(v)) for _, v, _ in rows))  # a volume's [d, h, w] may be longer
    return [""] + [f"  {key:<{width}}  {str(value):<{values}}  {why}" for key, value, why in rows]

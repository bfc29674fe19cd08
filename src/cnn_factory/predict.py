"""Predicts with a trained model file on new images or scans: masks as PNGs (NIfTI) and one predictions.csv.

    cnn-factory predict models/example.pt 'photos/*.png' --out predictions [--tta]

Each image is prepared exactly as the prepare stage does (read, alpha dropped, scaled to
uint8, resized to the model's input size), normalised with the mean/std the model file
keeps, and run through the model. Per segmentation output the mask's probabilities are brought
back to the image's own size (bilinear) and written there as <out>/<output>/<stem>.png: 0/255
for a boolean mask, class indices with a palette for a class mask (`Writer.write_prediction`);
<out>/predictions.csv holds per image the class and probability of each category output,
the value of each numeric output and the mask file and coverage of each segmentation output.

A volume model reads NIfTI files, TIFF stacks and DICOM scans (series' folders, multi-frame
files), resampled to its spacing as prepare resamples them; its masks' probabilities are brought
back to each scan's own grid (trilinear) and written as <out>/<output>/<stem>.nii.gz with the
scan's affine: 0/1 for a mask, class indices for a class mask.
"""

from __future__ import annotations

import csv
import glob
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cnn_factory.config import InputSpec, resolve_path
from cnn_factory.data.dataset import to_device
from cnn_factory.data.grids import Loaded, grid_for
from cnn_factory.data.table import read_table
from cnn_factory.device import pick_device
from cnn_factory.dicom import is_series
from cnn_factory.errors import UserError
from cnn_factory.images import split_name
from cnn_factory.inference import predict_batch, predict_tiled, upsample
from cnn_factory.model import model_files
from cnn_factory.native import Network, load_models
from cnn_factory.outputs import MeasureOutput, Outputs, Writer, computed_values


@dataclass(frozen=True)
class Item:
    """One image to predict: a file per input, and (a CSV's row) each measure's mm per pixel from
    its `spacing_column` where the CSV has that column."""

    files: dict[str, Path]
    spacings: dict[str, float] = field(default_factory=dict)

    @property
    def first(self) -> Path:
        return next(iter(self.files.values()))


def collect_images(sources: list[str], columns: dict[str, str], outputs: Outputs | None = None) -> list[Item]:
    """One Item per image, from files, DICOM series' folders, globs, or CSVs with the model's input
    columns (and any of its measures' spacing columns)."""
    items: list[Item] = []
    for source in sources:
        if source.lower().endswith(".csv") and Path(source).is_file():
            items += csv_items(source, columns, outputs)
            continue
        paths = [Path(source)] if Path(source).is_file() else sorted(Path(p) for p in glob.glob(source, recursive=True))
        paths = [p for p in paths if p.is_file() or is_series(p)]  # a folder: one DICOM series, a scan
        if not paths:
            raise UserError(f"{source}: no such file or DICOM series, and nothing matches it as a glob")
        if len(columns) > 1:
            raise UserError(f"{source}: the model has {len(columns)} inputs; give a CSV with columns {list(columns)}")
        items += [Item({next(iter(columns)): p}) for p in paths]
    stems: dict[str, Path] = {}
    for item in items:
        if (other := stems.setdefault(split_name(item.first)[0], item.first)) != item.first:
            raise UserError(f"{other} and {item.first}: same file name stem; their masks would overwrite")
    return items


def csv_items(source: str, columns: dict[str, str], outputs: Outputs | None) -> list[Item]:
    """A CSV's rows as Items: paths relative to its folder; a measure's spacing column read where
    the CSV has it (a bad cell is a UserError naming its row and column)."""
    table = read_table(source)
    if missing := [c for c in columns.values() if c not in table.header]:
        raise UserError(f"{source}: row 1: no column {', '.join(map(repr, missing))} (the model's inputs)")
    spaced = {
        n: (o, o.spacing_column)
        for n, o in (outputs or {}).items()
        if isinstance(o, MeasureOutput) and o.spacing_column in table.header
    }
    items = []
    for i, row in enumerate(table.rows):
        spacings = {}
        for name, (o, column) in spaced.items():
            try:
                spacings[name] = o.spacing(row[column])
            except ValueError as err:
                raise UserError(f"{table.where(i, column)}: {err}") from None
        base = Path(source).parent  # relative paths: against the CSV's folder
        items.append(Item({n: resolve_path(row[c], base) for n, c in columns.items()}, spacings))
    return items


def warn_if_tiling_changes_scale(median: list[int], window: tuple[int, ...]) -> None:
    """--tile on a model trained on whole images resized down: its windows show objects larger than it learned."""
    factor = max(median[0] / window[0], median[1] / window[1])
    if factor > 1.5:
        print(
            f"warning: --tile: this model learned from images of about {median[0]}x{median[1]} resized to "
            f"{window[0]}x{window[1]}, so at their own resolution objects look {factor:.1f}x larger than it "
            "learned; predict without --tile, or train with inputs.*.mode: patch",
            file=sys.stderr,
        )


@dataclass(frozen=True)
class Passes:
    """How the network runs over an image: `tta` averages it with its flips, sliding windows
    overlap by `overlap`, `batch_size` windows per forward pass."""

    tta: bool = False
    overlap: float = 0.5
    batch_size: int = 16


@dataclass
class Predictor:
    """A model file ready to predict, as `cnn-factory predict` and `cnn-factory serve` both do.

        predictor = Predictor.from_model_file("models/example.pt", torch.device("cpu"))
        loaded = predictor.load({"image": Path("a.png")})        # a file, or a file's bytes, per input
        [values] = predictor.predict([loaded])                    # {output: probabilities or value}

    Each image is resized to the model's input size, or (`tile`, always for a patch-trained model)
    scaled by the model's `scale` and covered by sliding windows; a volume model's scans are
    resampled to its spacing and always slide. Mask probabilities come back at the image's (scan's)
    own size, for the kinds to threshold (`Writer.write_prediction`, `Writer.answer`).
    """

    model: Network  # an Ensemble: several model files of one model
    inputs: dict[str, InputSpec]
    outputs: Outputs
    stats: tuple[torch.Tensor, torch.Tensor]  # per-channel mean and std, (1, C, 1, 1) on the device
    device: torch.device
    tile: bool = False
    passes: Passes = Passes()

    @classmethod
    def from_model_file(cls, path: str | Path, device: torch.device, tile: bool = False, **options) -> Predictor:
        """From the model file (ModelFile), or from the model files a folder or glob names (`model_files`):
        several of one model predict as an Ensemble. `options` are tta, overlap, batch_size."""
        model, model_file = load_models(model_files(path), device)
        if tile and not model_file.patch:
            warn_if_tiling_changes_scale(list(model_file.median_size), model_file.first.size)
        tile = tile or model_file.patch  # a patch-trained model always slides at its training scale
        inputs, stats = model_file.input_specs(), model_file.normalisation(device)
        return cls(model, inputs, model_file.outputs, stats, device, tile, Passes(**options))

    @property
    def first(self) -> InputSpec:
        return next(iter(self.inputs.values()))

    def load(self, sources: dict[str, Path | bytes]) -> Loaded:
        """The model's inputs, from a file or a file's bytes each, stacked as the network takes them:
        an image at its own size, or a scan resampled to the model's spacing as prepare does.
        ValueError (an image) or UserError (a scan) says what is wrong."""
        return grid_for(self.first).load(sources, self.inputs)

    def predict(
        self, loaded: list[Loaded], threshold: float = 0.5, spacings: list[dict[str, float]] | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Per image (scan), each output's probabilities (masks at its own size) or value; a measure's
        value from the masks predicted at `threshold` (in mm for a scan or a DICOM image with its pixel
        size, else in pixels)."""
        window = self.first.size
        # whole images (scans) at the input size, as prepare makes them: what image-level outputs see
        views = np.stack([grid_for(self.first).view(item.pixels, window) for item in loaded])
        x, _ = to_device(torch.from_numpy(views), {}, self.device, *self.stats)
        probs = {n: list(p.float()) for n, p in predict_batch(self.model, x, self.passes.tta, self.outputs).items()}
        spatial = self.outputs.spatial
        for k, item in enumerate(loaded):
            if self.tile:  # masks from windows sliding over the image at the model's scale (a scan: spacing)
                native = grid_for(self.first).to_native(item.pixels)
                scaled, _ = to_device(torch.from_numpy(native[None]), {}, self.device, *self.stats)
                p = self.passes
                tiled = predict_tiled(self.model, scaled, window, p.overlap, p.tta, p.batch_size, self.outputs)
                for n in spatial:
                    probs[n][k] = tiled[n][0]
            for n in spatial:  # probabilities at the image's own size, thresholded there
                probs[n][k] = upsample(probs[n][k], item.size)
        values = [{n: p[k].cpu().numpy() for n, p in probs.items()} for k in range(len(loaded))]
        rows = spacings or [{}] * len(loaded)  # each image's measures' mm per pixel from a CSV's spacing column
        return [
            computed_values(v, self.outputs, threshold, i.spacing, i.pixels, r) for v, i, r in zip(values, loaded, rows)
        ]


def predict_images(
    model_path: str,
    sources: list[str],
    out: Path,
    batch_size: int,
    device: str,
    tta: bool,
    threshold: float = 0.5,
    tile: bool = False,
    overlap: float = 0.5,
) -> None:
    """Writes <out>/<output>/<stem>.png per segmentation output and <out>/predictions.csv."""
    if batch_size < 1:
        raise UserError(f"--batch-size: expected an integer >= 1, got {batch_size}")
    if not 0 <= overlap < 1:
        raise UserError(f"--overlap: expected a fraction from 0 to below 1, got {overlap}")
    dev = pick_device(device, "--device")
    predictor = Predictor.from_model_file(model_path, dev, tile, tta=tta, overlap=overlap, batch_size=batch_size)
    items = collect_images(sources, {n: s.column for n, s in predictor.inputs.items()}, predictor.outputs)
    failed: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writers = {n: Writer.of(o) for n, o in predictor.outputs.items()}
        writer.writerow(["image", *(column for w in writers.values() for column in w.prediction_columns())])
        bar = tqdm(total=len(items), desc="predict", unit="image", disable=None)
        for start in range(0, len(items), batch_size):
            batch, loaded = read_batch(predictor, items[start : start + batch_size], failed)
            bar.update(len(items[start : start + batch_size]))
            predicted = predictor.predict(loaded, threshold, [item.spacings for item in batch]) if loaded else []
            for item, image, values in zip(batch, loaded, predicted):
                row, stem = [str(item.first)], split_name(item.first)[0]
                for name, w in writers.items():
                    row += w.write_prediction(values[name], out, stem, image.size, threshold, image.affine)
                writer.writerow(row)
        bar.close()
    masks = f", masks in {out}/<output>/" if predictor.outputs.spatial else ""
    print(f"predict: {len(items) - len(failed)} image(s) -> {out}/predictions.csv{masks}")
    if failed:
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
        raise UserError(f"{len(failed)} of {len(items)} image(s) could not be used; see above")


def read_batch(predictor: Predictor, items: list[Item], failed: list[str]) -> tuple[list[Item], list[Loaded]]:
    """The items that read, with what `Predictor.load` makes of them; each that does not is added
    to `failed` with its reason."""
    batch, loaded = [], []
    for item in items:
        try:
            loaded.append(predictor.load(dict(item.files)))
            batch.append(item)
        except (ValueError, UserError) as err:
            failed.append(str(err) if isinstance(err, UserError) else f"{item.first}: {err}")
    return batch, loaded

"""Predicts with a trained model file on new images: masks as PNGs and one predictions.csv.

    cnn-factory predict models/example.pt 'photos/*.png' --out predictions [--tta]

Each image is prepared exactly as the prepare stage does (read, alpha dropped, scaled to
uint8, resized to the model's input size), normalised with the mean/std the model file
keeps, and run through the model. Per segmentation output the mask's probabilities are brought
back to the image's own size (bilinear) and written there as <out>/<output>/<stem>.png: 0/255
for a boolean mask, class indices with a palette for a class mask (`Output.write_prediction`);
<out>/predictions.csv holds per image the class and probability of each category output,
the value of each numeric output and the mask file and coverage of each segmentation output.
"""

from __future__ import annotations

import csv
import glob
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cnn_factory.config import resolve_path
from cnn_factory.data.dataset import to_device
from cnn_factory.data.rows import read_input, resize_image, scaled_size
from cnn_factory.data.table import read_table
from cnn_factory.device import pick_device
from cnn_factory.errors import UserError
from cnn_factory.images import read_image
from cnn_factory.inference import predict_batch, predict_tiled, upsample
from cnn_factory.model import ModelFile


def collect_images(sources: list[str], columns: dict[str, str]) -> list[dict[str, Path]]:
    """One {input name: file} per image, from files, globs, or CSVs with the model's input columns."""
    items: list[dict[str, Path]] = []
    for source in sources:
        if source.lower().endswith(".csv") and Path(source).is_file():
            table = read_table(source)
            missing = [c for c in columns.values() if c not in table.header]
            if missing:
                raise UserError(f"{source}: row 1: no column {', '.join(map(repr, missing))} (the model's inputs)")
            base = Path(source).parent  # relative paths: against the CSV's folder
            items += [{n: resolve_path(row[c], base) for n, c in columns.items()} for row in table.rows]
            continue
        paths = [Path(source)] if Path(source).is_file() else sorted(Path(p) for p in glob.glob(source, recursive=True))
        paths = [p for p in paths if p.is_file()]
        if not paths:
            raise UserError(f"{source}: no such file, and no file matches it as a glob")
        if len(columns) > 1:
            raise UserError(f"{source}: the model has {len(columns)} inputs; give a CSV with columns {list(columns)}")
        items += [{next(iter(columns)): p} for p in paths]
    stems: dict[str, Path] = {}
    for item in items:
        first = next(iter(item.values()))
        if first.stem in stems and stems[first.stem] != first:
            raise UserError(f"{stems[first.stem]} and {first}: same file name stem; their masks would overwrite")
        stems[first.stem] = first
    return items


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header where the format allows."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except Exception:  # formats PIL does not know (e.g. some TIFFs): decode the whole image
        return read_image(path).shape[:2]


def warn_if_tiling_changes_scale(model_file: ModelFile, window: tuple[int, int]) -> None:
    """--tile on a model trained on whole images resized down: its windows show objects larger than it learned."""
    median = model_file.median_size
    factor = max(median[0] / window[0], median[1] / window[1])
    if factor > 1.5:
        print(
            f"warning: --tile: this model learned from images of about {median[0]}x{median[1]} resized to "
            f"{window[0]}x{window[1]}, so at their own resolution objects look {factor:.1f}x larger than it "
            "learned; predict without --tile, or train with inputs.*.mode: patch",
            file=sys.stderr,
        )


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
    model, model_file = ModelFile.load(model_path, dev)
    specs = model_file.input_specs()
    window, scale = model_file.first.size, model_file.first.scale
    tile = tile or model_file.patch  # a patch-trained model always slides at its training scale
    if tile and not model_file.patch:
        warn_if_tiling_changes_scale(model_file, window)
    items = collect_images(sources, {n: s.column for n, s in specs.items()})
    stats = model_file.normalisation(dev)
    outputs = model_file.outputs
    spatial = [n for n, o in outputs.items() if o.spatial]
    header = ["image", *(column for o in outputs.values() for column in o.prediction_columns())]
    failed, written = [], 0
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        bar = tqdm(total=len(items), desc="predict", unit="image", disable=None)
        for start in range(0, len(items), batch_size):
            batch, natives = [], []
            for item in items[start : start + batch_size]:
                try:
                    natives.append(np.concatenate([read_input(item[n], spec) for n, spec in specs.items()]))
                except ValueError as err:
                    failed.append(f"{next(iter(item.values()))}: {err}")
                    continue
                batch.append(item)
            bar.update(len(items[start : start + batch_size]))
            if not batch:
                continue
            views = np.stack([resize_image(image, window) for image in natives])  # whole images at the input size
            x, _ = to_device(torch.from_numpy(views), {}, dev, *stats)
            probs = {n: list(p.float()) for n, p in predict_batch(model, x, tta, outputs).items()}
            for k, image in enumerate(natives):
                size = (int(image.shape[-2]), int(image.shape[-1]))
                if tile:  # masks from windows sliding over the image at the model's scale
                    scaled = torch.from_numpy(resize_image(image, scaled_size(size, scale))[None])
                    scaled, _ = to_device(scaled, {}, dev, *stats)
                    tiled = predict_tiled(model, scaled, window, overlap, tta, batch_size, outputs)
                    for n in spatial:
                        probs[n][k] = tiled[n][0]
                for n in spatial:  # probabilities at the image's own size, thresholded there
                    probs[n][k] = upsample(probs[n][k], size)
            for k, item in enumerate(batch):
                first_path, size = next(iter(item.values())), natives[k].shape[-2:]
                row = [str(first_path)]
                for name, o in outputs.items():
                    value = probs[name][k].cpu().numpy()
                    row += o.write_prediction(value, out, first_path.stem, (int(size[0]), int(size[1])), threshold)
                writer.writerow(row)
                written += 1
        bar.close()
    print(f"predict: {written} image(s) -> {out}/predictions.csv" + (f", masks in {out}/<output>/" if spatial else ""))
    if failed:
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
        raise UserError(f"{len(failed)} of {len(items)} image(s) could not be used; see above")

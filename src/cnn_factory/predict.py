"""Predicts with a trained model file on new images: masks as PNGs and one predictions.csv.

    cnn-factory predict models/example.pt 'photos/*.png' --out predictions [--tta]

Each image is prepared exactly as the prepare stage does (read, alpha dropped, scaled to
uint8, resized to the model's input size), normalised with the mean/std the model file
keeps, and run through the model. Per segmentation output the mask is resized back to the
image's own size (nearest neighbour) and written as <out>/<output>/<stem>.png (0/255);
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

from cnn_factory.config import input_spec, resolve_path
from cnn_factory.data.dataset import normalisation, pick_device, to_device
from cnn_factory.data.images import read_image
from cnn_factory.data.rows import load_input
from cnn_factory.data.table import read_table
from cnn_factory.errors import UserError
from cnn_factory.model import load_model, model_outputs
from cnn_factory.outputs import Output


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


@torch.no_grad()
def predict_batch(model, x: torch.Tensor, tta: bool, outputs: dict[str, Output]) -> dict[str, torch.Tensor]:
    """Probabilities per output: sigmoid (B, H, W) masks, softmax (B, K) classes, (B,) numbers.

    With tta the image and its horizontal, vertical and double flips are averaged, each
    mask flipped back first.
    """
    flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    sums: dict[str, torch.Tensor] = {}
    for dims in flips:
        logits = model(x.flip(dims) if dims else x)
        for name, value in logits.items():
            value = outputs[name].probabilities(value)
            if dims and outputs[name].spatial:  # a mask of the flipped image, flipped back
                value = value.flip(dims)
            sums[name] = sums.get(name, 0) + value
    return {name: value / len(flips) for name, value in sums.items()}


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header where the format allows."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except Exception:  # formats PIL does not know (e.g. some TIFFs): decode the whole image
        return read_image(path).shape[:2]


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows covering 0..length with at least `overlap` of a window shared."""
    last = max(length - window, 0)
    stride = max(1, int(window * (1 - overlap)))
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else [*starts, last]


def gaussian_weights(h: int, w: int) -> torch.Tensor:
    """(h, w) importance of each window pixel: centres count most, edges least (as nnU-Net blends)."""
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    weights = torch.exp(-(ys[:, None] ** 2) / (2 * (h / 8) ** 2) - xs[None] ** 2 / (2 * (w / 8) ** 2))
    return weights.clamp(min=1e-3)  # every pixel keeps some weight, so no covered pixel divides by 0


@torch.no_grad()
def predict_tiled(
    model,
    x: torch.Tensor,
    window: tuple[int, int],
    overlap: float,
    tta: bool,
    batch_size: int,
    outputs: dict[str, Output],
) -> dict[str, torch.Tensor]:
    """Sliding-window prediction of one normalised image x (1, C, H, W) of any size.

    Windows of the model's input size overlap by `overlap`; mask probabilities are blended
    with Gaussian weights into (H, W) maps, category and numeric outputs averaged over windows.
    """
    (h, w), (height, width) = window, x.shape[-2:]
    pad = (0, max(w - width, 0), 0, max(h - height, 0))  # images smaller than a window: pad at the end
    x = torch.nn.functional.pad(x, pad)
    corners = [(y, z) for y in window_starts(x.shape[-2], h, overlap) for z in window_starts(x.shape[-1], w, overlap)]
    weight = gaussian_weights(h, w).to(x.device)
    sums: dict[str, torch.Tensor] = {}
    coverage = torch.zeros(x.shape[-2:], device=x.device)  # the weights added up at each pixel
    for start in range(0, len(corners), batch_size):
        batch = corners[start : start + batch_size]
        crops = torch.cat([x[..., y : y + h, z : z + w] for y, z in batch])  # (n, C, h, w)
        probs = predict_batch(model, crops, tta, outputs)
        for k, (y, z) in enumerate(batch):
            coverage[y : y + h, z : z + w] += weight
            for name, p in probs.items():
                if outputs[name].spatial:
                    mask = p[k : k + 1, None]
                    if mask.shape[-2:] != (h, w):  # masks of another size than the input: to the window's
                        mask = torch.nn.functional.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)
                    total = sums.setdefault(name, torch.zeros(x.shape[-2:], device=x.device))
                    total[y : y + h, z : z + w] += mask[0, 0] * weight
                else:
                    sums[name] = sums.get(name, 0) + p[k] / len(corners)
    result = {}
    for name, value in sums.items():
        if outputs[name].spatial:
            value = (value / coverage)[:height, :width]
        result[name] = value[None]  # batch of one, as predict_batch returns
    return result


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
    model, meta = load_model(model_path, dev)
    specs = {n: input_spec(n, i["column"], i["size"], i["channels"]) for n, i in meta["inputs"].items()}
    items = collect_images(sources, {n: s.column for n, s in specs.items()})
    stats = normalisation(meta["inputs"], dev)
    outputs = model_outputs(meta)
    masks = [n for n, o in outputs.items() if o.spatial]
    if tile:  # each image at its own size: the loader's "resize" is to the image's own size
        window = next(iter(specs.values())).size
        if len({s.size for s in specs.values()}) > 1:
            raise UserError("--tile: the model's inputs differ in size; tile needs one window size")
    header = ["image", *(column for o in outputs.values() for column in o.prediction_columns())]
    failed, written = [], 0
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        bar = tqdm(total=len(items), desc="predict", unit="image", disable=None)
        for start in range(0, len(items), batch_size):
            batch, arrays, sizes = [], [], []
            for item in items[start : start + batch_size]:
                try:
                    if tile:  # the window slides over the image at its own resolution
                        own = image_size(next(iter(item.values())))
                        use = {n: input_spec(n, s.column, own, s.channels) for n, s in specs.items()}
                    else:
                        use = specs
                    loaded = [load_input(item[n], spec) for n, spec in use.items()]
                except ValueError as err:
                    failed.append(f"{next(iter(item.values()))}: {err}")
                    continue
                batch.append(item)
                arrays.append(np.concatenate([a for a, _ in loaded], axis=0))  # inputs stacked as channels
                sizes.append(loaded[0][1])
            bar.update(len(items[start : start + batch_size]))
            if not batch:
                continue
            if tile:  # one image at a time: sizes differ; its windows are batched instead
                parts = []
                for array in arrays:
                    x, _ = to_device(torch.from_numpy(array[None]), {}, dev, *stats)
                    parts.append(predict_tiled(model, x, window, overlap, tta, batch_size, outputs))
                probs = {n: [part[n][0].float().cpu().numpy() for part in parts] for n in outputs}
            else:
                x, _ = to_device(torch.from_numpy(np.stack(arrays)), {}, dev, *stats)  # (B, C, H, W)
                batch_probs = predict_batch(model, x, tta, outputs)
                probs = {n: list(p.float().cpu().numpy()) for n, p in batch_probs.items()}
            for k, (item, size) in enumerate(zip(batch, sizes)):
                first = next(iter(item.values()))
                row = [str(first)]
                for name, o in outputs.items():
                    row += o.write_prediction(probs[name][k], out, first.stem, size, threshold)
                writer.writerow(row)
                written += 1
        bar.close()
    print(f"predict: {written} image(s) -> {out}/predictions.csv" + (f", masks in {out}/<output>/" if masks else ""))
    if failed:
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
        raise UserError(f"{len(failed)} of {len(items)} image(s) could not be used; see above")

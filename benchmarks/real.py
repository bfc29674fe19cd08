"""Real data sets: cnn-factory's train and evaluate stages beside the plain MONAI pipeline, for equal training time.

    python -m benchmarks.real drive FOLDER [--epochs 20] [--patches 256] [--quick]
    python -m benchmarks.real brats FOLDER [--epochs 20] [--patches 64] [--quick]
    python -m benchmarks.real hc18 FOLDER [--epochs 20] [--quick]
    (each also with --stem strided: our network's first level at half resolution)

FOLDER holds a public data set as its repository ships it, already unpacked (nothing is
downloaded): `drive` the DRIVE retinal images (`training/` and `test/`, each with `images/*.tif`,
`1st_manual/*_manual1.gif` and `mask/*_mask.gif`), `brats` the BraTS 2015 sample cases of
DeepMedic's examples (`train/`, `validation/`, `test/`, one folder per case with
`Flair_subtrMeanDivStd.nii.gz`, `T1c_subtrMeanDivStd.nii.gz`, `OTMultiClass.nii.gz`), `hc18`
the HC18 challenge's training set of fetal head ultrasound (`training_set/NNN_HC.png` with
`NNN_HC_Annotation.png`, the head a filled ellipse, and `training_set_pixel_size_and_HC.csv`
with each image's mm per pixel and the sonographer's head circumference).
`drive_table`, `brats_table` and `hc18_table` convert them into a CSV with a `split` column (and
DRIVE's vessels and HC18's heads into PNG label maps) in a temporary folder, which both tools read.

- ours: prepare, then `python -m stages.train` and `python -m stages.evaluate` in a work folder
  (benchmarks/volumes.py's `setup` and `run_stage`); its figures and their 95% bootstrap
  intervals from eval/figures.json.
- MONAI: benchmarks/monai_baseline.py's UNet, loss and schedule, on patches of the same size,
  for as much CPU time as our train stage's process took (start-up, validation and checkpoints
  included; MONAI's training loop alone). CPU time, not wall time: on a machine shared with other
  work the wall time of a run measures the others' load as much as the run. Its number of
  patches comes from its rate in a run of 16 steps, so that its cosine schedule ends where
  training does; it runs again when it finished over 10% short. DRIVE: the RGB images' min-max
  scaled to 0..1, RandCropByPosNegLabeld (a third of the patches on vessels). BraTS:
  benchmarks/volumes.py's `monai_run` (RAS, Spacingd to the same spacing, ScaleIntensityd),
  FLAIR and T1c as two channels.

Scoring: every mask at each image's own resolution (DRIVE 565x584; BraTS each label volume's own
grid, HD95 in mm), by cnn_factory.scores.masks.mask_scores for both tools, intervals by the same
bootstrap evaluate uses (its 1,000 resamples of the test images). DRIVE is scored over the
whole image (evaluate's figures, and MONAI's the same way) and inside the field-of-view mask (the
literature's convention: ours' masks from `cnn-factory predict`, both tools' predictions cut to
the FOV). BraTS: the whole tumour (every label value 1-4) as the mask, its volume in mL as a
learned number (`tumour_ml`, the truth's from the label volume) and as a measure of the predicted
mask (`tumour_volume`); Bland-Altman bias and 95% limits of agreement for both. HC18: the head
as the mask, scored at each image's own 800x540 pixels, and the head circumference measured on
the predicted mask in mm (the fitted ellipse's perimeter, its largest component, each row's own
pixel size) against the sonographer's (`hc_mm`): MAE, bias and limits of agreement, with the same
measure of the true masks as the floor the convention sets. MONAI: the same UNet on the whole
images resized to the same input size, its masks brought back to each image's size and measured
by the same function. Writes benchmarks/real-<set>.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.monai_baseline import infer, train_unet
from benchmarks.volumes import ROOT, monai_run, run_stage, setup
from cnn_factory.images import read_image, write_image
from cnn_factory.scores.bootstrap import intervals
from cnn_factory.scores.masks import mask_scores, mask_summary
from cnn_factory.scores.numbers import agreement_summary
from cnn_factory.volumes import read_label_volume

MONAI_LR = 3e-3  # as benchmarks/large.py and volumes.py
RESAMPLES = 1000  # evaluate.bootstrap's default, seed 0: the intervals evaluate writes
FIGURES = ("dice", "dice_pooled", "hd95")
BRATS_SPLITS = {"train": "train", "validation": "val", "test": "test"}
BRATS_INPUTS = ("flair", "t1c")
BRATS_FILES = {"flair": "Flair_subtrMeanDivStd.nii.gz", "t1c": "T1c_subtrMeanDivStd.nii.gz"}


def drive_table(src: Path, out: Path, val: int = 3) -> list[dict]:
    """DRIVE as cnn-factory reads it: images/<id>.png (RGB), labels/<id>.png (1 on the first
    observer's vessels, else 0), fov/<id>.png (1 inside the field of view) and data.csv with
    `image`, `labels`, `fov` and `split`: the 20 official test images `test`, the last `val`
    training images `val`, the rest `train`. Returns the CSV's rows."""
    import imageio.v3 as iio

    for folder in ("images", "labels", "fov"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for part in ("training", "test"):
        images = sorted((src / part / "images").glob("*.tif"))
        for k, image in enumerate(images):
            case = image.stem.split("_")[0]
            vessels = _grey(src / part / "1st_manual" / f"{case}_manual1.gif")
            fov = _grey(src / part / "mask" / f"{image.stem}_mask.gif")
            rgb = iio.imread(image, plugin="pillow")  # LZW-compressed TIFF: Pillow decodes it, tifffile alone not
            write_image(out / "images" / f"{case}.png", rgb[..., :3])
            write_image(out / "labels" / f"{case}.png", (vessels > 127).astype(np.uint8))
            write_image(out / "fov" / f"{case}.png", (fov > 127).astype(np.uint8))
            split = "test" if part == "test" else "val" if k >= len(images) - val else "train"
            rows.append(
                {
                    "image": f"images/{case}.png",
                    "labels": f"labels/{case}.png",
                    "fov": f"fov/{case}.png",
                    "split": split,
                }
            )
    write_csv(out / "data.csv", rows)
    return rows


def _grey(path: Path) -> np.ndarray:
    """A GIF's first frame as (H, W) grey levels (imageio gives a GIF's frames as a stack)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def brats_table(src: Path, out: Path) -> list[dict]:
    """The BraTS cases as cnn-factory reads them: each case's FLAIR, T1c and label volume copied
    to out/<case>/, and data.csv with `flair`, `t1c`, `labels` (OTMultiClass: 0 outside, 1-4 the
    tumour's parts), `tumour_ml` (the whole tumour's volume, every voxel labelled 1-4, in mL) and
    `split` (DeepMedic's train/validation/test folders). Returns the CSV's rows."""
    rows = []
    for folder, split in BRATS_SPLITS.items():
        for case in sorted(p for p in (src / folder).iterdir() if p.is_dir()):
            (out / case.name).mkdir(parents=True, exist_ok=True)
            for name in [*BRATS_FILES.values(), "OTMultiClass.nii.gz"]:
                shutil.copyfile(case / name, out / case.name / name)
            truth = read_label_volume(case / "OTMultiClass.nii.gz", case.name)
            ml = np.count_nonzero(truth.array > 0) * float(np.prod(truth.spacing)) / 1000
            row = {"case": case.name, **{c: f"{case.name}/{f}" for c, f in BRATS_FILES.items()}}
            rows.append({**row, "labels": f"{case.name}/OTMultiClass.nii.gz", "tumour_ml": f"{ml:.3f}", "split": split})
    write_csv(out / "data.csv", rows)
    return rows


def hc18_table(src: Path, out: Path) -> list[dict]:
    """HC18's training set as cnn-factory reads it: images/<name>.png (grey), labels/<name>.png (1
    on the head), data.csv with `image`, `labels`, `patient` (an image's number: NNN_2HC is NNN's
    second image), `pixel_mm`, `hc_mm` and `split` by patient: numbers ending in 0 or 5 `test`
    (a fifth), in 1 `val`, the rest `train`. Returns the CSV's rows."""
    for folder in ("images", "labels"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    with open(src / "training_set_pixel_size_and_HC.csv", newline="") as f:
        listed = list(csv.DictReader(f))
    rows = []
    for item in listed:
        name = item["filename"]
        shutil.copyfile(src / "training_set" / name, out / "images" / name)
        head = _grey(src / "training_set" / name.replace(".png", "_Annotation.png")) > 127
        write_image(out / "labels" / name, head.astype(np.uint8))
        patient = name.split("_")[0]
        split = "test" if int(patient) % 5 == 0 else "val" if int(patient) % 10 == 1 else "train"
        rows.append(
            {
                "image": f"images/{name}",
                "labels": f"labels/{name}",
                "patient": patient,
                "pixel_mm": item["pixel size(mm)"],
                "hc_mm": item["head circumference (mm)"],
                "split": split,
            }
        )
    write_csv(out / "data.csv", rows)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, [*rows[0]])
        writer.writeheader()
        writer.writerows(rows)


def params(data: Path, inputs: dict, outputs: dict, model: dict, train: dict, base: str = "params.yaml") -> dict:
    p = yaml.safe_load((ROOT / base).read_text())
    p["data"].update(csv=str(data / "data.csv"), root=str(data))
    p["data"]["split"].update(column="split")
    p["inputs"], p["outputs"] = inputs, outputs
    p["model"].update(model)
    p["train"].update(log_images_every=0, **train)
    return p


def drive_params(data: Path, patch: int, epochs: int, patches: int, batch: int) -> dict:
    """params.yaml's defaults (UNet of depth 3, 16 filters, Adam 0.003, cosine), RGB patches of
    `patch` px at the images' own resolution, the vessels as the mask."""
    image = {"type": "image", "size": [patch, patch], "channels": 3, "mode": "patch"}
    vessels = {"type": "segmentation", "column": "labels", "label": 1, "loss": "bce_dice"}
    train = {"epochs": epochs, "patches_per_epoch": patches, "batch_size": batch}
    return params(data, {"image": image}, {"vessels": vessels}, {"name": "drive"}, train)


def brats_params(data: Path, patch: tuple, spacing: float, epochs: int, patches: int, batch: int) -> dict:
    """The volume example's network and training (examples/volumes/params.yaml), FLAIR and T1c
    as two inputs at `spacing` mm, the whole tumour, its volume learned and measured; 16 fixed val
    patches an epoch (the example's 64 are 16x32x32, an eighth of these)."""
    size = {"type": "image", "size": list(patch), "channels": 1, "mode": "patch", "spacing": [spacing] * 3}
    inputs = {c: {**size, "column": c} for c in BRATS_INPUTS}
    outputs = {
        "tumour": {"type": "segmentation", "column": "labels", "label": [1, 2, 3, 4], "loss": "bce_dice"},
        "tumour_ml": {"type": "numeric", "loss": "mse", "weight": 0.5},
        "tumour_volume": {"type": "measure", "of": "tumour", "measure": "volume", "column": "tumour_ml"},
    }
    train = {"epochs": epochs, "patches_per_epoch": patches, "batch_size": batch, "val_patches": 16}
    return params(data, inputs, outputs, {"name": "brats"}, train, "examples/volumes/params.yaml")


HC = {"type": "measure", "of": "head", "measure": "ellipse_circumference", "components": "largest"}


def hc18_params(data: Path, size: tuple, epochs: int, batch: int) -> dict:
    """params.yaml's defaults (UNet of depth 3, 16 filters, Adam 0.003, cosine, its augmentation),
    the whole grey images resized to `size`, the head as the mask and its circumference measured."""
    image = {"type": "image", "size": list(size), "channels": 1}
    outputs = {
        "head": {"type": "segmentation", "column": "labels", "label": 1, "loss": "bce_dice"},
        "hc": {**HC, "column": "hc_mm", "spacing_column": "pixel_mm"},
    }
    train = {"epochs": epochs, "batch_size": batch}
    return params(data, {"image": image}, outputs, {"name": "hc18"}, train)


def ours(work: Path, p: dict, images: int = 0, stem: str | None = None) -> dict:
    """The train and evaluate stages in `work`: the train stage's seconds and eval/figures.json's
    test figures; `images`: the training images an epoch of whole images sees (patch mode: its
    patches); `stem`: model.stem instead of params.yaml's."""
    if stem:
        p["model"]["stem"] = stem
    setup(work, p)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, _ = run_stage(work, "train")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # the train stage's process
    evaluate_s, _ = run_stage(work, "evaluate")
    live = json.loads((work / "dvclive" / "metrics.json").read_text())
    figures = json.loads((work / "eval" / "figures.json").read_text())["test"]
    patches = p["train"]["epochs"] * (p["train"].get("patches_per_epoch") or images)
    saved = int(live["best"]["epoch"])
    return {
        "train_s": seconds, "cpu_s": cpu, "evaluate_s": evaluate_s, "patches": patches, "saved_epoch": saved,
        "figures": figures,
    }  # fmt: skip


def scored(rows: list[dict]) -> dict:
    """mask_summary of per-image mask_scores rows, with each of FIGURES' 95% bootstrap interval."""
    columns = {k: np.array([r[k] for r in rows], np.float64) for k in rows[0]}
    summary = mask_summary(columns)
    bounds = intervals(columns, mask_summary, FIGURES, RESAMPLES, seed=0)
    return {**{k: summary[k] for k in FIGURES}, **{f"{k}_ci": list(v) for k, v in bounds.items()}}


def equal_time(train: Callable[[int], dict], seconds: float, batch: int) -> dict:
    """MONAI trained for about `seconds` of CPU time (`cpu_s`, all its threads): its rate from a
    run of 16 steps, then as many patches as that rate gives (a fixed number: its cosine schedule
    ends with training), once more with the rate of that run where it finished over 10% early.
    CPU time, not wall time: on a shared machine the other work's load changes from one run to
    the next, and it moves the wall time of each run, not the CPU time it was given."""
    probe = train(16 * batch)
    rate = probe["patches"] / probe["cpu_s"]
    for _ in range(2):
        run = train(max(batch, round(rate * seconds / batch) * batch))
        if run["cpu_s"] >= 0.9 * seconds:
            break
        rate = run["patches"] / run["cpu_s"]
    return run


def drive_arrays(data: Path, row: dict) -> dict:
    """An image as MONAI's channel-first float tensor, min-max scaled to 0..1 (ScaleIntensity), and its label."""
    image = torch.as_tensor(read_image(data / row["image"]), dtype=torch.float32).permute(2, 0, 1)
    image = (image - image.min()) / (image.max() - image.min())
    label = torch.as_tensor(read_image(data / row["labels"]) > 0, dtype=torch.uint8)[None]
    return {"image": image, "label": label}


def monai_drive(data: Path, table: list[dict], patch: int, patches: int, batch: int, seed: int = 0) -> dict:
    """monai_baseline's UNet on `patches` RGB patches of the training images; the test images'
    vessels at their own size (softmax foreground over 0.5) as `masks`."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import RandCropByPosNegLabeld
    from monai.utils import set_determinism

    set_determinism(seed)
    torch.manual_seed(seed)
    train = [drive_arrays(data, r) for r in table if r["split"] == "train"]
    crops = RandCropByPosNegLabeld(["image", "label"], "label", (patch, patch), pos=1, neg=2, num_samples=4)
    loader = DataLoader(Dataset(train, crops), batch_size=max(1, batch // 4), shuffle=True, num_workers=0)
    start = time.perf_counter()
    model, seen, cpu = train_unet(
        2, loader, patches, batch, MONAI_LR, lambda item: item["label"], in_channels=3, clock=time.process_time
    )
    seconds = time.perf_counter() - start
    model.eval()
    masks = {}
    with torch.no_grad():
        for r in (r for r in table if r["split"] == "test"):
            logits = infer(model, drive_arrays(data, r)["image"][None], (patch, patch), 16)
            masks[r["image"]] = torch.softmax(logits[0], 0)[1].numpy() > 0.5
    return {"train_s": seconds, "cpu_s": cpu, "patches": seen, "masks": masks}


def drive_scores(data: Path, table: list[dict], masks: dict) -> dict:
    """Test masks ({image column: (H, W) bool}) scored over the whole image and inside the FOV."""
    whole, fov = [], []
    for r in (r for r in table if r["split"] == "test"):
        truth, inside = read_image(data / r["labels"]) > 0, read_image(data / r["fov"]) > 0
        whole.append(mask_scores(masks[r["image"]], truth, 2.0))
        fov.append(mask_scores(masks[r["image"]] & inside, truth & inside, 2.0))
    return {"whole": scored(whole), "fov": scored(fov)}


def predicted_masks(work: Path, data: Path, table: list[dict]) -> dict:
    """Our model's test masks at the images' own size, as `cnn-factory predict` writes them."""
    test = [r for r in table if r["split"] == "test"]
    write_csv(work / "test.csv", [{"image": str(data / r["image"])} for r in test])
    command = [sys.executable, "-m", "cnn_factory", "predict", "models/drive.pt", "test.csv", "--out", "predicted"]
    subprocess.run(command, cwd=work, check=True, capture_output=True)
    return {r["image"]: read_image(work / "predicted" / "vessels" / Path(r["image"]).name) > 127 for r in test}


def drive(src: Path, tmp: Path, args: argparse.Namespace) -> dict:
    data = tmp / "drive"
    table = drive_table(src, data)
    p = drive_params(data, args.patch, args.epochs, args.patches, args.batch)
    mine = ours(tmp / "ours", p, stem=args.stem)
    mine.update(drive_scores(data, table, predicted_masks(tmp / "ours", data, table)))
    monai = equal_time(lambda n: monai_drive(data, table, args.patch, n, args.batch), mine["cpu_s"], args.batch)
    monai.update(drive_scores(data, table, monai.pop("masks")))
    return {
        "ours": mine,
        "monai": monai,
        "rows": {s: sum(r["split"] == s for r in table) for s in ("train", "val", "test")},
    }


def brats(src: Path, tmp: Path, args: argparse.Namespace) -> dict:
    data = tmp / "brats"
    table = brats_table(src, data)
    patch = tuple(args.patch3)
    p = brats_params(data, patch, args.spacing, args.epochs, args.patches, args.batch)
    mine = ours(tmp / "ours", p, stem=args.stem)
    spacing = (args.spacing,) * 3

    def monai(n: int) -> dict:
        """monai_run, its training in CPU seconds (`cpu_s`); `run_s`: the whole run's wall time."""
        start = time.perf_counter()
        run = monai_run(
            data, table, spacing, patch, n, args.batch, MONAI_LR, inputs=BRATS_INPUTS, values=(1, 2, 3, 4),
            clock=time.process_time,
        )  # fmt: skip
        cpu = run.pop("train_s")
        return {**run, "cpu_s": cpu, "run_s": time.perf_counter() - start}

    other = equal_time(monai, mine["cpu_s"], args.batch)
    test = [r for r in table if r["split"] == "test"]
    truth_ml = np.array([float(r["tumour_ml"]) for r in test])
    other["tumour_volume"] = agreement_summary(truth_ml, np.array([s["pred_ml"] for s in other["scans"]]))
    other["per_case"] = {r["case"]: s["dice"] for r, s in zip(test, other["scans"])}
    other["grid"] = scored(other["scans"])  # as evaluate scores ours: each label volume's grid, HD95 in mm
    mine.update(per_case(tmp / "ours", table))
    return {"ours": mine, "monai": other, "cases": {r["case"]: r["split"] for r in table}}


def hc18(src: Path, tmp: Path, args: argparse.Namespace) -> dict:
    data = tmp / "hc18"
    table = hc18_table(src, data)
    size = tuple(args.size)
    train = sum(r["split"] == "train" for r in table)
    mine = ours(tmp / "ours", hc18_params(data, size, args.epochs, args.batch), train, args.stem)
    monai = equal_time(lambda n: monai_hc18(data, table, size, n, args.batch), mine["cpu_s"], args.batch)
    monai.update(hc18_scores(data, table, monai.pop("masks")))
    truth = hc18_scores(data, table, {r["image"]: read_image(data / r["labels"]) > 0 for r in table})
    return {
        "ours": mine,
        "monai": monai,
        "true_masks": truth["hc"],
        "rows": {s: sum(r["split"] == s for r in table) for s in ("train", "val", "test")},
    }


def hc18_arrays(data: Path, row: dict, size: tuple) -> dict:
    """An image resized to `size` (bilinear) and min-max scaled to 0..1, its label resized (nearest)."""
    import torch.nn.functional as F

    image = torch.as_tensor(read_image(data / row["image"]), dtype=torch.float32)[None, None]
    image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    label = torch.as_tensor(read_image(data / row["labels"]), dtype=torch.float32)[None, None]
    label = F.interpolate(label, size=size, mode="nearest")[0].to(torch.uint8)
    return {"image": (image - image.min()) / (image.max() - image.min()), "label": label}


def monai_hc18(data: Path, table: list[dict], size: tuple, images: int, batch: int, seed: int = 0) -> dict:
    """monai_baseline's UNet on `images` whole training images resized to `size`; the test images'
    heads brought back to their own size (bilinear probabilities, softmax foreground over 0.5)."""
    import torch.nn.functional as F
    from monai.data import DataLoader
    from monai.utils import set_determinism

    set_determinism(seed)
    torch.manual_seed(seed)
    train = [hc18_arrays(data, r, size) for r in table if r["split"] == "train"]
    loader = DataLoader(train, batch_size=batch, shuffle=True, num_workers=0)
    start = time.perf_counter()
    model, seen, cpu = train_unet(
        2, loader, images, batch, MONAI_LR, lambda item: item["label"], clock=time.process_time
    )
    seconds = time.perf_counter() - start
    model.eval()
    masks = {}
    with torch.no_grad():
        for r in (r for r in table if r["split"] == "test"):
            own = read_image(data / r["image"]).shape
            probs = torch.softmax(model(hc18_arrays(data, r, size)["image"][None]), 1)[:, 1:]
            masks[r["image"]] = F.interpolate(probs, size=own, mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5
    return {"train_s": seconds, "cpu_s": cpu, "patches": seen, "masks": masks}


def hc18_scores(data: Path, table: list[dict], masks: dict) -> dict:
    """Test masks ({image column: (H, W) bool} at each image's size) scored against the heads
    (`whole`: dice, HD95 in pixels), and their circumference in mm against `hc_mm` (`hc`)."""
    from cnn_factory.scores.measures import measure

    rows, truth, measured = [], [], []
    for r in (r for r in table if r["split"] == "test"):
        rows.append(mask_scores(masks[r["image"]], read_image(data / r["labels"]) > 0, 2.0))
        mm = float(r["pixel_mm"])
        measured.append(measure(HC["measure"], masks[r["image"]], (mm, mm), HC["components"]))
        truth.append(float(r["hc_mm"]))
    return {"whole": scored(rows), "hc": agreement_summary(np.array(truth), np.array(measured))}


def per_case(work: Path, table: list[dict]) -> dict:
    """Our per-case dice and the learned head's Bland-Altman figures, from eval/per_image.csv
    (`csv_row`: the row's line in data.csv, the header line 1)."""
    with open(work / "eval" / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    dice = {table[int(row["csv_row"]) - 2]["case"]: float(row["tumour/dice"]) for row in rows}
    true, head = (np.array([float(row[f"tumour_ml/{k}"]) for row in rows]) for k in ("true", "predicted"))
    return {"per_case": dice, "tumour_ml_agreement": agreement_summary(true, head)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=("drive", "brats", "hc18"))
    parser.add_argument("folder", type=Path, help="the data set, unpacked (see the module's docstring)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--patches", type=int, default=None, help="patches per epoch")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--stem", choices=("auto", "full", "strided"), help="model.stem for ours (default: params')")
    parser.add_argument("--quick", action="store_true", help="a few patches: the smoke run (figures mean nothing)")
    args = parser.parse_args()
    defaults = {"drive": (20, 256, 8), "brats": (20, 64, 4), "hc18": (20, 0, 16)}[args.set]
    quick = {"drive": (1, 16, 8), "brats": (1, 8, 4), "hc18": (1, 0, 16)}[args.set]
    epochs, patches, batch = quick if args.quick else defaults
    args.epochs, args.patches, args.batch = args.epochs or epochs, args.patches or patches, args.batch or batch
    args.patch, args.patch3, args.spacing, args.size = 96, (32, 64, 64), 2.0, (128, 192)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"cnn-factory-real-{args.set}-") as tmp:
        results = {"drive": drive, "brats": brats, "hc18": hc18}[args.set](args.folder, Path(tmp), args)
    patch = {"drive": args.patch, "brats": args.patch3, "hc18": args.size}[args.set]
    results["conditions"] = {
        "epochs": args.epochs, "patches_per_epoch": args.patches or None, "batch": args.batch,
        "patch": patch, "spacing_mm": args.spacing if args.set == "brats" else None, "stem": args.stem or "auto",
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "wall_s": time.perf_counter() - start,
    }  # fmt: skip
    for r in (results["ours"], results["monai"]):
        r.pop("scans", None)
    (ROOT / "benchmarks" / f"real-{args.set}.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    report(results)


def shown(figures: dict, name: str, digits: int = 3) -> str:
    """`name`'s value and its interval, from our figures.json (`_ci_low`, `_ci_high`) or scored() (`_ci`)."""
    low, high = figures.get(f"{name}_ci", (figures.get(f"{name}_ci_low"), figures.get(f"{name}_ci_high")))
    interval = f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None else ""
    return f"{figures[name]:.{digits}f}{interval}"


def report(results: dict) -> None:
    for tool in ("ours", "monai"):
        r = results[tool]
        wall = f"{r['train_s']:.0f} s wall, " if "train_s" in r else f"(the run {r['run_s']:.0f} s wall) "
        print(f"{tool}: trained {wall}{r['cpu_s']:.0f} CPU s, {r['patches']} patches")
        mask = next((v for v in r.get("figures", {}).values() if "dice" in v), None)  # evaluate's, ours only
        places = [
            ("evaluate", mask),
            ("whole image", r.get("whole")),
            ("inside the FOV", r.get("fov")),
            ("each scan's grid", r.get("grid")),
        ]
        for where, figures in places:
            if figures:
                dice, pooled, hd95 = (shown(figures, k) for k in ("dice", "dice_pooled", "hd95"))
                print(f"  {where}: dice {dice}, pooled {pooled}, HD95 {hd95}")
        if "per_case" in r:
            print("  per case: " + ", ".join(f"{case} {dice:.3f}" for case, dice in r["per_case"].items()))
        measured = r.get("figures", {}).get("tumour_volume", r.get("tumour_volume"))
        circumference = r.get("figures", {}).get("hc", r.get("hc"))
        for name, figures, unit in (
            ("volume of the mask", measured, "mL"),
            ("learned tumour_ml", r.get("tumour_ml_agreement"), "mL"),
            ("head circumference of the mask", circumference, "mm"),
        ):
            if figures:
                print(
                    f"  {name}: MAE {figures['mae']:.1f} {unit}, bias {figures['bias']:.1f} {unit}, "
                    f"limits of agreement [{figures['loa_low']:.1f}, {figures['loa_high']:.1f}] {unit}"
                )
    if "true_masks" in results:
        t = results["true_masks"]
        print(f"true masks' circumference against hc_mm (the convention's floor): MAE {t['mae']:.2f} mm, "
              f"bias {t['bias']:.2f} mm")  # fmt: skip


if __name__ == "__main__":
    main()

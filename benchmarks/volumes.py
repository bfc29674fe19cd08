"""Volumes: cnn-factory's patch training of 3-D scans against a plain MONAI 3-D pipeline, in one run.

    python -m benchmarks.volumes [--rows 60] [--epochs 16] [--patches 128] [--quick] [--resources]
                                 [--no-ours] [--model '{"filters": 8}']
                                 [--defaults [--full] [--seed 0] [--saved-by val/tumour/dice]]

On generated scans (cnn_factory/data/volumes_example.py at `size` (32, 64, 64): 27-37 slices of
2.5-4 mm, 54-74 pixels of 0.8-1.2 mm a side, an organ with a round tumour, 0.2-2% of the
voxels, 0.8% at the median; an image-level `grade` (low, high) and the tumour's volume
`tumour_ml`), the tumour (label 2) is the mask: the organ is a sixth of each scan and too easy,
and labels 1 and 3 are the organ's parts outside the tumour. The split is a `split` column
written into data.csv (seeded: 10% val, 20% test), which both tools read. Both train on patches
of (16, 48, 48) voxels (depth, height, width: half the slices and three quarters of a slice's
side, divisible by 8 for 3 halvings), 8 a batch, at the target spacing of cnn-factory's `auto`
rule (nnU-Net's, over the training scans: about (3.2, 1.0, 1.0) mm, the medians). Sizes are
those of the issue's "64-128 voxels a side" at its low end, as 2 CPU cores allow. The default
run (2,048 patches per run: 16 epochs of 128 for ours) takes about 10 minutes on a quiet 2-core
machine; `--quick` (16 scans of ~16x32x32, 2 epochs of 16 patches of 8x16x16) about a minute,
its figures meaning nothing. `--model` puts model params over the example's (`--model '{"stem":
"full", "depth": 3, "filters": 8, "upsample": "bilinear"}'` is the network before `model.stem`).
Resampling a test scan's truth to the target spacing and back (the path both tools' predictions
take) keeps a dice of 0.92-0.99: the ceiling at these coarse grids.

Scored on the test scans at their OWN grid (each prediction brought back from the target
spacing onto its label volume's voxels, probabilities interpolated, then thresholded at 0.5):
dice pooled over all test voxels and the mean of the scans' dice, and the mean HD95 in mm, from
`cnn_factory.scores.masks.mask_scores(pred, truth, tolerance, spacing)` for both tools.

- cnn-factory, `inputs.image` a volume input in `mode: patch` with `spacing: auto` and `window:
  null` (each scan's 0.5th percentile to its maximum to 0..255, cubic resampling), the training settings
  of examples/volumes/params.yaml (its augmentation, 64 val patches an epoch, the saved epoch by
  val/relative_loss): the train and evaluate stages as DVC runs them, and its network: a UNet
  with the strided stem, depth 2 and 16 filters (16 to 64 channels at 1/2 to 1/8 of the
  resolution), transposed up-sampling; a mask only (`tumour`), and again with `grade` (a
  category) and `tumour_ml` (a number) beside it. Figures from eval/figures.json.
- a plain MONAI pipeline as its 3-D segmentation tutorials build one (spleen, BraTS):
  LoadImaged, EnsureChannelFirstd, Orientationd (RAS), Spacingd to the same target spacing
  (bilinear image, nearest labels), ScaleIntensityd (each scan's min-max to 0..1), SpatialPadd
  to the patch (a few scans are narrower once resampled), cached by CacheDataset;
  RandCropByPosNegLabeld (pos 1, neg 2: a third of the patches on foreground, as ours; 4 a scan;
  no other augmentation); UNet(spatial_dims=3, 16-128 channels, two residual units per level)
  with background and foreground channels, DiceCELoss(to_onehot_y, softmax), Adam with a cosine
  schedule; sliding_window_inference (overlap 0.5, Gaussian blending), the softmax brought back
  onto each scan's grid with ResampleToMatch (by the affines). At the same number of training
  patches as cnn-factory, and again for as long as our mask-only run trained (at least 97% of
  its time: a second try where MONAI ran faster than its first run said).
- `--defaults`: what a user who writes params by hand gets. 120 scans of ~24x96x96 voxels (slices
  2.5-4 mm apart, pixels 0.8-1.2 mm), params.yaml's own defaults with only the inputs (a volume
  input of 16x48x48 in patch mode), the outputs (`tumour` and `tumour_ml`, a number per scan
  beside the mask) and the patch section set (30 epochs of 128 patches, batch 4); MONAI at the
  same 3,840 patches and for as long as our train stage, and the two runs' difference in pooled
  dice, paired on the test scans (`paired_dice`). `--full` adds the same params with `model.stem:
  full` (the default before `auto`; about 3x the time); `--seed` seeds both tools, `--saved-by`
  sets our `train.early_stopping.metric`.
- `--resources`: peak RSS of a short train stage on 1x and 4x the scans, and the train stage's
  patches/s end to end over the bare step, over 10 epochs of 256 patches (benchmarks/large.py's
  measures, on volumes).

Training time is wall time of the training alone (cnn-factory: the train stage, start-up,
validation and checkpoints included; MONAI: its loop, no validation, CacheDataset's loading and
resampling not counted, as prepare is not). Writes benchmarks/volumes.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
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
from cnn_factory.data.resample import target_spacing
from cnn_factory.data.volumes_example import make_volume_example
from cnn_factory.scores.bootstrap import percentile_bounds, resample_indices
from cnn_factory.scores.masks import mask_scores, mask_summary
from cnn_factory.volumes import read_label_volume, read_volume

ROOT = Path(__file__).resolve().parents[1]
MONAI_LR = 3e-3  # Adam's for MONAI, cnn-factory's default: of 1e-3 and 3e-3 the better at 1,024 patches (0.867, 0.902)
TUMOUR = 2  # the label value of the mask benchmarked
TOLERANCE = 2.0  # surface dice's tolerance, mm
SPLIT = {"val": 0.1, "test": 0.2}

OUTPUTS = {
    "tumour": {"type": "segmentation", "column": "labels", "label": TUMOUR, "loss": "bce_dice", "weight": 1.0},
    "grade": {"type": "category", "classes": ["low", "high"], "loss": "categorical_crossentropy", "weight": 0.5},
    "tumour_ml": {"type": "numeric", "weight": 0.3},
}


def make_data(out: Path, rows: int, size: tuple[int, int, int], seed: int = 0) -> list[dict]:
    """The generated scans, and a `split` column in data.csv (seeded fractions, as prepare draws
    them) that both tools read; returns the CSV's rows."""
    make_volume_example(out, rows, size=size, seed=seed)
    with open(out / "data.csv", newline="") as f:
        table = list(csv.DictReader(f))
    n_val, n_test = round(rows * SPLIT["val"]), round(rows * SPLIT["test"])
    for k, i in enumerate(np.random.default_rng(seed).permutation(rows)):
        table[i]["split"] = "val" if k < n_val else "test" if k < n_val + n_test else "train"
    with open(out / "data.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*table[0]])
        writer.writeheader()
        writer.writerows(table)
    return table


def files(data: Path, table: list[dict], split: str, inputs: tuple[str, ...] = ("image",)) -> list[dict]:
    """MONAI's items of a split: the image's file (a list of files, one a channel, for several
    `inputs` columns) and the label volume's."""

    def image(r: dict) -> str | list[str]:
        return str(data / r[inputs[0]]) if len(inputs) == 1 else [str(data / r[c]) for c in inputs]

    return [{"image": image(r), "label": str(data / r["labels"])} for r in table if r["split"] == split]


def the_target(data: Path, table: list[dict]) -> tuple[float, float, float]:
    """cnn-factory's `spacing: auto` over the training scans (nnU-Net's rule), mm per (D, H, W)."""
    train = [read_volume(Path(f["image"]), f["image"]) for f in files(data, table, "train")]
    d, h, w = target_spacing([s.spacing for s in train], [s.shape for s in train])
    return d, h, w


def params(
    data: Path, patch: tuple[int, int, int], epochs: int, patches: int, batch: int,
    outputs: tuple[str, ...] = ("tumour", "grade", "tumour_ml"), model: dict | None = None,
) -> dict:  # fmt: skip
    p = yaml.safe_load((ROOT / "examples" / "volumes" / "params.yaml").read_text())  # volumes' defaults
    p["data"].update(csv=str(data / "data.csv"), root=str(data))
    p["data"]["split"].update(column="split")
    p["inputs"] = {"image": {"type": "image", "size": list(patch), "channels": 1, "mode": "patch", "spacing": "auto"}}
    p["outputs"] = {name: OUTPUTS[name] for name in outputs}
    p["model"].update(model or {})  # the example's network unless told
    p["train"].update(epochs=epochs, batch_size=batch, patches_per_epoch=patches, log_images_every=0)
    return p


def default_params(
    data: Path, patch: tuple[int, int, int], epochs: int, patches: int, batch: int, model: dict | None = None
) -> dict:  # fmt: skip
    """params.yaml's own defaults, as a user who writes only inputs, outputs and the patch section
    has them: a volume input of `patch` voxels in patch mode, the tumour and its volume in mL."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(csv=str(data / "data.csv"), root=str(data))
    p["data"]["split"].update(column="split")
    p["inputs"] = {"image": {"type": "image", "size": list(patch), "channels": 1, "mode": "patch"}}
    p["outputs"] = {name: OUTPUTS[name] for name in ("tumour", "tumour_ml")}
    p["model"].update(model or {})
    p["train"].update(epochs=epochs, batch_size=batch, patches_per_epoch=patches)
    return p


def run_stage(folder: Path, stage: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}"], cwd=folder, env=env, capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"stages.{stage} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start, result.stdout


def setup(work: Path, p: dict) -> None:
    """A work folder with its params.yaml and the prepared data, as `dvc repro` leaves it before train."""
    from cnn_factory.config import parse_params
    from cnn_factory.data.prepare import prepare

    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    prepare(parse_params(p), work / "data" / "prepared", None, workers=2)


def ours(work: Path, p: dict) -> dict:
    """cnn-factory's train and evaluate stages in `work`; the test figures of eval/figures.json."""
    setup(work, p)
    seconds, text = run_stage(work, "train")
    run_stage(work, "evaluate")
    metrics = json.loads((work / "eval" / "figures.json").read_text())["test"]
    live = json.loads((work / "dvclive" / "metrics.json").read_text())
    mask = metrics["tumour"]
    with open(work / "eval" / "per_image.csv", newline="") as f:
        scans = [
            {"image": r["image"], **{k: float(r[f"tumour/{k}"]) for k in ("tp", "truth_px", "pred_px")}}
            for r in csv.DictReader(f)
        ]
    return {
        "train_s": seconds,
        "dice": mask["dice_pooled"],
        "dice_mean": mask["dice"],
        "hd95_mm": mask.get("hd95"),  # in mm where evaluate scores volumes with their spacing
        "grade_accuracy": metrics.get("grade", {}).get("accuracy"),
        "tumour_ml_mae": metrics.get("tumour_ml", {}).get("mae"),
        "saved_epoch": int(live["best"]["epoch"]),
        "patches": p["train"]["epochs"] * p["train"]["patches_per_epoch"],
        "loop_s": loop_seconds(text, p["train"]["patches_per_epoch"]),  # the epochs' training alone
        "target_spacing_mm": json.loads((work / "data" / "prepared" / "manifest.json").read_text())["spacing"],
        "scans": scans,  # each test scan's true positives, true and predicted voxels, for paired_dice
    }


def paired_dice(ours: list[dict], theirs: list[dict], resamples: int = 10_000) -> tuple[float, float, float]:
    """Ours minus theirs in pooled dice on the same test scans (rows with `image`, `tp`, `truth_px`,
    `pred_px`), and the 95% interval of a paired bootstrap over the scans."""
    by_name = {s["image"]: s for s in theirs}
    a = np.array([[s[k] for k in ("tp", "truth_px", "pred_px")] for s in ours])
    b = np.array([[by_name[s["image"]][k] for k in ("tp", "truth_px", "pred_px")] for s in ours])
    picks = resample_indices(len(a), resamples)  # the draws `cnn-factory compare` pairs two runs on

    def pooled(counts: np.ndarray) -> np.ndarray:  # (..., scans, 3) -> (...)
        return 2 * counts[..., 0].sum(-1) / (counts[..., 1].sum(-1) + counts[..., 2].sum(-1))

    bounds = percentile_bounds(pooled(a[picks]) - pooled(b[picks]))
    assert bounds is not None, "no test scans to pair"
    return float(pooled(a) - pooled(b)), *bounds


def loop_seconds(text: str, patches: int) -> float:
    """The train stage's time in its training loop, from the patches/s it prints per epoch."""
    return sum(patches / float(v) for v in re.findall(r"^epoch \d+/\d+ .* (\d+) img/s$", text, flags=re.M))


def monai_run(
    data: Path, table: list[dict], spacing: tuple[float, float, float], patch: tuple[int, int, int],
    patches: int, batch: int, lr: float, seed: int = 0, inputs: tuple[str, ...] = ("image",),
    values: tuple[int, ...] = (TUMOUR,), clock: Callable[[], float] = time.perf_counter,
) -> dict:  # fmt: skip
    """A plain MONAI 3-D patch pipeline on the same files, `patches` training patches of `patch`
    (D, H, W) voxels at `spacing` (mm per D, H, W), scored at each test scan's own grid; the
    `inputs` columns are its channels, the label `values` its foreground; `train_s` by `clock`."""
    from monai.data import CacheDataset, DataLoader, Dataset
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        Lambdad,
        LoadImaged,
        Orientationd,
        RandCropByPosNegLabeld,
        ScaleIntensityd,
        Spacingd,
        SpatialPadd,
    )
    from monai.utils import set_determinism

    set_determinism(seed)
    torch.manual_seed(seed)
    # MONAI's arrays are NIfTI's (i, j, k) = (W, H, D): sizes and spacings reversed
    roi, pixdim = tuple(reversed(patch)), tuple(reversed(spacing))
    keys = ["image", "label"]
    load = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        Lambdad("label", lambda x: torch.isin(x, torch.tensor(values)).to(torch.uint8)),  # the mask's labels
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=pixdim, mode=("bilinear", "nearest")),
        ScaleIntensityd("image"),
        SpatialPadd(keys, roi),  # a scan narrower than a patch after resampling: zeros around it, as ours
    ]
    crops = RandCropByPosNegLabeld(keys, "label", roi, pos=1, neg=2, num_samples=4)
    cached = CacheDataset(files(data, table, "train", inputs), Compose(load), num_workers=0, progress=False)
    train = Dataset(cached, crops)  # the random crops of the cached, resampled scans, as the tutorials
    loader = DataLoader(train, batch_size=batch // 4, shuffle=True, num_workers=0)
    model, seen, train_s = train_unet(
        3, loader, patches, batch, lr, target=lambda item: item["label"], in_channels=len(inputs), clock=clock
    )
    return {"train_s": train_s, **monai_scores(model, data, table, load, roi, inputs, values), "patches": seen}


def monai_scores(
    model: torch.nn.Module, data: Path, table: list[dict], load: list, roi: tuple,
    inputs: tuple[str, ...] = ("image",), values: tuple[int, ...] = (TUMOUR,),
) -> dict:  # fmt: skip
    """The test scans through sliding_window_inference, the foreground probability back on each
    scan's own grid (ResampleToMatch by the affines), thresholded at 0.5; mask_scores in mm, the
    summary and each scan's row (`scans`: its scores and the predicted mask's volume in mL)."""
    from monai.data import Dataset, MetaTensor
    from monai.transforms import Compose, ResampleToMatch

    model.eval()
    back = ResampleToMatch(mode="bilinear", padding_mode="border")
    scores, start = [], time.perf_counter()
    test = files(data, table, "test", inputs)
    with torch.no_grad():
        for f, item in zip(test, Dataset(test, Compose(load))):
            logits = infer(model, item["image"][None], roi, 8)
            probs = torch.softmax(logits[0], 0)[1:]  # (1, W', H', D') at the target spacing, its affine
            truth = read_label_volume(Path(f["label"]), f["label"])  # (D, H, W), the file's own grid
            first = f["image"] if isinstance(f["image"], str) else f["image"][0]
            grid = read_volume(Path(first), first)
            dst = MetaTensor(torch.zeros(1, *reversed(grid.shape)), affine=nifti_affine(grid.affine))
            on_grid = back(probs, dst)[0].numpy().transpose(2, 1, 0) > 0.5  # (W, H, D) -> (D, H, W)
            row = mask_scores(on_grid, np.isin(truth.array, values), TOLERANCE, truth.spacing)
            scores.append({**row, "pred_ml": row["pred_px"] * float(np.prod(truth.spacing)) / 1000})
    columns = {k: np.array([s[k] for s in scores]) for k in scores[0]}
    names = [r[inputs[0]] for r in table if r["split"] == "test"]  # as the CSV names them, as ours
    scores = [{"image": name, **s} for name, s in zip(names, scores)]
    summary = mask_summary(columns)
    return {
        "dice": summary["dice_pooled"],
        "dice_mean": summary["dice"],
        "hd95_mm": summary["hd95"],
        "nsd": summary["nsd"],
        "grade_accuracy": None,
        "tumour_ml_mae": None,
        "infer_s": time.perf_counter() - start,
        "scans": scores,
    }


def nifti_affine(affine: np.ndarray) -> torch.Tensor:
    """cnn-factory's (d, h, w) affine as MONAI's, NIfTI's (i, j, k) = (w, h, d) columns."""
    return torch.as_tensor(np.asarray(affine, float)[:, [2, 1, 0, 3]])


def peak_rss(tmp: Path, name: str, rows: int, size: tuple[int, int, int], patch: tuple, batch: int, model: dict) -> int:
    """Peak RSS (bytes) of one short train stage on `rows` generated scans of about `size` voxels."""
    data, work = tmp / f"{name}-data", tmp / name
    make_data(data, rows, size, seed=1)
    setup(work, params(data, patch, 1, 64, batch, ("tumour",), model))
    peak = work / "peak_rss"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    peak_py = str(Path(__file__).with_name("peak.py"))
    command = [sys.executable, peak_py, str(peak), sys.executable, "-m", "stages.train"]
    subprocess.run(command, cwd=work, env=env, check=True, capture_output=True)
    return int(peak.read_text())


def efficiency(
    tmp: Path, size: tuple[int, int, int], patch: tuple, batch: int, epochs: int, patches: int, model: dict
) -> dict:
    """Patches/s of the train stage end to end (start-up, sampling, validation with the default
    params, logging, checkpoints) over the bare step on a batch in memory, measured before and after."""
    from benchmarks.measure import pure_step_rate
    from cnn_factory.config import parse_params

    data, work = tmp / "eff-data", tmp / "eff"
    make_data(data, 40, size, seed=2)
    p = params(data, patch, epochs, patches, batch, ("tumour",), model)
    setup(work, p)
    cfg, cpu = parse_params(p), torch.device("cpu")
    before = pure_step_rate(cfg, work / "data" / "prepared", cpu, 20)
    seconds, text = run_stage(work, "train")
    after = pure_step_rate(cfg, work / "data" / "prepared", cpu, 20)
    bare = (before + after) / 2
    end_to_end = epochs * patches / seconds
    speeds = [float(v) for v in re.findall(r"^epoch \d+/\d+ .* (\d+) img/s$", text, flags=re.M)]
    loop = epochs * patches / sum(patches / v for v in speeds) if speeds else math.nan
    return {
        "bare_patches_per_s": bare,
        "stage_patches_per_s": end_to_end,
        "efficiency": end_to_end / bare,
        "loop_patches_per_s": loop,
        "loop_efficiency": loop / bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--patches", type=int, default=128, help="patches per epoch")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="small scans, few patches: the smoke run")
    parser.add_argument("--resources", action="store_true", help="only peak RSS and training efficiency")
    parser.add_argument("--no-ours", action="store_true", help="MONAI only (cnn-factory's runs left out)")
    parser.add_argument("--defaults", action="store_true", help="params.yaml's defaults on 120 scans of ~24x96x96")
    parser.add_argument("--full", action="store_true", help="--defaults: also with model.stem full (slow)")
    parser.add_argument("--seed", type=int, default=0, help="--defaults: train.seed, and MONAI's seed")
    parser.add_argument(
        "--saved-by",
        metavar="METRIC",
        help="--defaults: train.early_stopping.metric (mode max for dice), e.g. val/tumour/dice",
    )
    parser.add_argument(
        "--model", type=json.loads, default={}, help="model params over the example's, e.g. '{\"filters\": 8}'"
    )
    args = parser.parse_args()
    args.size, args.patch = (32, 64, 64), (16, 48, 48)
    if args.defaults:
        args.rows, args.epochs, args.patches, args.batch, args.size = 120, 30, 128, 4, (24, 96, 96)
    if args.quick:
        args.rows, args.epochs, args.patches, args.batch = 16, 2, 16, 8
        args.size, args.patch = (16, 32, 32), (8, 16, 16)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="cnn-factory-volumes-") as tmp:
        if args.resources:
            resources(Path(tmp), args, results)
            return finish(results, args)
        data = Path(tmp) / "scans"
        table = make_data(data, args.rows, args.size)
        spacing = the_target(data, table)
        patches = args.epochs * args.patches
        shape = (args.patch, args.epochs, args.patches, args.batch)
        mask, every = ("tumour",), ("tumour", "grade", "tumour_ml")
        results["monai"] = monai_run(data, table, spacing, args.patch, patches, args.batch, MONAI_LR, args.seed)
        if args.defaults:
            defaults(Path(tmp), data, table, spacing, args, results)
        elif not args.no_ours:
            results["mask"] = ours(Path(tmp) / "mask", params(data, *shape, mask, args.model))
            results["all"] = ours(Path(tmp) / "all", params(data, *shape, every, args.model))
            results["monai_same_time"] = same_time(data, table, spacing, args, results["mask"]["train_s"], results)
        results["target_spacing_mm"] = spacing
        results["test_scans"] = sum(r["split"] == "test" for r in table)
        results["train_scans"] = sum(r["split"] == "train" for r in table)
    finish(results, args)


def defaults(tmp: Path, data: Path, table: list[dict], spacing: tuple, args: argparse.Namespace, results: dict) -> None:
    """params.yaml's defaults (a mask and a number), MONAI for as long, and with `--full` the same
    params with `model.stem: full` (the default before `auto`)."""
    shape = (args.patch, args.epochs, args.patches, args.batch)
    p = default_params(data, *shape, args.model)
    p["train"]["seed"] = args.seed
    if args.saved_by:
        mode = "max" if args.saved_by.rsplit("/", 1)[-1] in ("dice", "iou", "accuracy", "f1_macro") else "min"
        p["train"]["early_stopping"].update(metric=args.saved_by, mode=mode)
    results["defaults"] = ours(tmp / "defaults", p)
    seconds = results["defaults"]["train_s"]
    results["monai_same_time"] = same_time(data, table, spacing, args, seconds, results)
    results["paired_dice"] = paired_dice(results["defaults"]["scans"], results["monai_same_time"]["scans"])
    if args.full:
        results["defaults_full"] = ours(tmp / "full", default_params(data, *shape, {**args.model, "stem": "full"}))


def same_time(
    data: Path, table: list[dict], spacing: tuple, args: argparse.Namespace, ours_s: float, results: dict
) -> dict:
    """MONAI trained for `ours_s` seconds (our train stage's): its patches from its own rate (a
    fixed number, so that its cosine schedule ends where training does), run again with that
    run's rate while it took more than 3% more or less time than ours (its speed varies from run
    to run, and with the number of patches); of the tries, the one closest to our time."""
    rate, tries = results["monai"]["patches"] / results["monai"]["train_s"], []
    for _ in range(3):
        same = max(args.batch, round(rate * ours_s / args.batch) * args.batch)
        tries.append(monai_run(data, table, spacing, args.patch, same, args.batch, MONAI_LR, args.seed))
        if abs(tries[-1]["train_s"] - ours_s) <= 0.03 * ours_s:
            break
        rate = tries[-1]["patches"] / tries[-1]["train_s"]
    return min(tries, key=lambda run: abs(run["train_s"] - ours_s))


def resources(tmp: Path, args: argparse.Namespace, results: dict) -> None:
    """Peak RSS at 1x and 4x the scans, and the train stage's efficiency over the bare step."""
    base = max(args.rows // 2, 10)
    results["peak_rss"] = {
        f"{n} scans of ~{'x'.join(map(str, args.size))}": peak_rss(
            tmp, f"rss{n}", n, args.size, args.patch, args.batch, args.model
        )
        for n in (base, 4 * base)
    }
    epochs, patches = (2, args.patches) if args.quick else (10, 256)  # as benchmarks/large.py: minutes of training
    results["efficiency"] = efficiency(tmp, args.size, args.patch, args.batch, epochs, patches, args.model)


def finish(results: dict, args: argparse.Namespace) -> None:
    results["conditions"] = {
        "rows": args.rows, "scan": args.size, "epochs": args.epochs, "patches_per_epoch": args.patches,
        "patch": args.patch, "batch": args.batch, "threads": torch.get_num_threads(), "seed": args.seed,
        "saved_by": args.saved_by,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    name = "volumes-resources.json" if args.resources else "volumes.json"
    (ROOT / "benchmarks" / name).write_text(json.dumps(results, indent=2) + "\n")
    report(results)


def report(results: dict) -> None:
    c = results["conditions"]
    patch = "x".join(map(str, c["patch"]))
    if "monai" in results:
        spacing = ", ".join(f"{s:.2f}" for s in results["target_spacing_mm"])
        scan = "x".join(map(str, c["scan"]))
        print(
            f"{results['train_scans']} training and {results['test_scans']} test scans of ~{scan} voxels; "
            f"patches {patch} at ({spacing}) mm; tumour dice and HD95 at each scan's own grid"
        )
        head = f"{'run':<42} {'dice, pooled':>12} {'dice, mean':>10} {'HD95 mm':>7} {'grade acc':>9}"
        print(f"{head} {'mL MAE':>6} {'training':>9} {'patches':>8}")
        names = {
            "mask": "cnn-factory, mask only",
            "all": "cnn-factory, mask + grade + tumour_ml",
            "defaults": "cnn-factory, params.yaml's defaults (+ tumour_ml)",
            "defaults_full": "the same with model.stem full",
            "monai": "MONAI, same patches",
            "monai_same_time": f"MONAI, same time as {'the defaults' if 'defaults' in results else 'mask only'}",
        }
        for key, name in names.items():
            if key not in results:
                continue
            r = results[key]
            figures = [
                f"{r[k]:.3f}" if r.get(k) is not None else "-" for k in ("hd95_mm", "grade_accuracy", "tumour_ml_mae")
            ]
            print(
                f"{name:<42} {r['dice']:>12.4f} {r['dice_mean']:>10.4f} {figures[0]:>7} {figures[1]:>9} "
                f"{figures[2]:>6} {r['train_s']:>8.0f}s {r['patches']:>8}"
            )
        if "mask" in results:
            ours_spacing = results["mask"]["target_spacing_mm"]
            if not np.allclose(ours_spacing, results["target_spacing_mm"], rtol=1e-4):
                print(f"NOTE: prepare resampled to {ours_spacing} mm, MONAI to {results['target_spacing_mm']} mm")
            monai = results["monai"]["train_s"]
            print(
                f"train stage over MONAI's training: mask only {results['mask']['train_s'] / monai:.2f}, "
                f"with the image-level outputs {results['all']['train_s'] / monai:.2f}"
            )
        for key in ("defaults", "defaults_full"):
            if key in results:
                r, monai = results[key], results["monai"]
                ratio = (r["train_s"] / r["patches"]) / (monai["train_s"] / monai["patches"])
                print(
                    f"{names[key]}: time per patch over MONAI's {ratio:.2f}"
                    f" (train stage {r['train_s']:.0f} s, of it the training loop {r['loop_s']:.0f} s)"
                )
        if "paired_dice" in results:
            difference, low, high = results["paired_dice"]
            print(
                f"pooled dice, the defaults minus MONAI's same-time run, paired on the test scans: "
                f"{difference:+.4f} [{low:+.4f}, {high:+.4f}] (95%, bootstrap over scans)"
            )
    if "peak_rss" in results:
        first = next(iter(results["peak_rss"].values()))
        for what, peak in results["peak_rss"].items():
            print(f"peak RSS of patch training, {what}: {peak / 2**20:.0f} MiB ({peak / first:.2f}x)")
        e = results["efficiency"]
        print(
            f"patch training efficiency: {e['stage_patches_per_s']:.1f} patches/s end to end over "
            f"{e['bare_patches_per_s']:.1f} for the bare step = {e['efficiency']:.2f}; the training loop alone "
            f"{e['loop_patches_per_s']:.1f} = {e['loop_efficiency']:.2f}"
        )


if __name__ == "__main__":
    main()

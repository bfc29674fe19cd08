"""Large images: patch training at native resolution, whole images resized to 64, and MONAI, in one run.

    python -m benchmarks.large [--rows 160] [--epochs 30] [--quick] [--resources]

On the generated cell images (benchmarks/cells.py: grey, 256-384 px a side, cells of 4-8 px
radius covering about 1% of the pixels, an image-level `density` class and the cell `count`),
the same train/val/test split (prepare's, seed 0) is trained several ways with params.yaml's
training defaults (validation, views, the saved epoch's rule) and scored on the test images at
their own size (masks thresholded at 0.5 after bringing the probabilities to the label map's size;
dice pooled over all test pixels, and the mean of the images' dice):

- cnn-factory, `inputs.image.mode: patch`, a mask only: the train and evaluate stages as DVC runs
  them, a UNet of depth 3 with 4 filters at the top, whose training step costs what MONAI's UNet
  below costs (184 and 197 patches/s on a quiet 2-core build machine, forward, backward and the
  optimiser at batch 16); and with 8 filters (125 patches/s), what more capacity buys.
- the same with the image-level outputs beside the mask: `density` (a category) and `count` (a number).
- cnn-factory, `mode: resize` to 64x64, all three outputs, the same epochs (its epochs see each
  image once): the image-level outputs' reference.
- a plain MONAI pipeline, as its segmentation tutorials build one: RandCropByPosNegLabeld (a third
  of the patches on foreground, as ours), UNet (16-128 channels, two residual units per level),
  background and foreground channels with DiceCELoss (softmax), Adam with a cosine schedule,
  sliding_window_inference with Gaussian blending; at the same number of training patches of the
  same size and batch, and again for as long as our mask-only run trained.
- the saved epoch: the image-level run again with `train.val_patches: 0` (every epoch validated on
  the whole images at their own size), to compare the epoch `val/relative_loss` saves with the
  epoch of the best validated mask dice, and with the one `val/loss` would have saved.

`--saved-epoch` runs only the question of the saved epoch, with the default sampled validation:
the mask-only run (4 filters) saved by `val/loss` (what `val/relative_loss` saved with one output
when it divided every output's loss) and by `val/relative_loss` (a mask's term now from its
dice), and the run with density and count by `val/relative_loss`; the rule changes nothing else
(seed, schedule, validation: the same weights every epoch). Every epoch of the second half of
each run is scored on the test images (benchmarks/keep_epochs.py keeps its weights), and the
epoch each rule saves is read off the validation curves. Writes benchmarks/large-saved-epoch.json.

Training time is wall time of the training alone (cnn-factory: the train stage, start-up,
validation and checkpoints included; MONAI: its loop, no validation). Writes
benchmarks/large.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.cells import make_cells
from benchmarks.monai_baseline import infer, train_unet
from cnn_factory.config import parse_params
from cnn_factory.data.prepare import prepare
from cnn_factory.training.optim import EarlyStopping

ROOT = Path(__file__).resolve().parents[1]
MONAI_LR = 3e-3  # Adam's learning rate for MONAI: of 1e-3 and 3e-3, the better at 7,680 patches (0.935 vs 0.957)


OUTPUTS: dict[str, dict] = {
    "cells": {"type": "segmentation", "column": "labels", "label": 1, "loss": "bce_dice"},
    "density": {"type": "category", "classes": ["sparse", "dense"], "weight": 0.3},
    "count": {"type": "numeric", "weight": 0.3},
}


def params(
    data: Path, mode: str, size: int, epochs: int, patches: int | None, batch: int, filters: int = 4,
    outputs: tuple[str, ...] = ("cells", "density", "count"),
) -> dict:  # fmt: skip
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(csv=str(data / "data.csv"), root=str(data))
    p["data"]["split"].update(val=0.1, test=0.2, seed=0)
    p["inputs"] = {"image": {"type": "image", "size": [size, size], "channels": 1, "mode": mode}}
    p["outputs"] = {name: OUTPUTS[name] for name in outputs}
    p["model"].update(depth=3, filters=filters)
    p["train"].update(epochs=epochs, batch_size=batch, patches_per_epoch=patches, log_images_every=0)
    return p


def curve(work: Path, name: str) -> list[float]:
    """A validation curve as dvclive logged it, one value per validated epoch."""
    lines = (work / "dvclive" / "plots" / "metrics" / "val" / f"{name}.tsv").read_text().splitlines()[1:]
    return [float(line.split("\t")[-1]) for line in lines]


def run_stage(folder: Path, stage: str) -> tuple[float, str]:
    """`stage`: a stage's name (train, evaluate) or a module to run in its place."""
    module = stage if "." in stage else f"stages.{stage}"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", module], cwd=folder, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{module} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start, result.stdout


def ours(work: Path, p: dict, train: str = "stages.train") -> dict:
    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    prepare(parse_params(p), work / "data" / "prepared", None, workers=2)
    seconds, _ = run_stage(work, train)
    run_stage(work, "evaluate")
    metrics = json.loads((work / "eval" / "figures.json").read_text())["test"]
    live = json.loads((work / "dvclive" / "metrics.json").read_text())
    dice = curve(work, "cells/dice")  # every epoch validated: the index is the epoch - 1
    saved = int(live["best"]["epoch"])
    return {
        "train_s": seconds,
        "dice": metrics["cells"]["dice_pooled"],
        "dice_mean": metrics["cells"]["dice"],
        "density_accuracy": metrics.get("density", {}).get("accuracy"),
        "count_mae": metrics.get("count", {}).get("mae"),
        "saved_epoch": saved,
        "val_dice_saved": dice[saved - 1],  # validation's own figure (sampled patches by default)
        "val_dice_best": max(dice),
        "val_dice_best_epoch": 1 + dice.index(max(dice)),
        "val_loss_epoch": 1 + int(np.argmin(curve(work, "loss"))),  # what val/loss would have saved
        "saved_whole_val_dice": live["best"]["cells"]["dice"],  # the saved model, whole val images
    }


def peak_rss(tmp: Path, name: str, rows: int, sizes: tuple[int, int], size: int, batch: int) -> int:
    """Peak RSS (bytes) of one short patch-mode train stage on `rows` generated images of `sizes`."""
    data, work = tmp / f"{name}-data", tmp / name
    make_cells(data, rows, sizes, seed=1)
    p = params(data, "patch", size, 1, 128, batch)
    p["data"]["split"].update(val=0.1, test=0.1)
    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    prepare(parse_params(p), work / "data" / "prepared", None, workers=2)
    peak = work / "peak_rss"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    command = [
        sys.executable,
        str(Path(__file__).with_name("peak.py")),
        str(peak),
        sys.executable,
        "-m",
        "stages.train",
    ]
    subprocess.run(command, cwd=work, env=env, check=True, capture_output=True)
    return int(peak.read_text())


def efficiency(tmp: Path, size: int, batch: int, filters: int, epochs: int = 10, patches: int = 256) -> dict:
    """Patches/s of the patch-mode train stage end to end (start-up, sampling, validation with the
    default params, logging, checkpoints, the saved model's whole-image validation) over the bare
    step on a batch in memory, measured before and after."""
    from benchmarks.measure import pure_step_rate

    data, work = tmp / f"eff{filters}-data", tmp / f"eff{filters}"
    make_cells(data, 80, (256, 384), seed=2)
    p = params(data, "patch", size, epochs, patches, batch, filters)
    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    cfg = parse_params(p)
    prepare(cfg, work / "data" / "prepared", None, workers=2)
    cpu = torch.device("cpu")
    before = pure_step_rate(cfg, work / "data" / "prepared", cpu, 20)
    seconds, text = run_stage(work, "train")
    after = pure_step_rate(cfg, work / "data" / "prepared", cpu, 20)
    bare = (before + after) / 2
    end_to_end = epochs * patches / seconds
    # the training loop alone, from its own lines: sampling, reading patches and views, augmenting, stepping
    speeds = [float(v) for v in re.findall(r"^epoch \d+/\d+ .* (\d+) img/s$", text, flags=re.M)]
    loop = epochs * patches / sum(patches / v for v in speeds)
    return {
        "bare_patches_per_s": bare,
        "stage_patches_per_s": end_to_end,
        "efficiency": end_to_end / bare,
        "loop_patches_per_s": loop,
        "loop_efficiency": loop / bare,
    }


def monai_run(data: Path, split: dict, size: int, patches: int, batch: int, lr: float, seed: int = 0) -> dict:
    """A plain MONAI 2D patch pipeline on the same files, `patches` training patches."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, RandCropByPosNegLabeld, ScaleIntensityd

    torch.manual_seed(seed)
    files = [
        {"image": str(data / f), "label": str(data / f.replace("images/", "labels/"))} for f in split["train"]["files"]
    ]
    load = [
        LoadImaged(["image", "label"], image_only=True),
        EnsureChannelFirstd(["image", "label"], channel_dim="no_channel"),
        ScaleIntensityd("image"),
    ]
    crops = RandCropByPosNegLabeld(["image", "label"], "label", (size, size), pos=1, neg=2, num_samples=4)
    loader = DataLoader(Dataset(files, Compose([*load, crops])), batch_size=batch // 4, shuffle=True, num_workers=0)
    # MONAI reads PNGs transposed ((W, H) as (H, W)); the model does not mind, the masks follow
    model, seen, train_s = train_unet(2, loader, patches, batch, lr, target=lambda item: (item["label"] > 0).float())
    model.eval()
    tp = fp = fn = 0
    each = []
    test = [
        {"image": str(data / f), "label": str(data / f.replace("images/", "labels/"))} for f in split["test"]["files"]
    ]
    with torch.no_grad():
        for item in Dataset(test, Compose(load)):
            logits = infer(model, item["image"][None], (size, size), 16)
            pred = (logits[0].argmax(0) == 1).numpy()
            truth = item["label"][0].numpy() > 0
            counts = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
            tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
            if sum(counts):  # an image with both masks empty has no dice (as evaluate)
                each.append(2 * counts[0] / (2 * counts[0] + counts[1] + counts[2]))
    return {
        "train_s": train_s,
        "dice": float(2 * tp / (2 * tp + fp + fn)),
        "dice_mean": float(np.mean(each)),
        "density_accuracy": None,
        "patches": seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patches", type=int, default=256, help="patches per epoch")
    parser.add_argument("--size", type=int, default=96, help="patch size")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the smoke run")
    parser.add_argument("--resources", action="store_true", help="only peak RSS and training efficiency")
    parser.add_argument("--no-resources", action="store_true", help="only the comparison of quality and time")
    parser.add_argument("--saved-epoch", action="store_true", help="only the mask-only run saved by each rule")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.epochs, args.patches, args.size, args.batch = 24, 2, 16, 64, 8
    torch.set_num_threads(torch.get_num_threads())
    if args.saved_epoch:
        return saved_epoch(args)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="cnn-factory-large-") as tmp:
        if not args.resources:
            data = Path(tmp) / "cells"
            make_cells(data, args.rows, (256, 384), seed=0)
            shape = (args.size, args.epochs, args.patches, args.batch)
            results["patch_mask"] = ours(Path(tmp) / "mask", params(data, "patch", *shape, outputs=("cells",)))
            results["patch_mask_f8"] = ours(Path(tmp) / "mask8", params(data, "patch", *shape, 8, outputs=("cells",)))
            results["patch"] = ours(Path(tmp) / "patch", params(data, "patch", *shape))
            results["resize64"] = ours(Path(tmp) / "resize", params(data, "resize", 64, args.epochs, None, args.batch))
            split = json.loads((Path(tmp) / "patch" / "data" / "prepared" / "manifest.json").read_text())["splits"]
            patches = args.epochs * args.patches
            results["monai"] = monai_run(data, split, args.size, patches, args.batch, MONAI_LR)
            # and as long as our mask-only run trained (its patches from its own rate): the same time
            rate = results["monai"]["patches"] / results["monai"]["train_s"]
            same_time = max(args.batch, round(rate * results["patch_mask"]["train_s"] / args.batch) * args.batch)
            results["monai_same_time"] = monai_run(data, split, args.size, same_time, args.batch, MONAI_LR)
            results["test_images"] = len(split["test"]["files"])
            if not args.quick:  # every epoch on the whole validation images: which epoch is saved
                whole = params(data, "patch", *shape)
                whole["train"]["val_patches"] = 0
                results["patch_whole_val"] = ours(Path(tmp) / "whole", whole)
        if args.no_resources:
            return finish(results, args)
        base = max(args.rows // 4, 10)
        results["peak_rss"] = {
            f"{base} rows of 256-384 px": peak_rss(Path(tmp), "rss1", base, (256, 384), args.size, args.batch),
            f"{4 * base} rows of 256-384 px": peak_rss(Path(tmp), "rss4", 4 * base, (256, 384), args.size, args.batch),
            f"{base} rows of 1024-1536 px": peak_rss(Path(tmp), "rss16", base, (1024, 1536), args.size, args.batch),
        }
        epochs = 2 if args.quick else 10
        # at params.yaml's model size (filters 16, as the resize-mode figure) and at the benchmark's (8)
        results["efficiency"] = efficiency(Path(tmp), args.size, args.batch, 16, epochs)
        results["efficiency_small_model"] = efficiency(Path(tmp), args.size, args.batch, 8, epochs)
    finish(results, args)


def epoch_scores(work: Path, epochs: range) -> dict[int, dict]:
    """Each epoch's weights (kept by benchmarks.keep_epochs) in the run's model file, scored by
    the evaluate stage on the test images: {epoch: {dice, dice_mean, density_accuracy, count_mae}}."""
    model = next((work / "models").glob("*.pt"))
    record = torch.load(model, weights_only=True)
    scores = {}
    for epoch in epochs:
        state = torch.load(work / "checkpoints" / f"epoch-{epoch}.pt", weights_only=True)
        torch.save({**record, "state_dict": state}, model)
        run_stage(work, "evaluate")
        test = json.loads((work / "eval" / "figures.json").read_text())["test"]
        scores[epoch] = {
            "dice": test["cells"]["dice_pooled"],
            "dice_mean": test["cells"]["dice"],
            "density_accuracy": test.get("density", {}).get("accuracy"),
            "count_mae": test.get("count", {}).get("mae"),
        }
    torch.save(record, model)
    return scores


def rule_epochs(work: Path, outputs: tuple[str, ...], smoothing: float) -> dict[str, int]:
    """The epoch each rule saves, from the run's validation curves (the rule does not change the
    training), picked by training's own EarlyStopping: val/loss, the mask's dice, and
    relative_loss with every output's loss (the rule before 2026-12-02) or with 1 - dice for the
    mask (optim.relative_loss), by its values and by its moving average (the run's `smoothing`)."""
    weights: dict[str, float] = {n: OUTPUTS[n].get("weight", 1.0) for n in outputs}
    loss = {n: curve(work, f"{n}/loss") for n in outputs}
    dice = curve(work, "cells/dice")
    error = {**loss, "cells": [1 - d for d in dice]}

    def saved(values: list[float], by_average: bool = False) -> int:  # lowest first; a tie keeps the earlier
        stopping = EarlyStopping("min", 0, smoothing if by_average else 0.0)
        for epoch, value in enumerate(values, 1):
            stopping.update(value, epoch)
        return stopping.best_epoch

    def relative(terms: dict[str, list[float]]) -> list[float]:
        return [sum(w * terms[n][i] / terms[n][0] for n, w in weights.items()) for i in range(len(dice))]

    return {
        "val/loss": saved(curve(work, "loss")),
        "val/cells/dice": saved([-d for d in dice]),
        "relative_loss, losses": saved(relative(loss)),
        "relative_loss, mask by dice": saved(relative(error)),
        "relative_loss, mask by dice, moving average": saved(relative(error), by_average=True),
    }


def saved_epoch(args: argparse.Namespace) -> None:
    """Which epoch each rule saves, and how that epoch's model scores on the test images: the
    mask-only run (4 filters) trained twice, saved by val/loss (the rule before, for one output)
    and by the default val/relative_loss; the run with density and count once, by the default;
    every epoch of the second half of each run scored on the test images."""
    results: dict = {}
    late = range(args.epochs // 2 + 1, args.epochs + 1)
    with tempfile.TemporaryDirectory(prefix="cnn-factory-saved-epoch-") as tmp:
        data = Path(tmp) / "cells"
        make_cells(data, args.rows, (256, 384), seed=0)
        shape = (args.size, args.epochs, args.patches, args.batch)
        for run, outputs, metrics in (
            ("mask", ("cells",), ("val/loss", "val/relative_loss")),
            ("image_level", ("cells", "density", "count"), ("val/relative_loss",)),
        ):
            runs = {}
            for i, metric in enumerate(metrics):
                p = params(data, "patch", *shape, outputs=outputs)
                p["train"]["early_stopping"]["metric"] = metric
                work = Path(tmp) / f"{run}-{i}"
                runs[metric] = ours(work, p, "stages.train" if i else "benchmarks.keep_epochs")
                runs[metric]["val_dice_curve"] = curve(work, "cells/dice")
            first = Path(tmp) / f"{run}-0"
            results[run] = {
                "saved": runs,
                "epochs": rule_epochs(first, outputs, p["train"]["early_stopping"]["smoothing"]),
                "test_by_epoch": epoch_scores(first, late),
                # the rule only picks the saved epoch: the runs trained the same weights
                "same_training": all(r["val_dice_curve"] == runs[metrics[0]]["val_dice_curve"] for r in runs.values()),
            }
    results["conditions"] = {
        "rows": args.rows, "epochs": args.epochs, "patches_per_epoch": args.patches, "patch": args.size,
        "batch": args.batch, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    (ROOT / "benchmarks" / "large-saved-epoch.json").write_text(json.dumps(results, indent=2) + "\n")
    report_saved_epoch(results)


def report_saved_epoch(results: dict) -> None:
    for run in ("mask", "image_level"):
        r = results[run]
        dice = next(iter(r["saved"].values()))["val_dice_curve"]
        best = max(dice)
        print(f"{run}: best sampled val dice {best:.4f} at epoch {1 + dice.index(best)}; "
              f"the same training under every rule run: {r['same_training']}")  # fmt: skip
        for metric, saved in r["saved"].items():
            whole = saved["saved_whole_val_dice"]
            print(f"  saved by {metric}: epoch {saved['saved_epoch']}, whole val dice {whole:.4f}")
        head = f"{'test pooled':>11} {'test mean':>9} {'density':>7} {'count':>6}"
        print(f"  {'rule':<28} {'epoch':>5} {'val dice':>8} {head}")
        for rule, epoch in r["epochs"].items():
            t = r["test_by_epoch"].get(epoch)
            scores = "(not scored: first half)" if t is None else (
                f"{t['dice']:>11.4f} {t['dice_mean']:>9.4f} "
                + (f"{t['density_accuracy']:>7.3f} {t['count_mae']:>6.2f}" if t["count_mae"] is not None else "")
            )  # fmt: skip
            print(f"  {rule:<28} {epoch:>5} {dice[epoch - 1]:>8.4f} {scores}")
        print(f"  {'epoch':>5} {'val dice':>8} {head}")
        for epoch, t in r["test_by_epoch"].items():
            extra = f" {t['density_accuracy']:>7.3f} {t['count_mae']:>6.2f}" if t["count_mae"] is not None else ""
            print(f"  {epoch:>5} {dice[int(epoch) - 1]:>8.4f} {t['dice']:>11.4f} {t['dice_mean']:>9.4f}{extra}")


def finish(results: dict, args: argparse.Namespace) -> None:
    results["conditions"] = {
        "rows": args.rows, "epochs": args.epochs, "patches_per_epoch": args.patches, "patch": args.size,
        "batch": args.batch, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    name = "large-resources.json" if args.resources else "large.json"
    (ROOT / "benchmarks" / name).write_text(json.dumps(results, indent=2) + "\n")
    report(results, args.size)


def report(results: dict, size: int) -> None:
    if "patch" in results:
        head = f"{'run':<40} {'dice, pooled':>12} {'dice, mean':>10} {'density acc':>11} {'count MAE':>9}"
        print(f"{head} {'training':>9} {'patches':>8}")
        names = {
            "patch_mask": f"cnn-factory patch {size}, mask only",
            "patch_mask_f8": "the same, 8 filters",
            "patch": f"cnn-factory patch {size}, mask + image-level",
            "resize64": "cnn-factory resize 64, mask + image-level",
            "monai": f"MONAI patch {size}, same patches",
            "monai_same_time": f"MONAI patch {size}, same time as mask only",
        }
        for key, name in names.items():
            r = results[key]
            acc = f"{r['density_accuracy']:.3f}" if r.get("density_accuracy") is not None else "-"
            mae = f"{r['count_mae']:.3f}" if r.get("count_mae") is not None else "-"
            seen = r.get("patches", results["conditions"]["epochs"] * results["conditions"]["patches_per_epoch"])
            print(
                f"{name:<40} {r['dice']:>12.4f} {r['dice_mean']:>10.4f} {acc:>11} {mae:>9} {r['train_s']:>8.0f}s"
                f" {seen:>8}"
            )
        monai = results["monai"]["train_s"]
        print(
            f"train stage over MONAI's training: mask only {results['patch_mask']['train_s'] / monai:.2f}, "
            f"with image-level outputs {results['patch']['train_s'] / monai:.2f}"
        )
        for key in ("patch_mask", "patch", "patch_whole_val"):
            if key in results:
                r = results[key]
                print(
                    f"{key}: saved epoch {r['saved_epoch']} (val dice {r['val_dice_saved']:.4f}); best validated "
                    f"dice {r['val_dice_best']:.4f} at epoch {r['val_dice_best_epoch']}; val/loss would save "
                    f"epoch {r['val_loss_epoch']}; the saved model on whole val images {r['saved_whole_val_dice']:.4f}"
                )
    if "peak_rss" not in results:
        return
    first = next(iter(results["peak_rss"].values()))
    for what, peak in results["peak_rss"].items():
        print(f"peak RSS of patch training, {what}: {peak / 2**20:.0f} MiB ({peak / first:.2f}x)")
    for key, model in (("efficiency", "filters 16"), ("efficiency_small_model", "filters 8")):
        e = results[key]
        print(
            f"patch training efficiency, {model}: {e['stage_patches_per_s']:.1f} patches/s end to end over "
            f"{e['bare_patches_per_s']:.1f} for the bare step = {e['efficiency']:.2f}; the training loop alone "
            f"(no start-up, validation or checkpoints) {e['loop_patches_per_s']:.1f} = {e['loop_efficiency']:.2f}"
        )


if __name__ == "__main__":
    main()

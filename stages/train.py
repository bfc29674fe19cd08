"""Stage `train`: fits the multi-output CNN on data/prepared, logging every epoch with dvclive.

    python -m stages.train

Reads params.yaml (`inputs`, `outputs`, `model`, `train`). Per epoch dvclive logs
`train/<output>/loss`, `val/<output>/loss` and the headline metric per output
(`val/<output>/dice|accuracy|mae`) under dvclive/. The epoch with the lowest validation
loss is saved to models/<model.name>.pt with everything needed to use it without
params.yaml (see stages/model.py). Same params, same metrics on CPU.
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np
import torch
from dvclive import Live
from tqdm import tqdm

from stages.config import PREPARED, Config, OutputSpec, load_params
from stages.dataset import (
    PreparedSplit,
    augment,
    make_loader,
    normalisation,
    pick_device,
    read_manifest,
    to_device,
)
from stages.errors import UserError, run_stage
from stages.losses import Criterion
from stages.metrics import HEADLINE, OutputMetrics
from stages.model import MultiOutputNet, save_model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[name](params, lr=lr)


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int):
    """Learning-rate schedule stepped once per epoch: constant, or cosine decay to zero."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def model_args(cfg: Config, manifest: dict) -> dict:
    """Constructor arguments of MultiOutputNet, as plain types (they go into the model file)."""
    outputs = {}
    for name, spec in cfg.outputs.items():
        o = {"type": spec.type, "size": list(spec.size) if spec.size else None, "classes": list(spec.classes)}
        o.update(manifest["outputs"].get(name, {}))  # numeric mean/std of the training split
        outputs[name] = o
    channels = sum(spec.channels for spec in cfg.inputs.values())
    return {"in_channels": channels, "depth": cfg.model.depth, "filters": cfg.model.filters, "outputs": outputs}


def model_meta(cfg: Config, manifest: dict) -> dict:
    """What a user of the model file needs besides the weights: inputs, outputs, normalisation."""
    inputs = {
        n: {"column": s.column, "size": list(s.size), "channels": s.channels, **manifest["inputs"][n]}
        for n, s in cfg.inputs.items()
    }
    outputs = {
        n: {
            "type": s.type,
            "column": s.column,
            "size": list(s.size) if s.size else None,
            "labels": list(s.labels),
            "classes": list(s.classes),
            "loss": s.loss,
            "weight": s.weight,
        }
        for n, s in cfg.outputs.items()
    }
    return {"inputs": inputs, "outputs": outputs}


def train_one_epoch(model, criterion, optimizer, loader, device, norm, outputs, generator, epoch) -> dict:
    """One pass over the loader; returns mean losses per output (one host sync, at the end)."""
    model.train()
    sums = torch.zeros(len(outputs) + 1, device=device)
    seen, start = 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None, file=sys.stdout)
    for x, targets, flags in bar:
        x, targets = to_device(x, targets, device, *norm)
        x, targets = augment(x, targets, flags, outputs, generator)
        loss, parts = criterion(model(x), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.stack([loss.detach(), *(p.detach() for p in parts.values())]) * len(x)
        seen += len(x)
        if bar.disable is False and bar.n % 10 == 0:  # a terminal is watching: update now and then
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
    means = (sums / max(seen, 1)).tolist()
    result = {"loss": means[0], **{f"{name}/loss": v for name, v in zip(outputs, means[1:])}}
    result["images_per_s"] = seen / (time.perf_counter() - start)
    return result


@torch.no_grad()
def validate(model, criterion, loader, device, norm, outputs: dict[str, OutputSpec]) -> dict:
    """Mean losses and metrics per output over a split."""
    model.eval()
    metrics = OutputMetrics(outputs, device)
    sums, seen = torch.zeros(len(outputs) + 1, device=device), 0
    for x, targets, _ in loader:
        x, targets = to_device(x, targets, device, *norm)
        preds = model(x)
        loss, parts = criterion(preds, targets)
        sums += torch.stack([loss, *parts.values()]) * len(x)
        seen += len(x)
        metrics.update(preds, targets)
    means = (sums / max(seen, 1)).tolist()
    result = {"loss": means[0], **{f"{name}/loss": v for name, v in zip(outputs, means[1:])}}
    return {**result, **metrics.compute()}


def main() -> None:
    cfg = load_params()
    manifest = read_manifest(PREPARED, cfg)
    device = pick_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    inputs, outputs, t = list(cfg.inputs), cfg.outputs, cfg.train

    train_split = PreparedSplit(PREPARED / "train", inputs, outputs)
    val_split = PreparedSplit(PREPARED / "val", inputs, outputs)
    train_loader = make_loader(train_split, t.batch_size, t.shuffle, seed=t.seed, num_augs=t.num_augs)
    val_loader = make_loader(val_split, t.batch_size, shuffle=False)

    args, meta = model_args(cfg, manifest), model_meta(cfg, manifest)
    # channels-last runs the convolutions faster on CPU (oneDNN) and on CUDA tensor cores
    model = MultiOutputNet(**args).to(device, memory_format=torch.channels_last)
    norm = normalisation(meta["inputs"], device)
    scales = {n: o["std"] for n, o in args["outputs"].items() if "std" in o}
    criterion = Criterion(outputs, scales)
    optimizer = make_optimizer(t.optimizer, model.parameters(), t.lr)
    scheduler = make_scheduler(t.scheduler, optimizer, t.epochs)
    generator = torch.Generator().manual_seed(t.seed + 1)
    print(f"train: {len(train_split)} images ({1 + t.num_augs}x per epoch), {len(val_split)} val, on {device}")

    best, best_epoch, best_state, best_val = float("inf"), 0, None, {}
    with Live("dvclive", save_dvc_exp=False, dvcyaml=None) as live:
        for epoch in range(1, t.epochs + 1):
            train_stats = train_one_epoch(
                model, criterion, optimizer, train_loader, device, norm, outputs, generator, epoch
            )
            val_stats = validate(model, criterion, val_loader, device, norm, outputs)
            scheduler.step()
            speed = train_stats.pop("images_per_s")  # printed, not logged: metrics must be reproducible
            for key, value in train_stats.items():
                live.log_metric(f"train/{key}", value)
            for key, value in val_stats.items():
                live.log_metric(f"val/{key}", value)
            if val_stats["loss"] < best:  # kept in memory: the model file is replaced only at the end
                best, best_epoch = val_stats["loss"], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best_val = val_stats
            headline = "  ".join(
                f"{n}/{HEADLINE[s.type]} {val_stats[f'{n}/{HEADLINE[s.type]}']:.3f}" for n, s in outputs.items()
            )
            print(
                f"epoch {epoch}/{t.epochs}  loss {train_stats['loss']:.4f}  val_loss {val_stats['loss']:.4f}  "
                f"{headline}  {speed:.0f} img/s",
                flush=True,
            )
            live.next_step()
    if best_state is None:
        raise UserError("train: the validation loss was never finite (training diverged); lower train.lr")
    model.load_state_dict(best_state)
    save_model(cfg.model.path, model, args, {**meta, "epoch": best_epoch, "val": best_val})
    print(f"train: best val_loss {best:.4f} at epoch {best_epoch}, model saved to {cfg.model.path}")


if __name__ == "__main__":
    run_stage(main)

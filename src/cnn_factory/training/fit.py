"""A whole training run, as the train stage does it (stages/train.py calls `fit(cfg)`).

Per epoch dvclive logs `train/<output>/loss`; per validated epoch (every `train.val_every` and
the last) `val/<output>/loss` and the metrics per output (`val/<output>/dice`, `.../accuracy`,
`.../mae`, ...) under dvclive/, and every `train.log_images_every` epochs a picture of validation
predictions per segmentation output (a slider in DVC's viewers). The best validated epoch by
`train.early_stopping.metric` is saved to models/<model.name>.pt with everything needed to use it
(see cnn_factory/model.py). With `train.init_from` the network starts from another model file's
weights wherever names and shapes fit (see init_from.py). A checkpoint after every epoch lets an
interrupted run continue where it stopped, with the same result (see checkpoint.py). Under
torchrun the same code runs in N processes with DistributedDataParallel (see distributed.py):
each rank trains on its share of every epoch, rank 0 validates, logs and saves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from cnn_factory.config import PREPARED, Config
from cnn_factory.data.augment import Augmenter
from cnn_factory.data.dataset import PreparedSplit, make_loader, normalisation, pick_device, read_manifest
from cnn_factory.data.patches import PatchBatches, PatchSplit
from cnn_factory.errors import UserError
from cnn_factory.evaluate import evaluate_split
from cnn_factory.model import MultiOutputNet, model_args, model_meta, save_model
from cnn_factory.training.checkpoint import FOLDER, Session, load_checkpoint, params_key, save_checkpoint
from cnn_factory.training.distributed import (
    NoLive,
    from_main,
    setup,
    sync_buffers,
    teardown,
    wrap,
)
from cnn_factory.training.init_from import init_source, initialise
from cnn_factory.training.live import (
    AtomicLive,
    drop_unreadable,
    keep_copy,
    log_curves,
    restore_copy,
    trim_curves,
)
from cnn_factory.training.loop import autocast_dtype, seed_everything, train_one_epoch, validation_pass
from cnn_factory.training.losses import Criterion
from cnn_factory.training.optim import EarlyStopping, Schedule, make_optimizer
from cnn_factory.training.pictures import Gallery

SHOWN = 4  # validation images in each picture logged every train.log_images_every epochs


def make_session(cfg: Config, args: dict, device: torch.device, steps_per_epoch: int, amp) -> Session:
    t, es = cfg.train, cfg.train.early_stopping
    # channels-last runs the convolutions faster on CPU (oneDNN) and on CUDA tensor cores
    model = MultiOutputNet(**args).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = make_optimizer(t.optimizer, model.parameters(), t.lr, t.momentum, t.weight_decay)
    steps = math.ceil(steps_per_epoch / t.accumulate)
    schedule = Schedule(t.scheduler, optimizer, t.lr, t.epochs, steps, t.step_epochs, t.warmup_epochs, es.mode)
    return Session(
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        early=EarlyStopping(es.mode, es.patience),
        scaler=torch.amp.GradScaler(device.type, enabled=amp == torch.float16),
        order=torch.Generator().manual_seed(t.seed),
        augmenter=Augmenter(cfg.augment, seed=t.seed + 1),
    )


def log_epoch(
    live: Any, epoch: int, epochs: int, train_stats: dict, val_stats: dict | None, lr: float, outputs
) -> None:
    """dvclive metrics of the epoch, and one line on stdout (val_stats None: not validated)."""
    speed = train_stats.pop("images_per_s")  # printed, not logged: metrics must be reproducible
    for prefix, stats in (("train", train_stats), ("val", val_stats or {})):
        for k, value in stats.items():
            live.log_metric(f"{prefix}/{k}", value)
    live.log_metric("train/lr", lr)
    if val_stats is not None:
        log_curves(Path(live.dir), live.step, train_stats, val_stats, outputs)
    val = ""
    if val_stats is not None:
        val = f"val_loss {val_stats['loss']:.4f}  " + "".join(
            f"{n}/{s.headline} {val_stats[f'{n}/{s.headline}']:.3f}  " for n, s in outputs.items()
        )
    print(f"epoch {epoch}/{epochs}  loss {train_stats['loss']:.4f}  {val}{speed:.0f} img/s", flush=True)


def fit(cfg: Config, prepared: Path = PREPARED) -> None:
    """The whole training run of the train stage: resumes, trains, validates, logs, saves."""
    manifest = read_manifest(prepared, cfg)
    ranks, device = setup(pick_device(cfg.train.device))  # single-process unless torchrun started us
    t, outputs, es = cfg.train, cfg.outputs, cfg.train.early_stopping
    amp = autocast_dtype(t.precision, device)
    if t.precision == "fp16" and device.type == "cpu":
        raise UserError("train.precision: fp16 needs CUDA; use bf16 or fp32 on the CPU")
    source = init_source(t.init_from, str(cfg.model.path))  # {path, sha256} of the starting weights, or None
    seed_everything(t.seed)

    patch = cfg.patch_mode  # patches at native resolution (data/patches.py), else whole images resized
    train_split: PreparedSplit | PatchSplit
    if patch:
        train_split = PatchSplit(prepared / "train", list(cfg.inputs), outputs, cfg.first_input.size)
    else:
        train_split = PreparedSplit(prepared / "train", list(cfg.inputs), outputs)
    val_split = PreparedSplit(prepared / "val", list(cfg.inputs), outputs)
    args, meta = model_args(cfg, manifest), model_meta(cfg, manifest)
    samples = (t.patches_per_epoch or len(train_split)) if patch else len(train_split)
    steps = math.ceil(math.ceil(samples * (1 + t.num_augs) / ranks.world) / t.batch_size)  # per rank
    run = make_session(cfg, args, device, steps, amp)
    net = wrap(run.model, ranks, device, t.sync_batchnorm)  # DDP trains through `net`; run.model is what gets saved
    if isinstance(train_split, PatchSplit):
        batches = PatchBatches(
            train_split.shapes, train_split.foreground, cfg.first_input.size, samples, t.batch_size,
            t.foreground, run.order, t.num_augs, ranks.rank, ranks.world,
        )  # fmt: skip
        train_loader = DataLoader(train_split, sampler=batches, batch_size=None, pin_memory=device.type == "cuda")
    else:
        train_loader = make_loader(
            train_split, t.batch_size, t.shuffle, run.order, t.num_augs, rank=ranks.rank, world=ranks.world
        )
    val_loader = make_loader(val_split, t.batch_size, shuffle=False)
    stats = normalisation(meta["inputs"], device)  # (mean, std) of the inputs' channels
    criterion = Criterion(outputs, manifest["outputs"])  # a number's loss is in units of its std
    metric = es.metric.removeprefix("val/")

    ckpt_path, key = FOLDER / f"{cfg.model.name}.ckpt", params_key(cfg, manifest, source)
    live_copy = FOLDER / f"{cfg.model.name}.dvclive"  # dvclive/ as it was at the checkpoint
    state = load_checkpoint(ckpt_path, key)  # every rank resumes from the same file
    first = 1
    say = print if ranks.main else lambda *_, **__: None
    if state is not None:
        run.load_state_dict(state)
        first = state["epoch"] + 1
        if ranks.main:  # dvc repro deleted dvclive/ before running: its curves and pictures come back
            restore_copy(live_copy, Path("dvclive"))
            drop_unreadable(Path("dvclive/metrics.json"))
            trim_curves(Path("dvclive"), steps=state["epoch"])  # dvclive's step = epoch - 1
        say(f"train: resuming after epoch {state['epoch']} from {ckpt_path}")
    elif source is not None:  # a resumed run's checkpoint already holds the weights trained from it
        say(initialise(run.model, source).summary())
    size = "x".join(map(str, cfg.first_input.size))
    what = f"{samples} patches of {size} from {len(train_split)} images" if patch else f"{len(train_split)} images"
    say(
        f"train: {what} ({1 + t.num_augs}x per epoch), {len(val_split)} val, on {device}"
        f"{f' with {amp}' if amp else ''}{f', {ranks.world} processes' if ranks.enabled else ''}"
    )

    live = (
        AtomicLive(
            "dvclive", resume=state is not None, save_dvc_exp=False, dvcyaml=None, monitor_system=t.monitor_system
        )
        if ranks.main
        else NoLive()
    )
    with live:
        live.step = first - 1
        for epoch in range(first, t.epochs + 1):
            train_stats = train_one_epoch(
                net,
                criterion,
                run.optimizer,
                run.schedule,
                train_loader,
                device,
                stats,
                run.augmenter,
                outputs,
                amp=amp,
                scaler=run.scaler,
                grad_clip=t.grad_clip,
                accumulate=t.accumulate,
                epoch=epoch,
                ranks=ranks,
            )
            sync_buffers(run.model, ranks)  # batch-norm statistics: rank 0's everywhere, as saved
            val_stats, gallery = None, None
            if epoch % t.val_every == 0 or epoch == t.epochs:
                if t.log_images_every and epoch % t.log_images_every == 0:
                    gallery = Gallery(outputs, SHOWN)
                # rank 0 validates the whole val split; all ranks take its numbers and so decide alike
                val = None
                if ranks.main and patch:  # sliding windows over the whole images, scored at their own size
                    scored = evaluate_split(run.model, meta, outputs, prepared / "val", t.batch_size, device, criterion)
                    val, gallery = {**scored.losses, **scored.metrics}, gallery and scored.gallery
                elif ranks.main:
                    val = validation_pass(run.model, criterion, val_loader, device, stats, outputs, amp, gallery)
                val_stats = from_main(val, ranks)
                if run.early.update(val_stats[metric], epoch):  # the model file is written at the end
                    run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
                    run.best_val = val_stats
            run.schedule.epoch_end(val_stats[metric] if val_stats else None)
            if ranks.main:
                log_epoch(live, epoch, t.epochs, train_stats, val_stats, run.optimizer.param_groups[0]["lr"], outputs)
                if gallery is not None:
                    gallery.log(live, f"{{output}}/{epoch}.png")
                live.next_step()
                keep_copy(Path("dvclive"), live_copy)  # first: a kill in between leaves epochs to trim, none missing
                save_checkpoint(ckpt_path, run.state_dict(key, epoch))
            if run.early.stop:
                say(f"train: stopping early: no better {es.metric} in {es.patience} epochs")
                break
    if run.best_state is None:
        raise UserError(f"train: {es.metric} was never finite (training diverged); lower train.lr")
    if ranks.main:
        run.model.load_state_dict(run.best_state)
        best = {"epoch": run.early.best_epoch, "val": run.best_val, "init_from": source}
        save_model(cfg.model.path, run.model, args, {**meta, **best})
        save_checkpoint(ckpt_path, {"key": key, "epoch": run.early.best_epoch, "complete": True})
        print(
            f"train: best {es.metric} {run.early.best:.4f} at epoch {run.early.best_epoch}, "
            f"model saved to {cfg.model.path}"
        )
    del net, train_loader  # DDP's reducer must go before its process group, or gloo aborts at exit
    teardown(ranks)

"""A whole training run, as the train stage does it (stages/train.py calls `fit(cfg)`).

Per epoch dvclive logs `train/<output>/loss`; per validated epoch (every `train.val_every` and
the last) `val/<output>/loss` and each output's metrics (`val/<output>/dice`, `.../mae`, ...), and
every `train.log_images_every` epochs a picture of validation predictions per segmentation output
(a slider in DVC's viewers). The best validated epoch by `train.early_stopping.metric` is saved to
models/<model.name>.pt (model.py). Where the network starts (`model.weights`, `train.init_from`):
init_from.py; the encoder's own rate and early stopping: optim.py; continuing an interrupted run
with the same result: checkpoint.py; N processes under torchrun, each training on and validating
its share of every epoch, rank 0 logging and saving: distributed.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from cnn_factory.config import PREPARED, AugmentConfig, Config, InputSpec, TrainConfig
from cnn_factory.config import EarlyStopping as StoppingConfig
from cnn_factory.data.augment import Augmenter
from cnn_factory.data.dataset import PreparedSplit, make_loader, read_manifest
from cnn_factory.data.folds import fold_places
from cnn_factory.data.patches import PatchBatches, PatchSplit
from cnn_factory.device import pick_device
from cnn_factory.encoder_weights import NONE, pretrained_normalisation, weights_source
from cnn_factory.errors import UserError
from cnn_factory.layers import SPATIAL
from cnn_factory.model import ModelFile, MultiOutputNet, model_args, model_meta, save_model
from cnn_factory.outputs import Output
from cnn_factory.training.checkpoint import Checkpoint, Session, load_checkpoint, params_key, save_checkpoint
from cnn_factory.training.distributed import Dist, NoLive, setup, sync_buffers, teardown, wrap
from cnn_factory.training.init_from import check_encoder, init_source, initialise, load_encoder_weights
from cnn_factory.training.live import AtomicLive, keep_copy, log_curves, restore_copy, trim_curves
from cnn_factory.training.loop import Placement, Step, autocast_dtype, seed_everything, train_one_epoch
from cnn_factory.training.losses import Criterion
from cnn_factory.training.optim import EarlyStopping, Schedule, make_optimizer, parameter_groups, relative_loss
from cnn_factory.training.pictures import Gallery
from cnn_factory.training.validation import Sampled, SampledValidation, Validation, make_validation

SHOWN = 4  # validation images in each picture logged every train.log_images_every epochs


@dataclass(frozen=True, kw_only=True)
class Places:
    """Where a run reads and writes: the train stage's places, or a fold's (`Places.of(cfg, fold)`)."""

    prepared: Path  # the prepared train and val splits
    model: Path  # the best epoch's model file
    live: Path  # dvclive's folder
    checkpoint: str  # the checkpoint's name under checkpoints/

    @classmethod
    def of(cls, cfg: Config, fold: str | None = None) -> Places:
        if fold is None:
            return cls(prepared=PREPARED, model=cfg.model.path, live=Path("dvclive"), checkpoint=cfg.model.name)
        where = fold_places(fold)
        return cls(prepared=where.prepared, model=where.model, live=where.live, checkpoint=where.checkpoint)


def training_batches(
    t: TrainConfig,
    inputs: Mapping[str, InputSpec],
    outputs: Mapping[str, Output],
    folder: Path,
    ranks: Dist,
    order: torch.Generator,
    pin: bool,
) -> tuple[DataLoader, str]:
    """Batches of this rank's share of an epoch of the training split, shuffled by `order` (a checkpoint keeps
    its state): whole images, or patches at native resolution; and what train says it trains on."""
    first, repeats = next(iter(inputs.values())), f"({1 + t.num_augs}x per epoch)"
    if first.mode != "patch":
        split = PreparedSplit(folder, list(inputs), outputs)
        loader = make_loader(
            split,
            batch_size=t.batch_size,
            shuffle=t.shuffle,
            generator=order,
            num_augs=t.num_augs,
            rank=ranks.rank,
            world=ranks.world,
            pin_memory=pin,
        )
        return loader, f"{len(split)} images {repeats}"
    patches = PatchSplit(folder, list(inputs), outputs, first.size, t.view_share)
    samples = t.patches_per_epoch or len(patches)  # per epoch, before augmented repeats
    batches = PatchBatches(
        rows=patches,
        samples=samples,
        batch_size=t.batch_size,
        share=t.foreground,
        generator=order,
        num_augs=t.num_augs,
        part=(ranks.rank, ranks.world),
    )
    what = f"{samples} patches of {'x'.join(map(str, first.size))} from {len(patches)} {first.dimensions.rows}"
    return DataLoader(patches, sampler=batches, batch_size=None, pin_memory=pin), f"{what} {repeats}"


def make_session(
    t: TrainConfig,
    augment: AugmentConfig,
    args: dict,
    device: torch.device,
    steps_per_epoch: int,
    amp,
    order: torch.Generator,
) -> Session:
    """The network `args` describes (model_args), on the device, with its optimiser, schedule and the rest."""
    es = t.early_stopping
    model = MultiOutputNet.from_args(args)
    # channels-last runs the convolutions faster on CPU (oneDNN) and on CUDA tensor cores
    model = model.to(device, memory_format=SPATIAL[model.shape.dims].memory_format)  # type: ignore[call-overload]
    groups = parameter_groups(model, t.lr, t.encoder_lr)
    optimizer = make_optimizer(t.optimizer, groups, t.lr, t.momentum, t.weight_decay)
    steps = math.ceil(steps_per_epoch / t.accumulate)
    schedule = Schedule(t.scheduler, optimizer, t.lr, t.epochs, steps, t.step_epochs, t.warmup_epochs, es.mode)
    return Session(
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        early=EarlyStopping(es.mode, es.patience, es.smoothing),
        scaler=torch.amp.GradScaler(device.type, enabled=amp == torch.float16),
        order=order,
        augmenter=Augmenter(augment, seed=t.seed + 1),
    )


@dataclass(kw_only=True)
class Run:
    """The parts of a training run, built once by `start`."""

    step: Step  # holds the session (what a checkpoint saves; session.model is what gets saved) and the ranks
    validate: Validation
    loader: DataLoader
    places: Places  # where the best epoch goes (model.path, a fold's own) and dvclive's folder
    meta: dict  # the model file's metadata
    source: dict | None  # train.init_from's {path, sha256}
    checkpoint: Checkpoint

    @property
    def session(self) -> Session:
        return self.step.session

    @property
    def ranks(self) -> Dist:
        return self.step.ranks

    @property
    def outputs(self) -> Mapping[str, Output]:
        return self.step.criterion.outputs

    def say(self, line: str) -> None:
        if self.ranks.main:
            print(line, flush=True)


def resume(run: Run) -> int:
    """Continues from the checkpoint of this run, if there is one; returns the first epoch to train."""
    path = run.checkpoint.path
    state = load_checkpoint(path, run.checkpoint.key)  # every rank resumes from the same file
    if state is None:
        return 1
    run.session.load_state_dict(state)
    if run.ranks.main:  # dvc repro deleted dvclive/ before running: its curves and pictures come back
        restore_copy(run.checkpoint.live_copy, run.places.live)
        trim_curves(run.places.live, steps=state["epoch"])  # dvclive's step = epoch - 1
    run.say(f"train: resuming after epoch {state['epoch']} from {path}")
    return state["epoch"] + 1


def log_epoch(
    live: Any, epoch: int, epochs: int, train_stats: dict, val_stats: dict | None, lr: float, outputs
) -> None:
    """dvclive metrics of the epoch, and one line on stdout (val_stats None: not validated)."""
    speed = train_stats.pop("images_per_s")  # printed, not logged: metrics must be reproducible
    for prefix, stats in (("train", train_stats), ("val", val_stats or {})):
        for k, value in stats.items():
            live.log_metric(f"{prefix}/{k}", value)
    live.log_metric("train/lr", lr)
    val = ""
    if val_stats is not None:
        log_curves(Path(live.dir), live.step, train_stats, val_stats, outputs)
        val = f"val_loss {val_stats['loss']:.4f}  " + "".join(
            f"{n}/{s.headline} {val_stats[f'{n}/{s.headline}']:.3f}  " for n, s in outputs.items()
        )
    print(f"epoch {epoch}/{epochs}  loss {train_stats['loss']:.4f}  {val}{speed:.0f} img/s", flush=True)


def start(cfg: Config, where: Places | Path | None, ranks: Dist, device: torch.device) -> tuple[Run, int]:
    """Builds the run's data, model, optimiser, step and validation (at `where`, as fit's); resumes it from its
    checkpoint or starts it from train.init_from's weights; says what it trains on. Returns it and its first epoch."""
    check_encoder(cfg.model, cfg.inputs)
    places = where if isinstance(where, Places) else replace(Places.of(cfg), prepared=where or PREPARED)
    prepared = places.prepared
    t, manifest = cfg.train, read_manifest(prepared, cfg.inputs, cfg.outputs)
    amp = autocast_dtype(t.precision, device)
    if t.precision == "fp16" and device.type == "cpu":
        raise UserError("train.precision: fp16 needs CUDA; use bf16 or fp32 on the CPU")
    source = init_source(t.init_from, str(places.model))  # {path, sha256} of the starting weights, or None
    encoder = weights_source(cfg.model.weights)  # model.weights: a file's {path, sha256}, or the word
    seed_everything(t.seed)
    trained = cfg.outputs.trained  # the outputs with heads; the model file describes them all
    order = torch.Generator().manual_seed(t.seed)  # the shuffling's
    loader, what = training_batches(t, cfg.inputs, trained, prepared / "train", ranks, order, device.type == "cuda")
    stats = None  # pretrained weights bring the normalisation they were trained with
    if cfg.model.weights != NONE:
        stats = pretrained_normalisation(cfg.model.encoder, [s.channels for s in cfg.inputs.values()])
    args = model_args(cfg.model, cfg.inputs, cfg.outputs, manifest, cuda=device.type == "cuda")
    meta = {**model_meta(cfg.inputs, cfg.outputs, manifest, stats), "encoder_weights": encoder}
    model_file = ModelFile.from_meta(meta)
    session = make_session(t, cfg.augment, args, device, len(loader), amp, order)
    placement = Placement(device=device, stats=model_file.normalisation(device), amp=amp)
    step = Step(
        session=session,
        net=wrap(session.model, ranks, device, t.sync_batchnorm, unused=t.freeze_encoder_epochs > 0),
        criterion=Criterion(trained, manifest["outputs"]),  # a number's loss is in units of its std
        placement=placement,
        grad_clip=t.grad_clip,
        accumulate=t.accumulate,
        ranks=ranks,
    )
    run = Run(
        step=step,
        validate=make_validation(
            model_file=model_file,
            outputs=trained,
            folder=prepared / "val",
            batch_size=t.batch_size,
            placement=placement,
            ranks=ranks,
            sampled=Sampled(count=t.val_patches, foreground=t.foreground, seed=t.seed),
        ),
        loader=loader,
        places=places,
        meta=meta,
        source=source,
        checkpoint=Checkpoint.of(places.checkpoint, params_key(cfg, manifest, source, encoder, args["stem"])),
    )
    first = resume(run)
    if first == 1:  # a resumed run's checkpoint already holds the weights trained from these
        load_encoder_weights(cfg.model, session.model, run.say)
        if source is not None:
            run.say(initialise(session.model, source).summary())
    say_what(run, what, len(PreparedSplit(prepared / "val", list(cfg.inputs), trained)), t.val_patches)
    return run, first


def say_what(run: Run, what: str, n_val: int, val_patches: int) -> None:
    """One line: what the run trains and validates on, and where."""
    place, ranks = run.step.placement, run.ranks
    processes = f", {ranks.world} processes" if ranks.enabled else ""
    val = f"{n_val} val"
    if isinstance(run.validate, SampledValidation):
        val += f" ({val_patches} patches per validation; the whole images for the saved model)"
    amp = f" with {place.amp}" if place.amp else ""
    run.say(f"train: {what}, {val}, on {place.device}{amp}{processes}")


def fit(cfg: Config, where: Places | Path | None = None) -> None:
    """The whole training run of the train stage, or of a fold's: resumes, trains, validates, logs, saves.
    `where`: the run's places, or a prepared folder (the train stage's places otherwise)."""
    ranks, device = setup(pick_device(cfg.train.device))  # single-process unless torchrun started us
    t, es = cfg.train, cfg.train.early_stopping
    run, first = start(cfg, where, ranks, device)
    live = (
        AtomicLive(
            str(run.places.live), resume=first > 1, save_dvc_exp=False, dvcyaml=None, monitor_system=t.monitor_system
        )
        if ranks.main
        else NoLive()
    )
    with live as log:
        log.step = first - 1
        for epoch in range(first, t.epochs + 1):
            freeze_encoder(run, t.freeze_encoder_epochs, epoch)
            train_stats = train_one_epoch(run.step, run.loader, epoch)
            sync_buffers(run.session.model, ranks)  # batch-norm statistics: rank 0's everywhere, as saved
            val_stats, gallery = validate_epoch(run, t, epoch)
            end_epoch(run, t, log, epoch, (train_stats, val_stats), gallery)
            if run.session.early.stop:
                run.say(f"train: stopping early: no better {es.metric} in {es.patience} epochs")
                break
        best = saved_figures(run, es)
        for key, value in best.items():  # what the model file records; dvc exp show compares runs by it
            log.log_metric(f"best/{key}", value, plot=False)
    save_best(run, es, best)
    del run, live  # DDP's reducer must go before its process group, or gloo aborts at exit
    teardown()


def freeze_encoder(run: Run, frozen_epochs: int, epoch: int) -> None:
    """train.freeze_encoder_epochs: the encoder frozen for the first epochs, then trained (from the
    epoch alone, so a resumed run freezes and releases where an uninterrupted one does)."""
    frozen = epoch <= frozen_epochs
    if frozen != run.session.model.frozen:  # a fresh network starts unfrozen: the first epoch says it too
        run.say(f"train: encoder {'frozen' if frozen else 'released'} from epoch {epoch}")
    run.session.model.freeze_encoder(frozen)


def validate_epoch(run: Run, t: TrainConfig, epoch: int) -> tuple[dict | None, Gallery | None]:
    """Every train.val_every epochs and the last: validation figures (the same on every rank) and the
    early-stopping bookkeeping; a picture of the first images every train.log_images_every epochs."""
    session, history, criterion = run.session, run.session.history, run.step.criterion
    if epoch % t.val_every and epoch != t.epochs:
        return None, None
    pictures = run.ranks.main and t.log_images_every and epoch % t.log_images_every == 0
    gallery = Gallery(run.outputs, SHOWN) if pictures else None
    val_stats = run.validate(session.model, criterion, run.step.placement.device, gallery)
    history.reference = history.reference or {k: v for k, v in val_stats.items() if k.endswith(("/loss", "/dice"))}
    val_stats["relative_loss"] = relative_loss(val_stats, history.reference, criterion.weights)
    value = val_stats[t.early_stopping.metric.removeprefix("val/")]
    if session.early.update(value, epoch):
        history.best_state = {k: v.detach().clone() for k, v in session.model.state_dict().items()}
        history.best_val = val_stats
    elif session.early.stray is not None:  # EarlyStopping's rule: over twice the median (mode max: under half)
        run.say(
            f"train: epoch {epoch}: {t.early_stopping.metric} {value:.4g} against its median of three "
            f"({session.early.stray:.4g}): a stray validation, its weights are not saved"
        )
    return val_stats, gallery


def end_epoch(
    run: Run, t: TrainConfig, live: Any, epoch: int, stats: tuple[dict, dict | None], gallery: Gallery | None
) -> None:
    """The schedule's step, then (rank 0) the epoch's logs, pictures and checkpoint; `stats`: the
    epoch's training figures and its validation figures (None: not validated)."""
    session, (train_stats, val_stats) = run.session, stats
    session.schedule.epoch_end(val_stats[t.early_stopping.metric.removeprefix("val/")] if val_stats else None)
    if not run.ranks.main:
        return
    log_epoch(live, epoch, t.epochs, train_stats, val_stats, session.optimizer.param_groups[0]["lr"], run.outputs)
    if gallery is not None:
        gallery.log(live, f"{{output}}/{epoch}.png")
    live.next_step()
    keep_copy(run.places.live, run.checkpoint.live_copy)  # first: a kill in between leaves epochs to trim, none missing
    save_checkpoint(run.checkpoint.path, session.state_dict(run.checkpoint.key, epoch))


def saved_figures(run: Run, es: StoppingConfig) -> dict[str, float]:
    """The best epoch's weights into the model, and their validation figures (every rank): in patch
    mode on the whole validation images at their own resolution, as evaluate scores them."""
    session, history = run.session, run.session.history
    if history.best_state is None:
        raise UserError(f"train: {es.metric} was never finite (training diverged); lower train.lr")
    session.model.load_state_dict(history.best_state)
    if isinstance(run.validate, SampledValidation):  # the epoch sampled validation picked, on the whole images
        figures = run.validate.native(session.model, run.step.criterion, run.step.placement.device)
    else:  # relative_loss means something within its run only
        figures = {k: v for k, v in history.best_val.items() if k != "relative_loss"}
    return {"epoch": session.early.best_epoch, **figures}


def save_best(run: Run, es: StoppingConfig, best: dict[str, float]) -> None:
    """Writes the best epoch's weights and figures to the model file (rank 0), and marks the run complete."""
    if not run.ranks.main:
        return
    session, early = run.session, run.session.early
    record = {"epoch": best["epoch"], "val": {k: v for k, v in best.items() if k != "epoch"}, "init_from": run.source}
    save_model(run.places.model, session.model, session.model.args(), {**run.meta, **record})
    save_checkpoint(run.checkpoint.path, {"key": run.checkpoint.key, "epoch": early.best_epoch, "complete": True})
    own = session.history.best_val[es.metric.removeprefix("val/")]
    line = f"train: best {es.metric} {own:.4f} at epoch {early.best_epoch}"
    if es.smoothing:
        line += f" (by its moving average, {early.best:.4f} with smoothing {es.smoothing})"
    print(f"{line}, model saved to {run.places.model}")

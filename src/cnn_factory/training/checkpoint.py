"""Training checkpoints: everything needed to continue an interrupted run exactly where it stopped.

    checkpoints/<model.name>.ckpt      written atomically after every epoch
    checkpoints/<model.name>.dvclive/  dvclive/ as it was then (DVC deletes dvclive/ before a run)

checkpoints/ is git-ignored and no output of any stage, so that the train stage's outputs need no
`persist` (docs/checkpoints-and-sweeps.md: DVC's run-cache then restores them).

A checkpoint holds the epoch and the Session (model, optimiser, schedule, early stopping, the
best weights so far, every random generator), under a key (`params_key`): a checkpoint of other
params, data or starting weights, or of a finished run, is ignored, so `dvc exp run -S ...` never
continues someone else's run.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnn_factory.atomic import replace_file
from cnn_factory.config import Config
from cnn_factory.data.augment import Augmenter
from cnn_factory.model import MultiOutputNet
from cnn_factory.training.optim import EarlyStopping, Schedule

FORMAT = "cnn-factory-checkpoint/1"
FOLDER = Path("checkpoints")
PARTS = ("model", "optimizer", "schedule", "early", "scaler")  # a Session's parts with their own state_dict


def rng_state(*generators: torch.Generator) -> dict:
    np_state: Any = np.random.get_state()  # ("MT19937", keys, position, ...)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict, *generators: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    for generator, saved in zip(generators, state["generators"]):
        generator.set_state(saved)


def save_checkpoint(path: Path, state: dict) -> None:
    """Written atomically (atomic.py): a kill never leaves half a file."""
    replace_file(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The checkpoint of an unfinished run with the same key, else None (a damaged file counts as none)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged checkpoint is not worth stopping for: start afresh
        print(f"train: ignoring unreadable checkpoint {path} ({type(err).__name__})")
        return None
    if state.get("format") != FORMAT or state.get("key") != key or state.get("complete"):
        return None
    return state


def params_key(cfg: Config, manifest: dict, init: dict | None, encoder: dict, stem: str | list[int]) -> str:
    """A hash of what decides the run's result: the training params, the prepared data's manifest,
    the starting weights' sha256 (`init`, init_from.init_source: other bytes under the same
    `train.init_from` path; `encoder`, encoder_weights.weights_source: a `model.weights` file's),
    and `stem`, what `model.stem: auto` resolved to (it depends on the device, and both stems have
    the same weights' shapes: a CPU run's checkpoint is not resumed on CUDA with the other stem)."""
    params = cfg.model_dump(
        mode="json",
        include={"model", "train", "augment", "inputs", "outputs"},
        exclude={"train": {"monitor_system"}},  # what dvclive logs besides, not what is trained
    )
    if init is not None:
        params["init_from"] = init
    if cfg.model.stem == "auto":
        params["stem"] = stem
    if "sha256" in encoder:
        params["encoder_weights"] = encoder
    text = json.dumps({"params": params, "manifest": manifest}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """Where a run's checkpoint goes, and its key (`params_key`): a checkpoint of another key is not resumed."""

    path: Path
    key: str
    live_copy: Path  # dvclive/ as it was at the checkpoint

    @classmethod
    def of(cls, name: str, key: str) -> Checkpoint:
        """The checkpoint of model.name `name`, under checkpoints/."""
        return cls(path=FOLDER / f"{name}.ckpt", key=key, live_copy=FOLDER / f"{name}.dvclive")


@dataclass(kw_only=True)
class History:
    """What the validations so far decided: the first's losses and dice (relative_loss's reference),
    the best epoch's weights and figures."""

    reference: dict = field(default_factory=dict)
    best_state: dict | None = None
    best_val: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class Session:
    """The stateful parts of a run: what a checkpoint saves and restores."""

    model: MultiOutputNet
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    early: EarlyStopping
    scaler: torch.amp.GradScaler
    order: torch.Generator  # the shuffling's
    augmenter: Augmenter
    history: History = field(default_factory=History)

    def state_dict(self, key: str, epoch: int) -> dict:
        return {
            "key": key,
            "epoch": epoch,
            "complete": False,
            **{part: getattr(self, part).state_dict() for part in PARTS},
            "best_state": self.history.best_state,
            "best_val": self.history.best_val,
            "reference": self.history.reference,
            "rng": rng_state(self.order, self.augmenter.generator),
        }

    def load_state_dict(self, state: dict) -> None:
        for part in PARTS:
            getattr(self, part).load_state_dict(state[part])
        self.history = History(reference=state["reference"], best_state=state["best_state"], best_val=state["best_val"])
        set_rng_state(state["rng"], self.order, self.augmenter.generator)

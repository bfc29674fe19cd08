"""The training step: gradient accumulation, precision choice, a bf16 step on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from cnn_factory.config import AugmentConfig
from cnn_factory.data.augment import Augmenter
from cnn_factory.model import MultiOutputNet
from cnn_factory.outputs import make_output
from cnn_factory.training.checkpoint import Session
from cnn_factory.training.loop import Placement, Step, autocast_dtype, train_one_epoch
from cnn_factory.training.losses import Criterion
from cnn_factory.training.optim import EarlyStopping, Schedule, make_optimizer

OUTPUTS = {
    "mask": make_output("mask", type="segmentation", column="m", loss="bce_dice", size=[16, 16], label=1),
    "kind": make_output("kind", type="category", column="k", classes=["a", "b"]),
}
ARGS = {
    "in_channels": 3,
    "depth": 2,
    "filters": 4,
    "norm": "none",
    "outputs": {
        "mask": {"type": "segmentation", "size": [16, 16], "classes": []},
        "kind": {"type": "category", "size": None, "classes": ["a", "b"]},
    },
}
NO_AUG = AugmentConfig(
    hflip=0,
    vflip=0,
    rotate=0,
    scale=(1.0, 1.0),
    translate=0,
    shear=0,
    crop=1.0,
    brightness=0,
    contrast=0,
    blur=0,
    noise=0,
)


def batches(batch_size: int, n: int = 8):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    targets = {
        "mask": (torch.rand(n, 16, 16, generator=g) > 0.5).to(torch.uint8),
        "kind": torch.randint(0, 2, (n,), generator=g),
    }
    return [
        (
            x[i : i + batch_size],
            {k: v[i : i + batch_size] for k, v in targets.items()},
            torch.zeros(min(batch_size, n - i), dtype=torch.bool),
        )
        for i in range(0, n, batch_size)
    ]


def run_epoch(model, loader, accumulate: int, amp=None, grad_clip: float = 0.0) -> dict:
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0)
    schedule = Schedule("none", optimizer, 0.1, 1, len(loader), 1, 0)
    norm = (torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1))
    session = Session(
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        early=EarlyStopping("min", 0),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        order=torch.Generator(),
        augmenter=Augmenter(NO_AUG, 0),
    )
    step = Step(
        session=session,
        net=model,
        criterion=Criterion(OUTPUTS, {}),
        placement=Placement(device=torch.device("cpu"), stats=norm, amp=amp),
        grad_clip=grad_clip,
        accumulate=accumulate,
    )
    return train_one_epoch(step, loader, epoch=1)


def test_accumulating_two_half_batches_equals_one_full_batch():
    torch.manual_seed(0)
    a = MultiOutputNet.from_args(ARGS)
    b = copy.deepcopy(a)
    run_epoch(a, batches(8), accumulate=1)
    run_epoch(b, batches(4), accumulate=2)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5), name


def test_gradient_clipping_limits_the_step():
    torch.manual_seed(0)
    a = MultiOutputNet.from_args(ARGS)
    before = copy.deepcopy(a)
    run_epoch(a, batches(8), accumulate=1, grad_clip=1e-3)
    moved = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(a.parameters(), before.parameters())))
    assert moved.item() == pytest.approx(0.1 * 1e-3, rel=1e-3)  # lr x the clipped gradient norm


def test_bf16_step_runs_on_cpu():
    torch.manual_seed(0)
    stats = run_epoch(MultiOutputNet.from_args(ARGS), batches(4), accumulate=1, amp=torch.bfloat16)
    assert torch.isfinite(torch.tensor(stats["loss"]))


def test_precision_choice():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None  # CPU runs stay fp32 unless asked
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16

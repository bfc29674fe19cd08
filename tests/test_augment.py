"""Augmentation keeps masks on their image; photometric changes touch the image only."""

from __future__ import annotations

import torch

from cnn_factory.config import AugmentConfig
from cnn_factory.data.augment import Augmenter
from cnn_factory.outputs import make_output

GEOMETRIC = AugmentConfig(
    hflip=0.5,
    vflip=0.5,
    rotate=45,
    scale=(0.8, 1.2),
    translate=0.1,
    shear=10,
    crop=0.7,
    brightness=0,
    contrast=0,
    blur=0,
    noise=0,
)
OUTPUTS = {
    "mask": make_output("mask", type="segmentation", column="m", loss="dice", size=[32, 32], label=1),
    "small": make_output("small", type="segmentation", column="m", loss="dice", size=[16, 16], label=1),
    "kind": make_output("kind", type="category", column="k", classes=["a", "b"]),
}
ZERO, ONE = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)


def blocky_batch(n: int = 8) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images of 4x4-pixel blocks of 0 or 1, and masks drawn from the images' own pixels."""
    blocks = (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    image = blocks.repeat_interleave(4, -1).repeat_interleave(4, -2).repeat(1, 3, 1, 1)  # (n, 3, 32, 32)
    mask = image[:, 0].clone()
    return image, {"mask": mask, "small": mask[:, ::2, ::2].clone(), "kind": torch.zeros(n, dtype=torch.long)}


def test_masks_follow_their_image():
    x, targets = blocky_batch()
    y, out = Augmenter(GEOMETRIC, seed=0)(x, targets, torch.ones(8, dtype=torch.bool), OUTPUTS, ZERO, ONE)
    assert not torch.equal(y, x)
    drawn = (y[:, 0] > 0.5).float()  # the mask the augmented image itself implies
    agree = (drawn == out["mask"]).float().mean()
    assert agree > 0.97, agree  # only pixels on block edges may differ (bilinear vs nearest)
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    small_agree = (drawn[:, ::2, ::2] == out["small"]).float().mean()
    assert small_agree > 0.9, small_agree  # a mask of another size moves the same way


def test_pure_flips_are_exact():
    cfg = GEOMETRIC.model_copy(
        update=dict(hflip=1.0, vflip=0.0, rotate=0, scale=(1.0, 1.0), translate=0, shear=0, crop=1.0)
    )
    x, targets = blocky_batch()
    y, out = Augmenter(cfg, seed=0)(x, targets, torch.ones(8, dtype=torch.bool), OUTPUTS, ZERO, ONE)
    assert torch.allclose(y, x.flip(-1), atol=1e-5)
    assert torch.equal(out["mask"], targets["mask"].flip(-1))


def test_photometric_touches_the_image_only():
    cfg = AugmentConfig(
        hflip=0,
        vflip=0,
        rotate=0,
        scale=(1.0, 1.0),
        translate=0,
        shear=0,
        crop=1.0,
        brightness=0.3,
        contrast=0.3,
        blur=1.0,
        noise=0.05,
    )
    x, targets = blocky_batch()
    y, out = Augmenter(cfg, seed=0)(x, targets, torch.ones(8, dtype=torch.bool), OUTPUTS, ZERO, ONE)
    assert not torch.allclose(y, x)
    assert torch.equal(out["mask"], targets["mask"]) and torch.equal(out["kind"], targets["kind"])


def test_only_flagged_samples_change_and_runs_repeat():
    x, targets = blocky_batch()
    flags = torch.tensor([True, False] * 4)
    y1, out1 = Augmenter(GEOMETRIC, seed=3)(x, targets, flags, OUTPUTS, ZERO, ONE)
    y2, out2 = Augmenter(GEOMETRIC, seed=3)(x, targets, flags, OUTPUTS, ZERO, ONE)
    assert torch.equal(y1[~flags], x[~flags]) and torch.equal(out1["mask"][~flags], targets["mask"][~flags])
    assert torch.equal(y1, y2) and torch.equal(out1["mask"], out2["mask"])


VOLUME = {"mask": OUTPUTS["mask"]}  # the augmenter asks an output only whether it is a mask


def blocky_volumes(n: int = 4) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Volumes (n, 1, 8, 24, 32) of 4x4x4-voxel blocks of 0 or 1, their masks the same voxels."""
    blocks = (torch.rand(n, 1, 2, 6, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    volume = blocks.repeat_interleave(4, -1).repeat_interleave(4, -2).repeat_interleave(4, -3)
    return volume, {"mask": volume[:, 0].clone()}


def test_volume_flips_move_image_and_mask_alike():
    flips = GEOMETRIC.model_copy(update=dict(hflip=1.0, vflip=1.0, rotate=0, scale=(1.0, 1.0), translate=0, crop=1.0))
    x, targets = blocky_volumes()
    out, moved = Augmenter(flips, seed=0)(x, targets, torch.ones(4, dtype=torch.bool), VOLUME, ZERO[:, :1], ONE[:, :1])
    assert torch.allclose(out, x.flip(-1, -2), atol=1e-5)  # width and height flipped, slices kept in order
    assert torch.equal(moved["mask"], targets["mask"].flip(-1, -2))


def test_volume_warps_keep_masks_binary_and_on_their_image():
    x, targets = blocky_volumes()
    flags = torch.tensor([True, False, True, True])
    out, moved = Augmenter(GEOMETRIC, seed=3)(x, targets, flags, VOLUME, ZERO[:, :1], ONE[:, :1])
    assert torch.equal(out[1], x[1]) and torch.equal(moved["mask"][1], targets["mask"][1])  # unflagged: untouched
    assert not torch.equal(out[0], x[0])
    mask = moved["mask"]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    inside = (out[flags, 0] > 0.5) == (mask[flags] > 0.5)  # the image's blocks where the mask's are
    assert inside.float().mean() > 0.95


def test_volume_photometric_changes_touch_the_image_only():
    light = GEOMETRIC.model_copy(
        update=dict(hflip=0, vflip=0, rotate=0, scale=(1.0, 1.0), translate=0, crop=1.0, brightness=0.2, blur=1.0)
    )
    x, targets = blocky_volumes()
    out, moved = Augmenter(light, seed=0)(x, targets, torch.ones(4, dtype=torch.bool), VOLUME, ZERO[:, :1], ONE[:, :1])
    assert not torch.allclose(out, x) and torch.equal(moved["mask"], targets["mask"])

"""Batched augmentation on the training device: one warp per batch moves images and masks alike.

    augmenter = Augmenter(cfg.augment, seed=1)
    x, targets = augmenter(x, targets, flags, outputs, mean, std)   # x (B, C, H, W) or (B, C, D, H, W)

Only the samples flagged as augmented copies (train.num_augs) are transformed. All geometric
transforms (flips, rotation, zoom, shift, shear, crop) are folded into one affine matrix per
sample, built and applied with kornia (`get_affine_matrix2d`, `warp_affine`): bilinear for the
image, nearest-neighbour for every segmentation mask, so masks stay 0/1 and line up with their
image. Photometric transforms (brightness, contrast, blur, noise) touch the image only.
kornia's AugmentationSequential does the same with ~4x the overhead per batch on CPU (measured:
15-60 ms per transform for 8 images of 64x64), hence the functional API. kornia is imported on
first use, so a run without augmented copies (num_augs 0) does not pay its import (~0.2 s).

Volumes (B, C, D, H, W) take the same params through one `affine_grid`/`grid_sample` per batch,
with no flip or rotation across slices (`volume_matrices`; docs/volumes.md says why); blur acts
within slices.
Images keep kornia's warp rather than the volumes' N-d `affine_grid`: kornia builds its sampling
grid with its own arithmetic, and `affine_grid` on the same (normalised, inverted) matrix samples
about half the pixels of a 16x16 batch up to 2e-6 apart, so every 2-D run would change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnn_factory.config import AugmentConfig
from cnn_factory.outputs import Output, Outputs


class Augmenter:
    """Draws every random choice from its own generator, so runs (and resumed runs) repeat exactly."""

    def __init__(self, cfg: AugmentConfig, seed: int):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (high - low) + low

    def _flips_and_zoom(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 2): -1 along the width (hflip) and the height (vflip) of a flipped sample, else 1; (n,) zooms."""
        c = self.cfg
        flip = [torch.where(torch.rand(n, generator=self.generator) < p, -1.0, 1.0) for p in (c.hflip, c.vflip)]
        zoom = self._uniform(n, *c.scale) * self._uniform(n, 1.0, 1 / math.sqrt(c.crop))  # a crop is a zoom-in
        return torch.stack(flip, 1), zoom

    def matrices(self, n: int, h: int, w: int) -> torch.Tensor:
        """(n, 2, 3) affine matrices combining flips, rotation, zoom, crop, shift and shear."""
        from kornia.geometry.transform import get_affine_matrix2d

        c = self.cfg
        flip, zoom = self._flips_and_zoom(n)
        shift = torch.stack(
            [self._uniform(n, -c.translate, c.translate) * w, self._uniform(n, -c.translate, c.translate) * h], dim=1
        )
        spare = (zoom - 1).clamp(min=0)[:, None] * torch.tensor([w, h]) / 2  # room for the crop to move
        shift = shift + (torch.rand(n, 2, generator=self.generator) * 2 - 1) * spare
        angle = self._uniform(n, -c.rotate, c.rotate)
        shear = torch.deg2rad(self._uniform(n, -c.shear, c.shear))
        center = torch.tensor([(w - 1) / 2, (h - 1) / 2]).expand(n, 2)
        return get_affine_matrix2d(shift, center, flip * zoom[:, None], angle, sx=shear, sy=None)[:, :2]

    def volume_matrices(self, n: int, d: int, h: int, w: int) -> torch.Tensor:
        """(n, 3, 4) matrices for `affine_grid`, in its normalised (x, y, z) coordinates: where each
        output voxel samples the input (flips, an in-plane rotation, zoom, shift)."""
        c = self.cfg
        flip, zoom = self._flips_and_zoom(n)
        angle = torch.deg2rad(self._uniform(n, -c.rotate, c.rotate))
        shift = self._uniform(3 * n, -2 * c.translate, 2 * c.translate).view(n, 3)  # the normalised range is 2 wide
        cos, sin = torch.cos(angle), torch.sin(angle)
        # the rotation in pixels: normalised x and y are scaled by the slice's width and height
        rotation = torch.stack([torch.stack([cos, -sin * h / w], 1), torch.stack([sin * w / h, cos], 1)], 1)
        theta = torch.zeros(n, 3, 4)
        theta[:, :2, :2] = rotation * flip[:, None, :] / zoom[:, None, None]
        theta[:, 2, 2] = 1 / zoom
        theta[:, :, 3] = shift
        return theta

    def photometric(self, image: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, blur and noise on images (n, C, H, W) or volumes (n, C, D, H, W) in 0..1."""
        c, n = self.cfg, len(image)
        shape = (n, *[1] * (image.ndim - 1))
        if c.contrast:
            mean = image.mean(dim=tuple(range(1, image.ndim)), keepdim=True)
            image = (image - mean) * self._uniform(n, 1 - c.contrast, 1 + c.contrast).view(shape).to(image) + mean
        if c.brightness:
            image = image + self._uniform(n, -c.brightness, c.brightness).view(shape).to(image)
        if c.blur:
            blurred = torch.rand(n, generator=self.generator) < c.blur
            if blurred.any():
                from kornia.filters import gaussian_blur2d

                sigma = self._uniform(int(blurred.sum()), 0.1, 1.5)
                chosen = image[blurred.to(image.device)]
                slices = chosen.flatten(1, -3)  # a volume's slices as channels: blurred within each slice
                slices = gaussian_blur2d(slices, (5, 5), torch.stack([sigma, sigma], 1).to(image))
                image[blurred.to(image.device)] = slices.view(chosen.shape)
        if c.noise:
            image = image + c.noise * torch.randn(image.shape, generator=self.generator).to(image)
        return image.clamp(0, 1)

    def __call__(
        self,
        x: torch.Tensor,
        targets: dict[str, torch.Tensor],
        flags: torch.Tensor,
        outputs: dict[str, Output],
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Transforms the flagged samples of a normalised batch x (B, C, H, W) or (B, C, D, H, W) and
        their masks (B, h, w) or (B, d, h, w)."""
        flags = flags.to(x.device)
        n = int(flags.sum())
        if n == 0:
            return x, targets
        size = tuple(x.shape[2:])
        warp = self._warp_images(n, size) if x.ndim == 4 else self._warp_volumes(n, size, x)
        image = x[flags] * std + mean  # back to 0..1, where brightness and noise strengths mean something
        x = x.clone()
        x[flags] = (self.photometric(warp(image.to(x), "bilinear")) - mean) / std
        targets = dict(targets)
        for name in Outputs(outputs).spatial:
            mask = targets[name][flags][:, None]  # (n, 1, *own size), at the mask's own size
            own = tuple(mask.shape[2:])
            # a mask of another size than the image is warped at the image's size, so the matrix fits
            mask = F.interpolate(mask, size=size, mode="nearest") if own != size else mask
            mask = warp(mask, "nearest")
            mask = F.interpolate(mask, size=own, mode="nearest") if own != size else mask
            targets[name] = targets[name].clone()
            targets[name][flags] = mask[:, 0]
        return x, targets

    def _warp_images(self, n: int, size: tuple[int, ...]):
        """One kornia affine warp of n images (n, C, H, W)."""
        from kornia.geometry.transform import warp_affine

        h, w = size
        matrix = self.matrices(n, h, w)
        return lambda t, mode: warp_affine(t, matrix.to(t), (h, w), mode=mode)

    def _warp_volumes(self, n: int, size: tuple[int, ...], like: torch.Tensor):
        """One sampling grid for n volumes (n, C, D, H, W), shared by images and masks."""
        grid = F.affine_grid(self.volume_matrices(n, *size).to(like), [n, 1, *size], align_corners=False)
        return lambda t, mode: F.grid_sample(t, grid.to(t), mode=mode, padding_mode="zeros", align_corners=False)

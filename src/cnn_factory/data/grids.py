"""What differs between decoding a row of images and a row of volumes: how its files are read and
brought onto the grid the network sees. The rest of a row's decoding (data/rows.py) does not ask which.

    grid = grid_for(cfg.first_input, stated)        # Pixels (2-D images) or Voxels (3-D scans)
    scan = grid.read(path, spec, where)             # (C, *spatial) with mm per spatial axis
    fixed, native = grid.input_arrays(scan, spec, path, where)  # at the input's size, at the native grid
    labels = grid.read_labels(path, where, colours=False, on=scan)  # on: the row's scan, for a DICOM SEG
    view = grid.view(pixels, spec.size)             # the input's size: what image-level outputs see
    tiles = grid.to_native(pixels)                  # what predict slides its windows over

`pixels` is an image at its own size, or a scan's voxels at the target spacing (scan_voxels).

Images (`Pixels`) have a spacing of 1 per axis; their native grid is the image's size times
`inputs.*.scale` (patch mode), reached by an anti-aliased bilinear resize (skimage), label maps
resized by each output's own `mask`. Volumes (`Voxels`) are read with their spacing (volumes.py),
their intensities brought to 0..255 (`inputs.*.window`, else each scan's 0.5th percentile to
its maximum: config's `PERCENTILES`), and resampled to the target spacing (`inputs.*.spacing`,
resolved from the training split before any row is decoded: `resolve_spacing`): cubic splines
for intensities, nearest neighbour for label volumes, which hold label values (no colour
tables). Every problem is a UserError whose message starts with `where`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_factory.config import PERCENTILES, Config, InputSpec
from cnn_factory.data.label_maps import is_lossy, label_values, read_label_map
from cnn_factory.data.resample import resample, resample_labels, resampled_shape, target_spacing, to_shape
from cnn_factory.data.table import Table
from cnn_factory.dicom import header, pixel_mm
from cnn_factory.dicom_scans import is_segmentation, read_image_segmentation, read_segmentation
from cnn_factory.errors import UserError
from cnn_factory.images import read_pixels
from cnn_factory.outputs import MaskOutput
from cnn_factory.volumes import Volume, read_label_volume, read_volume, same_grid, volume_grid

Spacing = tuple[float, ...]


@dataclass(frozen=True)
class Scan:
    """A file's (C, *spatial) values (or (*spatial) label values) and mm per spatial axis."""

    array: np.ndarray
    shape: tuple[int, ...]  # (*spatial)
    spacing: Spacing
    volume: Volume | None = None  # volumes: the file as read, with its affine


# images


@dataclass
class Loaded:
    """An image or scan as `load` reads it (predict, serve): `pixels`, (C, *spatial) uint8 (an image at its
    own size, a scan at the model's spacing); its own `size`, (H, W) or (D, H, W), which masks come
    back at; a scan's `affine`, which its masks are written on (None for an image); its `spacing`
    (mm per axis), which measures are taken in: a scan's, a DICOM image's pixel size, else None."""

    pixels: np.ndarray
    size: tuple[int, ...]
    affine: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None


def scaled_size(size: tuple[int, ...], scale: float) -> tuple[int, int]:
    return (round(size[0] * scale), round(size[1] * scale))


def image_to_uint8(img: np.ndarray) -> np.ndarray:
    """Scales any image dtype to uint8: integers by their dtype's range, floats from [0, 1]."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    if np.issubdtype(img.dtype, np.integer):
        return (img.astype(np.float64) * (255 / np.iinfo(img.dtype).max)).round().astype(np.uint8)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def read_input(path: Path | bytes, spec: InputSpec) -> np.ndarray:
    """(C, H, W) uint8 at the file's own size: alpha dropped, any bit depth scaled to 0..255, a
    grey image saved as RGB (three equal channels) read as grey for a one-channel input, and a
    grey image read as three equal channels for a three-channel one (as a colour viewer shows it,
    and Pillow's convert("RGB")). `path` may also be an image file's bytes (`cnn-factory serve`'s
    uploads)."""
    img = read_pixels(path)
    channels = 1 if img.ndim == 2 else img.shape[-1]
    if img.ndim not in (2, 3) or channels not in (1, 3):
        raise ValueError(f"has shape {img.shape}; expected an image of height x width (x channels)")
    if channels == 3 and spec.channels == 1 and (img == img[..., :1]).all():  # grey saved as RGB: nothing lost
        img, channels = img[..., 0], 1
    if channels == 1 and spec.channels == 3:  # a grey photo among colour ones (common in COCO and ISIC)
        img, channels = np.repeat(img.reshape(*img.shape[:2], 1), 3, axis=-1), 3
    if channels != spec.channels:
        raise ValueError(f"has {channels} channel(s) but inputs.{spec.name}.channels is {spec.channels}")
    img = image_to_uint8(img)
    return img.reshape(*img.shape[:2], spec.channels).transpose(2, 0, 1).copy()


def resize_image(img: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """(C, H, W) uint8 resized to `size` (bilinear, anti-aliased when shrinking)."""
    if img.shape[-2:] == tuple(size):
        return img
    from skimage.transform import resize  # here: it loads scipy (0.3 s), which a prepare of cached rows skips

    out = resize(img.transpose(1, 2, 0), size, order=1, preserve_range=True, anti_aliasing=True)
    return out.round().astype(np.uint8).reshape(*size, img.shape[0]).transpose(2, 0, 1).copy()


@dataclass(frozen=True)
class Pixels:
    """2-D images: read at their own size, their native grid `inputs.*.scale` times it (patch mode)."""

    scale: float
    patch_mode: bool

    def read(self, path: Path, spec: InputSpec, where: str) -> Scan:
        try:
            image = read_input(path, spec)
        except ValueError as err:
            raise UserError(f"{where}: {path} {err}") from None
        return Scan(image, image.shape[-2:], (1.0, 1.0))

    def same_inputs(self, first: Scan, other: Scan, path: Path, where: str) -> None:
        """A row's images may differ in size: each is resized to its own input's size."""

    def same_grid(self, image: Scan, labels: Scan, path: Path, where: str) -> None:
        if labels.shape != image.shape:
            (h, w), (fh, fw) = labels.shape, image.shape
            raise UserError(
                f"{where}: {path} is {h}x{w} but its image is {fh}x{fw}; a label map must match its image's size"
            )

    def native_size(self, scan: Scan) -> tuple[int, ...]:
        return scaled_size(scan.shape, self.scale)

    def view(self, image: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """The whole image (C, H, W) at the input's `size`: from the image at its own size."""
        return resize_image(image, size)

    def to_native(self, image: np.ndarray) -> np.ndarray:
        """The image at its own size brought to the native grid (its scale)."""
        return resize_image(image, scaled_size(image.shape[-2:], self.scale))

    def input_arrays(self, scan: Scan, spec: InputSpec, path: Path, where: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The image at the input's size, and (patch mode) at its scale."""
        fixed = self.view(scan.array, spec.size)
        if not self.patch_mode:
            return fixed, None
        native = self.native_size(scan)
        if min(native) < 1:
            (h, w), (nh, nw) = scan.shape, native
            raise UserError(
                f"{where}: {path} is {h}x{w}; inputs.{spec.name}.scale {self.scale} leaves {nh}x{nw} pixels; "
                "raise the scale"
            )
        return fixed, resize_image(scan.array, native)

    def read_labels(self, path: Path, where: str, colours: bool, on: Scan | None = None) -> Scan:
        """A label map; a DICOM SEG is read on the pixels of `on`, the row's image."""
        if is_segmentation(path):
            if on is None:
                raise UserError(f"{where}: {path} is a DICOM SEG: it is read with the image it segments")
            labels = read_image_segmentation(path, on.shape, where)
            return Scan(labels, labels.shape, (1.0, 1.0))
        try:
            labels = read_label_map(path, colours)  # (H, W) values or (H, W, 3) colours
        except ValueError as err:
            raise UserError(f"{where}: {path} {err}") from None
        return Scan(labels, labels.shape[:2], (1.0, 1.0))

    def label_values(
        self, labels: Scan, output: MaskOutput, path: Path, where: str, declared: tuple[int, ...]
    ) -> np.ndarray:
        """The label values `output` picks from; a JPEG's pixels snapped to `declared` (label_maps.py)."""
        try:
            return label_values(labels.array, output, declared if is_lossy(path) else None)
        except ValueError as err:
            raise UserError(f"{where}: {path} {err}") from None

    def load(self, sources: Mapping[str, Path | bytes], inputs: Mapping[str, InputSpec]) -> Loaded:
        """An image's inputs, from a file or its bytes each, at its own size (predict, serve), with the
        first one's pixel size where it is a DICOM file that gives one; a ValueError says what is wrong."""
        image = np.concatenate([read_input(sources[n], spec) for n, spec in inputs.items()])
        mm = pixel_mm(header(next(iter(sources.values()))))  # a DICOM image's pixel size, which measures take
        return Loaded(image, (int(image.shape[-2]), int(image.shape[-1])), spacing=(mm, mm) if mm else None)

    def native_labels(self, values: np.ndarray, spacing: Spacing) -> tuple[np.ndarray, tuple[int, ...]] | None:
        """What a mask at the native grid is made from, and that grid's size (None: no native mask)."""
        size = scaled_size(values.shape, self.scale)
        return (values, size) if min(size) >= 1 else None


# volumes


def window_to_uint8(
    voxels: np.ndarray, window: tuple[float, float] | None, percentiles: tuple[float, float] | None = None
) -> np.ndarray:
    """(C, D, H, W) float32 in 0..255: `window` [low, high] or each channel's `percentiles` (else
    PERCENTILES) to 0..255."""
    values = voxels.astype(np.float32)
    out = np.empty_like(values)
    for c, channel in enumerate(values):
        low, high = window if window is not None else np.percentile(channel, percentiles or PERCENTILES)
        out[c] = (np.clip(channel, low, high) - low) * (255.0 / max(float(high - low), 1e-6))
    return out


def quantise(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def scan_voxels(scan: Volume, spec: InputSpec, target: tuple[float, ...]) -> np.ndarray:
    """A scan's (C, D', H', W') uint8 voxels at the `target` spacing (what the network sees)."""
    return quantise(resample(window_to_uint8(scan.array, spec.window, spec.percentiles), scan.spacing, target, order=3))


@dataclass(frozen=True)
class Voxels:
    """3-D scans: read with their spacing, their native grid the target spacing. `stated`: the
    spacing params.yaml gives (not auto), which a TIFF stack without calibration is read at."""

    target: Spacing
    stated: tuple[float, float, float] | None

    def read(self, path: Path, spec: InputSpec, where: str) -> Scan:
        volume = read_volume(path, where, channels=spec.channels, default_spacing=self.stated)
        return Scan(volume.array, volume.shape, volume.spacing, volume)

    def same_inputs(self, first: Scan, other: Scan, path: Path, where: str) -> None:
        """A row's scans are its channels: one grid."""
        self.same_grid(first, other, path, where)

    def same_grid(self, image: Scan, other: Scan, path: Path, where: str) -> None:
        assert image.volume is not None and other.volume is not None
        same_grid(image.volume, other.volume, path, where)

    def native_size(self, scan: Scan) -> tuple[int, ...]:
        return resampled_shape(scan.shape, scan.spacing, self.target)

    def view(self, voxels: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """The whole scan (C, D, H, W) at the input's `size`: from its voxels at the target spacing."""
        return quantise(to_shape(voxels, size, order=1))

    def to_native(self, voxels: np.ndarray) -> np.ndarray:
        """Voxels at the target spacing, as a scan's are once read (scan_voxels): already native."""
        return voxels

    def input_arrays(self, scan: Scan, spec: InputSpec, path: Path, where: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The scan resampled to the input's size, and at the target spacing."""
        assert scan.volume is not None
        native = scan_voxels(scan.volume, spec, self.target)
        return self.view(native, spec.size), native

    def read_labels(self, path: Path, where: str, colours: bool, on: Scan | None = None) -> Scan:
        """A label volume; a DICOM SEG is read onto the grid of `on`, the row's scan (its series)."""
        if is_segmentation(path):
            if on is None or on.volume is None:
                raise UserError(f"{where}: {path} is a DICOM SEG: it is read with the series it segments")
            image = on.volume
            volume = Volume(read_segmentation(path, image.shape, image.affine, where), image.spacing, image.affine)
        else:
            volume = read_label_volume(path, where, self.stated)
        return Scan(volume.array, volume.shape, volume.spacing, volume)

    def label_values(
        self, labels: Scan, output: MaskOutput, path: Path, where: str, declared: tuple[int, ...]
    ) -> np.ndarray:
        if output.colour_table is not None:
            raise UserError(f"{where}: outputs.{output.name}: label volumes hold label values; remove its colours")
        return labels.array

    def load(self, sources: Mapping[str, Path | bytes], inputs: Mapping[str, InputSpec]) -> Loaded:
        """A scan's inputs, from a file (or series folder) or its bytes each, resampled to the target
        spacing as prepare does (predict, serve); a UserError says what is wrong."""
        scans = {n: read_volume(sources[n], f"input {n!r}", channels=spec.channels) for n, spec in inputs.items()}
        first = next(iter(scans.values()))
        for name, scan in list(scans.items())[1:]:  # a scan's inputs are its channels: one grid
            same_grid(first, scan, sources[name], f"input {name!r}")
        voxels = np.concatenate([scan_voxels(scans[n], spec, self.target) for n, spec in inputs.items()])
        return Loaded(voxels, first.shape, first.affine, first.spacing)

    def native_labels(self, values: np.ndarray, spacing: Spacing) -> tuple[np.ndarray, tuple[int, ...]] | None:
        at_target = resample_labels(values, spacing, self.target)
        return at_target, at_target.shape


Grid = Pixels | Voxels


def measured(spec: InputSpec) -> bool:
    """Whether rows of this input come with their own spacing in mm (scans), which prepare records
    for scores and figures in mm; an image's pixels are its units."""
    return spec.volume


def grid_for(spec: InputSpec, stated: tuple[float, float, float] | None = None) -> Grid:
    """The grid of a model's inputs (`spec`: the first): volumes by their size of three numbers
    (after resolve_spacing), images otherwise."""
    if spec.volume:
        assert spec.spacing != "auto", "resolve_spacing() first"
        return Voxels(spec.spacing, stated)
    return Pixels(spec.scale, spec.mode == "patch")


def file_reader(spec: InputSpec, stated: tuple[float, float, float] | None = None) -> Grid:
    """A grid that reads a row's files at their own size and spacing (`read`, `read_labels`,
    `label_values`), before `auto` is resolved to a target: what `cnn-factory plan` samples."""
    if spec.volume:
        return Voxels(stated or (1.0, 1.0, 1.0), stated)  # the target is not used in reading
    return Pixels(1.0, False)


def resolve_spacing(cfg: Config, table: Table, splits: list[str]) -> Config:
    """cfg with `inputs.*.spacing: auto` replaced by the target spacing of the training scans
    (data/resample.py's rule), read from their headers; rows whose file cannot be read are left
    to load_row to report. Images have no spacing to resolve."""
    spec = cfg.first_input
    if not spec.volume or spec.spacing != "auto":
        return cfg
    grids = []  # (shape, spacing) of each readable training scan
    for i in (i for i, split in enumerate(splits) if split == "train" and table.rows[i][spec.column]):
        path = cfg.data.resolve(table.rows[i][spec.column])
        if path.is_file() or path.is_dir():  # a folder: a DICOM series
            with suppress(UserError):
                grids.append(volume_grid(path, table.where(i, spec.column)))
    if not grids:
        raise UserError(
            f"inputs.{spec.name}.spacing: auto takes the training scans' spacing, and none of them has a readable "
            f"one; set inputs.{spec.name}.spacing to [depth, height, width] mm"
        )
    shapes, spacings = zip(*grids)
    target = tuple(round(float(t), 6) for t in target_spacing(spacings, shapes))  # mm per (D, H, W) axis
    inputs = {n: s.model_copy(update={"spacing": target}).named(n) for n, s in cfg.inputs.items()}
    return cfg.model_copy(update={"inputs": inputs})

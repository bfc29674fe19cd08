"""Images of any common bit depth, channel count and format decode to the same uint8 range.

16-bit RGB is tested as TIFF: the PNG writer here cannot write it.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage import io

from cnn_factory.config import input_spec
from cnn_factory.data.grids import read_input, resize_image

GRADIENT = np.tile(np.linspace(0, 1, 16), (16, 1))  # (16, 16) from 0 to 1


def load_input(path, spec) -> tuple[np.ndarray, tuple[int, ...]]:
    """As prepare loads an input: (C, H, W) uint8 at spec.size, and the file's own (H, W)."""
    image = read_input(path, spec)
    return resize_image(image, spec.size), image.shape[-2:]


@pytest.mark.parametrize(
    ("suffix", "dtype", "channels"),
    [
        (".png", np.uint8, 1),
        (".png", np.uint8, 3),
        (".png", np.uint16, 1),
        (".tif", np.uint16, 3),
        (".tif", np.uint16, 1),
        (".tif", np.uint8, 3),
        (".jpg", np.uint8, 3),
        (".jpg", np.uint8, 1),
    ],
)
def test_bit_depths_and_formats_scale_to_0_255(tmp_path, suffix, dtype, channels):
    pixels = (GRADIENT * np.iinfo(dtype).max).round().astype(dtype)
    if channels == 3:
        pixels = np.stack([pixels] * 3, axis=-1)
    path = tmp_path / f"image{suffix}"
    io.imsave(path, pixels, check_contrast=False)
    array, size = load_input(path, input_spec("image", "image", (8, 8), channels))
    assert array.dtype == np.uint8 and array.shape == (channels, 8, 8) and size == (16, 16)
    # resized to 8x8, the gradient still runs from dark to bright across the full range
    assert array[0, :, 0].mean() < 30 and array[0, :, -1].mean() > 225
    tolerance = 8 if suffix == ".jpg" else 1  # JPEG is lossy
    expected = np.linspace(0, 255, 16).reshape(8, 2).mean(axis=1)
    assert np.abs(array[0, 4].astype(float) - expected).max() <= 16 + tolerance


def test_rgba_drops_alpha(tmp_path):
    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[..., 0], pixels[..., 3] = 200, 255
    io.imsave(tmp_path / "a.png", pixels, check_contrast=False)
    array, _ = load_input(tmp_path / "a.png", input_spec("image", "image", (8, 8), 3))
    assert array.shape == (3, 8, 8) and (array[0] == 200).all() and (array[1:] == 0).all()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_a_photo_with_an_exif_orientation_reads_as_viewers_show_it(tmp_path, orientation, fmt):
    """Phones store a portrait photo sideways with an EXIF orientation that every viewer, browser
    and annotation tool honouring it applies: the pixels read are those they show (Pillow's
    exif_transpose), from a file, from an upload's bytes, and as a palette label map's indices."""
    from PIL import Image, ImageOps

    from cnn_factory.images import read_image

    stored = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 3).astype(np.uint8)  # (H, W) = (4, 6): no symmetry
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo.{fmt.lower()}"
    lossless = {"JPEG": {"quality": 100}, "WEBP": {"lossless": True}}.get(fmt, {})
    Image.fromarray(stored).save(path, format=fmt, exif=exif.tobytes(), **lossless)
    with Image.open(path) as img:
        shown = np.asarray(ImageOps.exif_transpose(img))
    assert shown.shape[:2] == ((6, 4) if orientation >= 5 else (4, 6))
    assert np.array_equal(read_image(path), shown) and np.array_equal(read_image(path.read_bytes()), shown)

    if fmt == "PNG":
        palette = Image.fromarray(stored[..., 0] // 3).convert("P")
        palette.save(path, exif=exif.tobytes())
        with Image.open(path) as img:
            assert np.array_equal(read_image(path, indices=True), np.asarray(ImageOps.exif_transpose(img)))


def test_grey_saved_as_rgb_reads_as_grey_and_colour_does_not(tmp_path):
    """Grey images saved with three equal channels (X-rays exported as RGB) lose nothing as one
    channel; an image with colour in it, for a one-channel input, is an error saying so; a grey
    image for a three-channel input (a grey photo among colour ones) reads as three equal channels."""
    grey = (GRADIENT * 255).astype(np.uint8)
    io.imsave(tmp_path / "grey.png", grey, check_contrast=False)
    io.imsave(tmp_path / "grey-rgb.png", np.stack([grey] * 3, axis=-1), check_contrast=False)
    spec = input_spec("image", "image", (16, 16), 1)
    expected, _ = load_input(tmp_path / "grey.png", spec)
    as_rgb, _ = load_input(tmp_path / "grey-rgb.png", spec)
    assert as_rgb.shape == (1, 16, 16) and np.array_equal(as_rgb, expected)
    tinted = np.stack([grey, grey, grey // 2], axis=-1)
    io.imsave(tmp_path / "tinted.png", tinted, check_contrast=False)
    with pytest.raises(ValueError, match=r"has 3 channel\(s\) but inputs.image.channels is 1"):
        load_input(tmp_path / "tinted.png", spec)
    colour = input_spec("image", "image", (16, 16), 3)
    spread, _ = load_input(tmp_path / "grey.png", colour)
    assert spread.shape == (3, 16, 16) and all(np.array_equal(channel, expected[0]) for channel in spread)

"""Reading and writing image files, as scikit-image's `io.imread` / `io.imsave` do, without importing skimage.io.

TIFF goes through tifffile, every other format through imageio (pillow): the same decoders
`skimage.io.imread` calls, with its channel-axis fix. Importing skimage.io costs ~0.4 s (it loads
scipy and the colour module); these ~0.07 s, which every stage, `predict` and `validate` pay at start.
A palette image's indices (a label map as annotation tools save it) come from Pillow directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_image(path: str | Path, indices: bool = False) -> np.ndarray:
    """The file's pixels: (H, W) or (H, W, C), in the file's own dtype.

    A palette image (mode "P": a PNG as annotation tools export label maps, Pascal VOC style)
    gives its colours, or with `indices` its palette indices as (H, W) uint8."""
    if str(path).lower().endswith((".tif", ".tiff")):
        import tifffile

        image = np.asarray(tifffile.imread(path))
    else:
        import imageio.v3 as iio

        palette = _palette_indices(path) if indices else None
        if palette is not None:
            return palette
        image = np.asarray(iio.imread(path))
    if image.ndim > 2 and image.shape[-1] not in (3, 4) and image.shape[-3] in (3, 4):  # channels first
        image = np.moveaxis(image, -3, -1)
    return image


def read_pixels(path: str | Path, indices: bool = False) -> np.ndarray:
    """read_image, with any decoder's failure as a ValueError that says the file is not an image."""
    try:
        return read_image(path, indices)
    except Exception as err:  # decoders raise many types; all mean "not an image"
        raise ValueError(f"cannot be read as an image ({type(err).__name__}: {err})") from None


def _palette_indices(path: str | Path) -> np.ndarray | None:
    """A palette image's indices, straight from Pillow (imageio expands the palette to RGB); None otherwise."""
    from PIL import Image

    try:
        img = Image.open(path)  # reads the header only
    except Exception:  # not an image Pillow knows: imageio tries, and says why it cannot
        return None
    with img:
        return np.asarray(img) if img.mode == "P" else None


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Writes (H, W) or (H, W, C) uint8 pixels; the format follows the file name (PNG, TIFF, ...)."""
    import imageio.v3 as iio

    iio.imwrite(path, image)

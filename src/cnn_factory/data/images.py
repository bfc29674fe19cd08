"""Reading and writing image files, as scikit-image's `io.imread` / `io.imsave` do, without importing skimage.io.

TIFF goes through tifffile, every other format through imageio (pillow): the same decoders
`skimage.io.imread` calls, with its channel-axis fix. Importing skimage.io costs ~0.4 s (it loads
scipy and the colour module); these ~0.07 s, which every stage, `predict` and `validate` pay at start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_image(path: str | Path) -> np.ndarray:
    """The file's pixels: (H, W) or (H, W, C), in the file's own dtype."""
    if str(path).lower().endswith((".tif", ".tiff")):
        import tifffile

        image = np.asarray(tifffile.imread(path))
    else:
        import imageio.v3 as iio

        image = np.asarray(iio.imread(path))
    if image.ndim > 2 and image.shape[-1] not in (3, 4) and image.shape[-3] in (3, 4):  # channels first
        image = np.moveaxis(image, -3, -1)
    return image


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Writes (H, W) or (H, W, C) uint8 pixels; the format follows the file name (PNG, TIFF, ...)."""
    import imageio.v3 as iio

    iio.imwrite(path, image)

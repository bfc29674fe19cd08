"""Reading and writing image files, as scikit-image's `io.imread` / `io.imsave` do, without importing skimage.io.

TIFF goes through tifffile, every other format through imageio (pillow): the same decoders
`skimage.io.imread` calls, with its channel-axis fix. Importing skimage.io costs ~0.4 s (it loads
scipy and the colour module); these ~0.07 s, which every stage, `predict` and `validate` pay at start.
A palette image's indices come from Pillow directly, a DICOM file goes through its rescale and VOI
window (dicom.py), and a photo is turned as its EXIF orientation says (`read_image`). A source is
a file or the bytes of one (an upload to `cnn-factory serve`), decoded the same way.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from cnn_factory import dicom

Source = str | Path | bytes  # a file, or an image file's bytes (decoded in memory)
# what names an image or scan file: make-csv pairs such files, predict names masks after them without it
SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".nii", ".nii.gz", ".dcm"}


def split_name(path: Path) -> tuple[str, str]:
    """A file's name without its image or scan suffix, and that suffix (lower case): `scan` and
    `.nii.gz` of scan.nii.gz, `a` and `.png` of a.png; a name without one whole, and "" (a DICOM
    file named by its UID, 1.2.826.0.1.3680043.8.498.11, or bare)."""
    name = path.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")], ".nii.gz"
    return (path.stem, path.suffix.lower()) if path.suffix.lower() in SUFFIXES else (name, "")


TIFF = (".tif", ".tiff")
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF, either byte order
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> what turns the stored (H, W, ...) pixels as every viewer shows them (Pillow's
# ImageOps.exif_transpose): cameras and phones store a portrait photo sideways and set this tag
UPRIGHT = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),  # a portrait photo taken with the phone upright
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _is_tiff(source: Source) -> bool:
    if isinstance(source, bytes):
        return source[:4] in TIFF_MAGIC
    return str(source).lower().endswith(TIFF)


def _opened(source: Source):
    """What the decoders take: a path as it is, bytes as an in-memory file."""
    return io.BytesIO(source) if isinstance(source, bytes) else source


def read_image(path: Source, indices: bool = False) -> np.ndarray:
    """The file's pixels: (H, W) or (H, W, C), in the file's own dtype.

    A palette image (mode "P": a PNG as annotation tools export label maps, Pascal VOC style)
    gives its colours, or with `indices` its palette indices as (H, W) uint8. A JPEG, PNG or
    WebP with an EXIF orientation comes turned as viewers show it (`UPRIGHT`)."""
    orientation = 1
    if dicom.is_file(path):  # an X-ray or slide as a DICOM file: windowed to 0..255 as viewers show it
        return dicom.read_image(path, values=indices)
    if _is_tiff(path):
        import tifffile

        image = np.asarray(tifffile.imread(_opened(path)))
    else:
        import imageio.v3 as iio

        palette, orientation = _pillow_header(path, indices)
        if palette is not None:
            image = palette
        elif isinstance(path, bytes):  # Pillow decodes bytes in memory (other plugins may spill them to a file)
            image = np.asarray(iio.imread(path, plugin="pillow"))
        else:
            image = np.asarray(iio.imread(path))
    if image.ndim > 2 and image.shape[-1] not in (3, 4) and image.shape[-3] in (3, 4):  # channels first
        image = np.moveaxis(image, -3, -1)
    return np.ascontiguousarray(UPRIGHT[orientation](image)) if orientation in UPRIGHT else image


def read_pixels(path: Source, indices: bool = False) -> np.ndarray:
    """read_image less its alpha channel; any decoder's failure is a ValueError saying it is not an image."""
    try:
        image = read_image(path, indices)
    except dicom.DicomImageError:  # says itself what is wrong with the file
        raise
    except Exception as err:  # decoders raise many types; all mean "not an image"
        raise ValueError(f"cannot be read as an image ({type(err).__name__}: {err})") from None
    return image[..., :-1] if image.ndim == 3 and image.shape[-1] in (2, 4) else image


def _pillow_header(source: Source, indices: bool) -> tuple[np.ndarray | None, int]:
    """From Pillow's read of the header: with `indices`, a palette image's indices (imageio expands
    the palette to RGB), else None; and the EXIF orientation (1: upright as stored)."""
    from PIL import Image

    try:
        img = Image.open(_opened(source))  # reads the header only
    except Exception:  # not an image Pillow knows: imageio tries, and says why it cannot
        return None, 1
    with img:
        orientation = 1
        if raw := img.info.get("exif"):  # JPEG, WebP and PNG hold it in the header: nothing is decoded
            exif = Image.Exif()
            exif.load(raw)
            orientation = exif.get(EXIF_ORIENTATION, 1)
        return (np.asarray(img) if indices and img.mode == "P" else None), orientation


def encode_png(image: np.ndarray, palette: bytes | None = None) -> bytes:
    """(H, W) or (H, W, 3) uint8 pixels as PNG bytes; with a palette (RGB triplets), an index PNG (mode P)."""
    from PIL import Image

    img = Image.fromarray(image)
    if palette is not None:
        img.putpalette(palette)  # mode L -> P
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Writes (H, W) or (H, W, C) uint8 pixels; the format follows the file name (PNG, TIFF, ...)."""
    import imageio.v3 as iio

    iio.imwrite(path, image)

"""Label maps as annotation tools and image editors save them, turned into label values.

A segmentation output picks its mask from a 2-D map of integer label values: a single-channel
image of any integer depth (its values, label 300 included), a palette PNG (its indices, not
their colours), an RGB image whose three channels agree, or one coded in colours, mapped through
the output's `colours` table (`#rrggbb` -> label value; a palette PNG too, when the output has a
table), as docs/your-data.md lists them. An alpha channel is dropped.

`read_label_map` reads a file once per row and column (as values, or as colours for outputs with a
table); `label_values` turns it into one output's label values. Both raise ValueError with the
reason, which the caller prefixes with the file's path.

A JPEG (`is_lossy`) cannot hold a label map exactly: its compression blurs values and colours
along every edge, and a black-and-white mask comes back with greys. Its pixels are snapped: each
takes the nearest of the values the outputs reading its column look for and 0 (the background),
or with a colour table the nearest listed colour; a grey mask saved in colour is read by the mean
of its channels, which the compression blurs apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnn_factory.errors import listing
from cnn_factory.images import read_pixels
from cnn_factory.outputs import MaskOutput

LISTED = 3  # unknown colours named in a message
JPEG_MAGIC = b"\xff\xd8\xff"


def is_lossy(path: Path) -> bool:
    """Whether the file is a JPEG (by its first bytes, whatever its name): a lossy label map."""
    with open(path, "rb") as f:
        return f.read(3) == JPEG_MAGIC


def read_label_map(path: Path, colours: bool = False) -> np.ndarray:
    """(H, W) integer label values, or (H, W, 3) colours (an RGB map, or any map when `colours`)."""
    labels = read_pixels(path, indices=not colours)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim not in (2, 3) or labels.shape[2:] not in ((), (3,)) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"has shape {labels.shape} and type {labels.dtype}; expected a 2-D map of integers")
    return labels


def label_values(labels: np.ndarray, output: MaskOutput, snap_to: tuple[int, ...] | None = None) -> np.ndarray:
    """The (H, W) label values `output` picks its mask from, of a map as read_label_map gives it;
    `snap_to`: the map is lossy, each pixel is the nearest of these values (or listed colours)."""
    table, key = output.colour_table, f"outputs.{output.name}.colours"
    if table is None:
        if labels.ndim == 3 and snap_to is not None:  # grey saved in colour, its channels blurred apart
            labels = labels.mean(axis=-1)
        if labels.ndim == 2:
            return labels if snap_to is None else _nearest(labels, snap_to)
        if (labels == labels[..., :1]).all():  # grey saved as RGB
            return labels[..., 0]
        raise ValueError(
            "is a colour image; expected a single-channel label map of integer values, "
            f"or add {key} to map its colours to label values"
        )
    if labels.ndim == 2:
        raise ValueError(f"is a single-channel label map, but {key} maps the colours of RGB label maps; remove {key}")
    if labels.dtype != np.uint8:
        raise ValueError(f"has {labels.dtype} colour channels, but {key} lists 8-bit '#rrggbb' colours")
    return _map_colours(labels if snap_to is None else _nearest_colours(labels, table), table, key)


def _codes(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colours as (H, W) uint32 0xRRGGBB."""
    return (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]


def _nearest(values: np.ndarray, to: tuple[int, ...]) -> np.ndarray:
    """Each value replaced by the nearest of `to` (ties: the lower)."""
    targets = np.array(sorted(set(to)), np.int64)
    between = (targets[1:] + targets[:-1]) / 2
    return targets[np.searchsorted(between, values)].astype(np.min_scalar_type(int(targets.max())))


def _nearest_colours(rgb: np.ndarray, table: dict[str, int]) -> np.ndarray:
    """(H, W, 3) uint8 colours, each replaced by the nearest colour `table` lists (distance in RGB)."""
    listed = np.array([[int(colour[i : i + 2], 16) for i in (1, 3, 5)] for colour in table], np.int64)
    codes = _codes(rgb)
    unique, inverse = np.unique(codes, return_inverse=True)  # a JPEG's few thousand colours, not its pixels
    colours = np.stack([(unique >> shift) & 255 for shift in (16, 8, 0)], axis=-1).astype(np.int64)
    nearest = ((colours[:, None, :] - listed[None]) ** 2).sum(-1).argmin(axis=1)
    return listed[nearest][inverse.reshape(codes.shape)].astype(np.uint8)


def _map_colours(rgb: np.ndarray, table: dict[str, int], key: str) -> np.ndarray:
    """(H, W, 3) uint8 colours -> (H, W) label values, through `table`; an unlisted colour is a ValueError."""
    codes = _codes(rgb)
    known = np.array([int(colour[1:], 16) for colour in table], np.uint32)
    values = np.array(list(table.values()), np.int64)
    order = np.argsort(known)
    known, values = known[order], values[order]
    at = np.searchsorted(known, codes).clip(max=len(known) - 1)
    listed = known[at] == codes
    if not listed.all():
        unknown = np.unique(codes[~listed])
        names = listing((f"#{int(c):06x}" for c in unknown), LISTED)
        if len(unknown) == 1:
            raise ValueError(f"has colour {names}, which {key} does not list; add it with its label value")
        raise ValueError(
            f"has colours {names}, which {key} does not list; add them with their label values "
            "(smoothed edges blend colours: save masks without anti-aliasing)"
        )
    return values[at].astype(np.min_scalar_type(int(values.max())))

"""Label maps as annotation tools and image editors save them, turned into label values.

A segmentation output picks its mask from a 2-D map of integer label values. Label maps come as:

- single-channel images of any integer depth (8- or 16-bit PNG, TIFF): the values as they are,
  label 300 included;
- palette PNGs (mode "P", Pascal VOC style, as CVAT and LabelMe export them): the palette
  indices, not the colours they are drawn in;
- RGB images whose three channels agree: read as one channel;
- RGB images coded in colours: mapped through the output's `colours` table (`#rrggbb` ->
  label value); a palette PNG is read by its colours too when the output has a table.

An alpha channel is dropped. `read_label_map` reads a file once per row and column (as values,
or as colours for outputs with a table); `label_values` turns it into one output's label values.
Both raise ValueError with the reason, which the caller prefixes with the file's path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnn_factory.errors import listing
from cnn_factory.images import read_pixels
from cnn_factory.outputs import MaskOutput

LISTED = 3  # unknown colours named in a message


def read_label_map(path: Path, colours: bool = False) -> np.ndarray:
    """(H, W) integer label values, or (H, W, 3) colours (an RGB map, or any map when `colours`)."""
    labels = read_pixels(path, indices=not colours)
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.ndim not in (2, 3) or labels.shape[2:] not in ((), (3,)) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"has shape {labels.shape} and type {labels.dtype}; expected a 2-D map of integers")
    return labels


def label_values(labels: np.ndarray, output: MaskOutput) -> np.ndarray:
    """The (H, W) label values `output` picks its mask from, of a map as read_label_map gives it."""
    table, key = output.colour_table, f"outputs.{output.name}.colours"
    if table is None:
        if labels.ndim == 2:
            return labels
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
    return _map_colours(labels, table, key)


def _map_colours(rgb: np.ndarray, table: dict[str, int], key: str) -> np.ndarray:
    """(H, W, 3) uint8 colours -> (H, W) label values, through `table`; an unlisted colour is a ValueError."""
    codes = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
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

"""Colours of class masks: predict's palette PNGs and the pictures draw class k in the same colour."""

from __future__ import annotations

import colorsys

import numpy as np

# distinct colours for class masks (Trubetskoy's list), by name: class k is drawn in the k-th
COLOURS = {
    "red": (230, 25, 75), "green": (60, 180, 75), "yellow": (255, 225, 25), "blue": (0, 130, 200),
    "orange": (245, 130, 48), "purple": (145, 30, 180), "cyan": (70, 240, 240), "magenta": (240, 50, 230),
    "lime": (210, 245, 60), "pink": (250, 190, 212), "teal": (0, 128, 128), "lavender": (220, 190, 255),
    "brown": (170, 110, 40), "beige": (255, 250, 200), "maroon": (128, 0, 0), "mint": (170, 255, 195),
    "olive": (128, 128, 0), "apricot": (255, 215, 180), "navy": (0, 0, 128), "grey": (128, 128, 128),
}  # fmt: skip


def class_colours(classes: int) -> np.ndarray:
    """(256, 3) uint8 RGB palette: index 0 (background) black, 1..classes distinct colours (the named
    ones, then hues spaced by the golden angle at three brightnesses), the rest black."""
    palette = np.zeros((256, 3), np.uint8)
    named = list(COLOURS.values())
    for k in range(1, classes + 1):
        if k <= len(named):
            palette[k] = named[k - 1]
        else:
            rgb = colorsys.hsv_to_rgb((k * 0.618034) % 1, 0.8, (1.0, 0.75, 0.5)[k % 3])
            palette[k] = np.round(np.asarray(rgb) * 255)
    return palette


def colour_name(k: int) -> str:
    """What class k's colour is called in a caption."""
    return list(COLOURS)[k - 1] if 1 <= k <= len(COLOURS) else f"colour {k}"

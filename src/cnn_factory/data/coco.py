"""COCO annotation exports (CVAT, Label Studio, Roboflow, labelme, ...) as label maps.

    coco = read_coco(Path("annotations.json"))
    for image in coco.images:
        label_map = coco.label_map(image)           # (height, width) uint8 (uint16 past 255 labels)

Each category becomes one label value: its COCO id when every id lies in 1..255 (the ids the
export shows are then the label-map values), else 1..K in the order of the ids; `labels` holds the
mapping, which `cnn-factory make-csv --coco` writes beside the CSV. A category that only groups
others (`_grouping`) is left out, and counts for neither rule. Polygons and RLE (compressed or not,
crowd regions too) are rasterised by pycocotools, the reference implementation of the format.
Where annotations overlap, the smaller one wins: annotations are drawn largest first, so an object
lying on a larger one (a nucleus in a cell, a lesion in an organ) stays visible. Pixels under no
annotation are 0, the background.

`locate(folder, image.file_name)` finds an image's file: exports name it relative to a folder of
their own (`images/0001.png`), with Windows separators, or by the annotator's path
(`../../label-studio/media/upload/4/cb06-0001.png`), so the longest trailing part of the name
found under the folder is the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnn_factory.errors import UserError


@dataclass
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Coco:
    path: Path
    images: list[CocoImage]
    labels: dict[str, int]  # category name -> label value in the label maps
    values: dict[int, int]  # category id -> label value
    grouping: list[str]  # categories left out: they only group others (supercategories without annotations)

    def label_map(self, image: CocoImage) -> np.ndarray:
        """The image's label map: each annotation's pixels set to its category's value, largest first."""
        from pycocotools import mask as coco_mask

        dtype = np.uint8 if max(self.values.values(), default=0) <= 255 else np.uint16
        out = np.zeros((image.height, image.width), dtype)
        masks = []
        for ann in image.annotations:
            where = f"{self.path}: annotation {ann.get('id')} (image {image.file_name})"
            segmentation = ann.get("segmentation")
            try:
                if isinstance(segmentation, list):  # polygons: [x0, y0, x1, y1, ...] each
                    polygons = [p for p in segmentation if len(p) >= 6]
                    if not polygons:
                        continue
                    rle = coco_mask.merge(coco_mask.frPyObjects(polygons, image.height, image.width))
                elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
                    rle = coco_mask.frPyObjects(segmentation, image.height, image.width)  # uncompressed RLE
                elif isinstance(segmentation, dict):  # compressed RLE, its counts a string
                    rle = {"size": list(segmentation["size"]), "counts": str(segmentation["counts"]).encode("ascii")}
                else:
                    raise ValueError(f"segmentation of type {type(segmentation).__name__}")
                pixels = coco_mask.decode(rle).astype(bool)
            except (ValueError, TypeError, KeyError) as err:
                raise UserError(f"{where}: unreadable segmentation ({err}); re-export the annotations") from None
            if pixels.shape != out.shape:
                raise UserError(
                    f"{where}: mask of {pixels.shape[1]}x{pixels.shape[0]} for an image of {image.width}x{image.height}"
                )
            masks.append((int(pixels.sum()), self.values[ann["category_id"]], pixels))
        for _, value, pixels in sorted(masks, key=lambda m: -m[0]):  # largest first: smaller ones stay on top
            out[pixels] = value
        return out


def locate(folder: Path, file_name: str) -> Path | None:
    """The file under `folder` that `file_name` names: the longest trailing part of the name (its
    separators `/` or `\\`) that is a file there, or None."""
    parts = [part for part in file_name.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    for start in range(len(parts)):
        candidate = folder.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    return None


def read_coco(path: Path) -> Coco:
    """The export's images with their annotations and the categories' label values; UserError
    names what is missing or unknown (file, key, annotation id)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: COCO file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a JSON file ({err}); expected a COCO annotation export") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise UserError(f"{path}: not a COCO export; expected lists 'images', 'annotations' and 'categories'")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = {
            int(i["id"]): CocoImage(int(i["id"]), str(i["file_name"]), int(i["width"]), int(i["height"]))
            for i in data["images"]
        }
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(
            f"{path}: an image or category lacks {err}; expected id, file_name, width, height and id, name"
        ) from None
    for ann in data["annotations"]:
        image, category = ann.get("image_id"), ann.get("category_id")
        if image not in images:
            raise UserError(f"{path}: annotation {ann.get('id')} names image {image!r}, which 'images' lacks")
        if category not in categories:
            raise UserError(f"{path}: annotation {ann.get('id')} names category {category!r}, which 'categories' lacks")
        images[image].annotations.append(ann)
    if len(set(categories.values())) != len(categories):
        raise UserError(f"{path}: two categories share a name; give each category its own name")
    grouping = _grouping(data["categories"], {ann["category_id"] for ann in data["annotations"]})
    ids = sorted(set(categories) - set(grouping))
    values = {i: i for i in ids} if all(1 <= i <= 255 for i in ids) else {i: k + 1 for k, i in enumerate(ids)}
    labels = {categories[i]: values[i] for i in ids}
    return Coco(path, list(images.values()), labels, values, [categories[i] for i in sorted(grouping)])


def _grouping(categories: list[dict[str, Any]], annotated: set[int]) -> set[int]:
    """Ids of the categories that only group others: named as another category's supercategory and
    owning no annotation (Roboflow's exports put such a root first, with id 0)."""
    parents = {c.get("supercategory") for c in categories if c.get("supercategory") != c["name"]}
    return {int(c["id"]) for c in categories if c["name"] in parents and int(c["id"]) not in annotated}

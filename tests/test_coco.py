"""COCO exports as label maps: polygons and RLE rasterised, overlaps resolved, the CSV written,
and the pipeline run on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as coco_mask

from cnn_factory.data.coco import read_coco
from cnn_factory.errors import UserError
from tests.conftest import make_repo, run, tiny_params
from tests.test_cli import cli

H, W = 12, 16


def square(top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


def compressed(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}  # as JSON holds it


def uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of 0s and 1s down the columns (Fortran order)."""
    flat, counts, value, run_length = mask.flatten(order="F"), [], 0, 0
    for pixel in flat:
        if pixel == value:
            run_length += 1
        else:
            counts.append(run_length)
            value, run_length = pixel, 1
    counts.append(run_length)
    return {"size": [H, W], "counts": counts}


def export(path: Path, annotations: list[dict], categories=((1, "organ"), (2, "lesion"), (3, "cyst"))) -> Path:
    images = [
        {"id": 7, "file_name": "a.png", "width": W, "height": H},
        {"id": 9, "file_name": "b.png", "width": W, "height": H},
    ]
    data = {
        "images": images,
        "annotations": [{"id": k + 1, **a} for k, a in enumerate(annotations)],
        "categories": [{"id": i, "name": n} for i, n in categories],
    }
    path.write_text(json.dumps(data))
    return path


ANNOTATIONS = [
    # a polygon (x, y pairs): the rectangle of columns 1..7, rows 1..5 (pycocotools covers [x0, x1) x [y0, y1))
    {"image_id": 7, "category_id": 3, "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6]]},
    {"image_id": 9, "category_id": 1, "segmentation": compressed(square(0, 0, 10)), "iscrowd": 1},  # large
    {"image_id": 9, "category_id": 2, "segmentation": uncompressed(square(2, 3, 4))},  # small, inside it
]


@pytest.mark.parametrize("order", [1, -1])
def test_polygons_and_rle_rasterise_and_the_smaller_annotation_wins_an_overlap(tmp_path, order):
    coco = read_coco(export(tmp_path / "coco.json", ANNOTATIONS[::order]))
    a, b = (coco.label_map(i) for i in sorted(coco.images, key=lambda i: i.id))
    expected_a = np.zeros((H, W), np.uint8)
    expected_a[1:6, 1:8] = 3
    assert np.array_equal(a, expected_a)
    expected_b = square(0, 0, 10) * 1
    expected_b[2:6, 3:7] = 2  # the lesion lies on the organ, whichever was annotated first
    assert np.array_equal(b, expected_b) and b.dtype == np.uint8
    assert coco.labels == {"organ": 1, "lesion": 2, "cyst": 3}


def test_category_ids_outside_1_to_255_become_1_to_k_in_id_order(tmp_path):
    ids = {1: 0, 2: 2, 3: 300}  # organ, lesion, cyst as another export numbers them
    annotations = [{**a, "category_id": ids[a["category_id"]]} for a in ANNOTATIONS]
    coco = read_coco(export(tmp_path / "coco.json", annotations, ((0, "organ"), (2, "lesion"), (300, "cyst"))))
    a, b = (coco.label_map(i) for i in sorted(coco.images, key=lambda i: i.id))
    assert (a.max(), b[0, 0], b[3, 4]) == (3, 1, 2)
    assert coco.labels == {"organ": 1, "lesion": 2, "cyst": 3}


def test_a_category_that_only_groups_others_is_left_out(tmp_path):
    """Roboflow's exports put first a root category (id 0) that every class names as its
    supercategory and no annotation uses: it is no class, and the classes keep their ids as values."""
    categories = [(0, "tissue"), (1, "organ"), (2, "lesion"), (3, "cyst")]
    data = json.loads(export(tmp_path / "coco.json", ANNOTATIONS, categories).read_text())
    for category in data["categories"]:
        category["supercategory"] = "none" if category["id"] == 0 else "tissue"
    (tmp_path / "coco.json").write_text(json.dumps(data))
    coco = read_coco(tmp_path / "coco.json")
    assert coco.labels == {"organ": 1, "lesion": 2, "cyst": 3} and coco.grouping == ["tissue"]
    assert np.asarray(coco.label_map(coco.images[1]))[3, 4] == 2
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(tmp_path / "images" / name)
    out = cli("make-csv", "images", "--coco", "coco.json", cwd=tmp_path).stdout
    assert "left out, as they only group other categories: tissue\n" in out and "tissue:" not in out

    # a supercategory with annotations of its own is a class; a category naming itself
    # (label-studio-converter writes supercategory = name) groups nothing
    data["annotations"].append({"id": 9, "image_id": 7, "category_id": 0, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]})
    (tmp_path / "coco.json").write_text(json.dumps(data))
    assert read_coco(tmp_path / "coco.json").labels == {"tissue": 1, "organ": 2, "lesion": 3, "cyst": 4}
    for category in data["categories"]:
        category["supercategory"] = category["name"]
    data["annotations"].pop()
    (tmp_path / "coco.json").write_text(json.dumps(data))
    assert read_coco(tmp_path / "coco.json").grouping == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["annotations"][0].update(image_id=99), "annotation 1 names image 99, which 'images' lacks"),
        (
            lambda d: d["annotations"][0].update(category_id=5),
            "annotation 1 names category 5, which 'categories' lacks",
        ),
        (lambda d: d.pop("categories"), "not a COCO export; expected lists 'images', 'annotations' and 'categories'"),
        (lambda d: d["images"][0].pop("width"), "an image or category lacks 'width'"),
    ],
)
def test_a_bad_export_is_one_line_naming_what_is_wrong(tmp_path, change, message):
    path = export(tmp_path / "coco.json", ANNOTATIONS)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(UserError) as err:
        read_coco(path)
    assert str(err.value) == f"{path}: {message}" or str(err.value).startswith(f"{path}: {message}")


def test_make_csv_writes_label_maps_the_csv_and_the_label_values(tmp_path):
    images = tmp_path / "raw" / "images"
    images.mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(images / name)
    coco = export(tmp_path / "raw" / "coco.json", ANNOTATIONS)
    out = cli("make-csv", str(images), "--coco", str(coco), "--out", str(tmp_path / "raw" / "data.csv"), cwd=tmp_path)
    assert "2 rows written" in out.stdout and "  lesion: {type: segmentation, column: labels, label: 2}" in out.stdout
    assert (tmp_path / "raw" / "data.csv").read_text().splitlines() == [
        "image,labels",
        "images/a.png,labels/a.png",
        "images/b.png,labels/b.png",
    ]
    assert np.asarray(Image.open(tmp_path / "raw" / "labels" / "b.png"))[3, 4] == 2
    assert json.loads((tmp_path / "raw" / "labels.json").read_text()) == {"organ": 1, "lesion": 2, "cyst": 3}
    bad = cli("make-csv", str(images), str(images), "--coco", str(coco), cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "give LABELS_DIR (a folder of label maps) or --coco JSON" in bad.stderr


def test_make_csv_finds_images_however_the_annotation_tool_named_them(tmp_path):
    """Exports name images relative to a folder of their own, with Windows separators, or by the
    annotator's path: the longest trailing part of the name found under IMAGES_DIR is the file."""
    images = tmp_path / "raw" / "images"
    (images / "train").mkdir(parents=True)
    for name in ("a.png", "b.png", "train/c.png"):
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(images / name)
    names = {
        7: "images\\a.png",  # Label Studio before 1.16, exported on Windows
        9: "../../label-studio/media/upload/4/b.png",  # Label Studio 1.16: the upload's own path
        11: "train/c.png",  # a folder of the export that IMAGES_DIR holds too
    }
    data = json.loads(export(tmp_path / "raw" / "coco.json", ANNOTATIONS).read_text())
    data["images"].append({"id": 11, "file_name": "", "width": W, "height": H})
    data["annotations"].append({"id": 4, "image_id": 11, "category_id": 2, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]})
    for image in data["images"]:
        image["file_name"] = names[image["id"]]
    (tmp_path / "raw" / "coco.json").write_text(json.dumps(data))
    command = ["make-csv", str(images), "--coco", str(tmp_path / "raw" / "coco.json")]
    out = cli(*command, "--out", str(tmp_path / "raw" / "data.csv"), cwd=tmp_path)
    assert "3 rows written" in out.stdout and "warning" not in out.stderr
    assert (tmp_path / "raw" / "data.csv").read_text().splitlines() == [
        "image,labels",
        "images/a.png,labels/a.png",
        "images/b.png,labels/b.png",
        "images/train/c.png,labels/train__c.png",
    ]
    assert np.asarray(Image.open(tmp_path / "raw" / "labels" / "b.png"))[3, 4] == 2
    assert np.asarray(Image.open(tmp_path / "raw" / "labels" / "train__c.png"))[1, 1] == 2

    data["images"][0]["file_name"] = "val/b.png"  # b.png is the only file either name can be
    (tmp_path / "raw" / "coco.json").write_text(json.dumps(data))
    labels_before = (tmp_path / "raw" / "labels" / "a.png").read_bytes()
    bad = cli(*command, "--out", str(tmp_path / "raw" / "data.csv"), cwd=tmp_path, check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert f"images 7 (val/b.png) and 9 ({names[9]}) are both {images / 'b.png'}; leave one out" in bad.stderr
    assert (tmp_path / "raw" / "labels" / "a.png").read_bytes() == labels_before
    (tmp_path / "elsewhere").mkdir()
    empty = cli("make-csv", str(tmp_path / "elsewhere"), "--coco", str(tmp_path / "raw" / "coco.json"), cwd=tmp_path,
                check=False)  # fmt: skip
    assert "none of its 3 images is in" in empty.stderr and "(the first is named 'val/b.png')" in empty.stderr


@pytest.mark.slow
def test_dvc_repro_on_a_coco_made_set(tmp_path):
    """Shapes drawn on 24 images, annotated as polygons and RLE, through make-csv and the pipeline."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(24):
        top, left, side = (*(int(v) for v in rng.integers(0, 8, 2)), int(rng.integers(3, 8)))
        picture = np.full((16, 16, 3), 40, np.uint8)
        picture[top : top + side, left : left + side] = 220
        Image.fromarray(picture).save(raw / "images" / f"{i:02d}.png")
        images.append({"id": i, "file_name": f"{i:02d}.png", "width": 16, "height": 16})
        box = [left, top, left + side, top, left + side, top + side, left, top + side]
        mask = np.zeros((16, 16), np.uint8)
        mask[top : top + side, left : left + side] = 1
        segmentation = [box] if i % 2 else compressed(mask)
        annotations.append({"id": i + 1, "image_id": i, "category_id": 1, "segmentation": segmentation})
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "square"}]}
    (raw / "coco.json").write_text(json.dumps(data))
    cli("make-csv", str(raw / "images"), "--coco", str(raw / "coco.json"), "--out", str(raw / "data.csv"), cwd=tmp_path)
    params = tiny_params()
    params["data"].update(csv="data/raw/data.csv", root="data/raw")
    params["outputs"] = {"square": {"type": "segmentation", "column": "labels", "label": 1}}
    params["train"]["early_stopping"]["metric"] = "val/loss"
    repo = make_repo(tmp_path / "repo", params)
    Path(repo / "data").mkdir()
    raw.rename(repo / "data" / "raw")
    result = run(["dvc", "repro", "prepare", "train", "evaluate"], repo)
    assert "prepare: " in result.stdout and "Running stage 'evaluate'" in result.stdout
    figures = yaml.safe_load((repo / "eval" / "figures.json").read_text())["test"]["square"]
    assert 0 <= figures["dice"] <= 1

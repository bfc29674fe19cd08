"""`cnn-factory make-csv IMAGES_DIR LABELS_DIR`: pairs images and label maps (or scans and label
volumes: NIfTI, TIFF stacks) by file name into a CSV. `cnn-factory make-csv IMAGES_DIR --coco
annotations.json`: a COCO export's annotations rasterised into label maps (data/coco.py) beside
the CSV, which pairs them with the images."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from cnn_factory import dicom, dicom_scans
from cnn_factory.data.table import read_table
from cnn_factory.errors import UserError, listing
from cnn_factory.images import split_name

PATIENT = "patient"  # the column of DICOM images' PatientID
PIXEL_MM = "pixel_mm"  # the column of DICOM images' mm per pixel


def make_csv(args: argparse.Namespace) -> None:
    """Writes a CSV pairing IMAGES_DIR/<stem>.* with LABELS_DIR/<stem>.*; unpaired files go to stderr."""
    if (args.coco is None) == (args.labels_dir is None):
        raise UserError(
            "make-csv: give LABELS_DIR (a folder of label maps) or --coco JSON (an annotation export), one of them"
        )
    if args.coco:
        if args.join:
            raise UserError("make-csv: --join adds columns to the pairs of IMAGES_DIR and LABELS_DIR, not to --coco's")
        return make_coco_csv(args)
    out = Path(args.out)
    images, labels = _named(Path(args.images_dir), Path(args.labels_dir))
    pairs = sorted(set(images) & set(labels))
    for what, files, other in (("image", images, "label map"), ("label map", labels, "image")):
        unpaired = sorted(set(files) - set(pairs))
        if unpaired:
            shown = listing((files[s] for s in unpaired), 20, ", ...")
            print(f"warning: {len(unpaired)} {what}(s) without a matching {other}: {shown}", file=sys.stderr)
    if not pairs:
        raise UserError(f"{args.images_dir} and {args.labels_dir}: no file names in common; nothing to pair")
    paired = [images[s] for s in pairs]
    extra = _joined(args.join, paired, [args.image_column, args.label_column]) if args.join else {}
    extra |= _dicom_columns(paired, [args.image_column, args.label_column, *extra])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([args.image_column, args.label_column, *extra])
        for i, s in enumerate(pairs):
            cells = [values[i] for values in extra.values()]
            writer.writerow([_relative(images[s], out.parent), _relative(labels[s], out.parent), *cells])
    print(f"make-csv: {len(pairs)} rows written to {out} (paths relative to {out.parent.resolve()})")
    if PATIENT in extra:
        print(f"make-csv: column '{PATIENT}' holds each image's DICOM PatientID ({len(set(extra[PATIENT]))} "
              f"patients); data.split.group: {PATIENT} keeps each patient's images in one split")  # fmt: skip
    if PIXEL_MM in extra:
        print(f"make-csv: column '{PIXEL_MM}' holds each image's mm per pixel from its DICOM header; "
              f"a measure output's spacing_column: {PIXEL_MM} measures in mm")  # fmt: skip
    _segments([labels[s] for s in pairs], args.label_column)


def _segments(files: list[Path], column: str) -> None:
    """For DICOM SEG label files: an `outputs` entry per segment (segment k is label value k), and a
    warning where files give one segment number different labels (numbers are each file's own)."""
    named: dict[int, dict[str, list[Path]]] = {}
    for path in files:
        for number, label in dicom_scans.segment_labels(path).items():  # {} for a label file of another kind
            named.setdefault(number, {}).setdefault(label, []).append(path)
    for number, labels in sorted(named.items()):
        if len(labels) > 1:
            shown = "; ".join(f"{label!r} in {listing(paths, 2, ', ...')}" for label, paths in labels.items())
            print(f"warning: segment {number} is {shown}: label value {number} holds different structures; "
                  "renumber the segments alike in every file", file=sys.stderr)  # fmt: skip
    if named:
        print("outputs for params.yaml, one mask per segment of the DICOM SEG files (segment k is label value k):")
        for number, labels in sorted(named.items()):
            name = _key(max(labels, key=lambda label: len(labels[label])))  # the label most files give it
            print(f"  {name}: {{type: segmentation, column: {column}, label: {number}}}")


def _joined(source: str, images: list[Path], columns: list[str]) -> dict[str, list[str]]:
    """Another CSV's columns for each image (a spreadsheet of per-image values: HC18's pixel sizes,
    a diagnosis per image), its rows matched by the column that names most of the images, by file
    name with or without its suffix; an image the CSV lacks gets empty cells, and a warning."""
    table = read_table(source)
    names = [split_name(path)[0] for path in images]
    keys = {c: [split_name(Path(row[c].replace("\\", "/")))[0] for row in table.rows] for c in table.header}
    key = max(table.header, key=lambda c: len(set(keys[c]) & set(names)))
    if not set(keys[key]) & set(names):
        raise UserError(f"{source}: no column names the images by file name (as {images[0].name} or {names[0]})")
    rows: dict[str, int] = {}
    for i, name in enumerate(keys[key]):
        if (first := rows.setdefault(name, i)) != i:
            raise UserError(f"{table.where(i, key)}: {name!r} again (row {table.numbers[first]}); one row per image")
    added = [c for c in table.header if c != key]
    if clash := [c for c in added if c in columns]:
        raise UserError(
            f"{source}: column {clash[0]!r} is one make-csv writes itself; rename it there, or name make-csv's "
            "with --image-column and --label-column"
        )
    lacking = [path for path, name in zip(images, names) if name not in rows]
    if lacking:
        shown = listing(lacking, 20, ", ...")
        print(f"warning: {len(lacking)} image(s) without a row in {source} (left empty): {shown}", file=sys.stderr)
    print(f"make-csv: columns {', '.join(map(repr, added))} from {source}, by its column {key!r}")
    return {c: [table.rows[rows[n]][c] if n in rows else "" for n in names] for c in added}


def _dicom_columns(images: list[Path], columns: list[str]) -> dict[str, list[str]]:
    """Columns from the images' DICOM headers, each where every image has a value: `patient`, each
    image's PatientID, where they name at least two patients (an anonymised set names one, or
    none); `pixel_mm`, each image's mm per square pixel. None that the CSV names already."""
    found: dict[str, list[str]] = {}
    headers = [dicom.header(path) for path in images]  # each file's read once
    patients = [dicom.patient_id(h) for h in headers]
    if PATIENT not in columns and all(patients) and len(set(patients)) > 1:
        found[PATIENT] = [str(p) for p in patients]
    sizes = [None if path.is_dir() else dicom.pixel_mm(h) for path, h in zip(images, headers)]  # scans: own spacing
    if PIXEL_MM not in columns and all(sizes):
        found[PIXEL_MM] = [f"{size:.6g}" for size in sizes if size]
    return found


def _named(images_dir: Path, labels_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The images and the label maps by the name they pair on: their file names without suffix,
    else without an ending every image, or every label map, shares (ISIC_0001 with
    ISIC_0001_segmentation, 21_training with 21_manual1); from one folder, `_one_folder`'s."""
    if images_dir.resolve() == labels_dir.resolve():
        return _one_folder(_by_stem(images_dir), images_dir)
    images, labels = _by_stem(images_dir), _by_stem(labels_dir)
    if not set(images) & set(labels):
        image_end, label_end = _shared_ending(list(images)), _shared_ending(list(labels))
        images = {stem.removesuffix(image_end): path for stem, path in images.items()}
        labels = {stem.removesuffix(label_end): path for stem, path in labels.items()}
        if set(images) & set(labels):
            print(f"make-csv: paired by name without the ending {image_end!r} of every image and {label_end!r} of "
                  "every label map")  # fmt: skip
    return images, labels


def _one_folder(files: dict[str, Path], folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Images and label maps in one folder (HC18's 000_HC.png with 000_HC_Annotation.png, BUSI's
    'benign (1).png' with 'benign (1)_mask.png'): the label maps are the files named as another
    file with the ending that most such pairs share, from a `_`, `-`, `.` or space on."""
    stems = sorted(files)  # the names that start with a name follow it
    endings: Counter[str] = Counter()
    for i, stem in enumerate(stems):
        for other in stems[i + 1 :]:
            if not other.startswith(stem):
                break
            if other[len(stem)] in "_-. ":
                endings[other[len(stem) :]] += 1
    if not endings:
        raise UserError(
            f"{folder}: IMAGES_DIR and LABELS_DIR are one folder, and no file is named as another with an ending "
            "(such as _mask) after it; give the label maps' own folder"
        )
    [(ending, _)] = endings.most_common(1)
    print(f"make-csv: one folder: the label maps are the files named as an image with {ending!r} after it")
    labels = {stem.removesuffix(ending): files[stem] for stem in stems if stem.endswith(ending)}
    return {stem: files[stem] for stem in stems if not stem.endswith(ending)}, labels


def _shared_ending(stems: list[str]) -> str:
    """The longest ending that every one of several names shares and that starts at a `_`, `-`,
    `.` or space before the rest of each name: `_segmentation` of ISIC_0001_segmentation and
    ISIC_0002_segmentation, "" where there is none."""
    if len(stems) < 2:
        return ""
    common = os.path.commonprefix([stem[::-1] for stem in stems])[::-1]
    shortest = min(len(stem) for stem in stems)
    starts = [i for i, c in enumerate(common) if c in "_-. " and len(common) - i < shortest]
    return common[starts[0] :] if starts else ""


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem, suffix = split_name(path)
        # a folder of one DICOM series' slices (a scan), or a DICOM file named by its UID or bare: by the whole name
        if (path.is_dir() and dicom.is_series(path)) or (not suffix and dicom.is_file(path)):
            stem, suffix = path.name, ".dcm"
        if not suffix or path.name.startswith("."):
            continue
        if stem in files:
            raise UserError(f"{folder}: {files[stem].name} and {path.name} share the name {stem!r}")
        files[stem] = path
    return files


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def make_coco_csv(args: argparse.Namespace) -> None:
    """Rasterises a COCO export into <csv folder>/labels/<image stem>.png, writes labels.json (category
    name -> label value) and the CSV pairing each image in IMAGES_DIR with its label map."""
    import json

    from PIL import Image

    from cnn_factory.data.coco import CocoImage, locate, read_coco

    out, images_dir = Path(args.out), Path(args.images_dir)
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: not a folder")
    coco = read_coco(Path(args.coco))
    present: dict[Path, CocoImage] = {}  # file -> the export's image naming it
    missing = []
    for image in coco.images:
        if (file := locate(images_dir, image.file_name)) is None:
            missing.append(image.file_name)
        elif (other := present.setdefault(file, image)) is not image:
            raise UserError(
                f"{args.coco}: images {other.id} ({other.file_name}) and {image.id} ({image.file_name}) are both "
                f"{file}; leave one out of the export, or keep its folders under IMAGES_DIR as it names them"
            )
    if missing:
        shown = listing(missing, 20, ", ...")
        print(f"warning: {len(missing)} image(s) of {args.coco} not in {images_dir}: {shown}", file=sys.stderr)
    if not present:
        raise UserError(
            f"{args.coco}: none of its {len(coco.images)} images is in {images_dir} (the first is named "
            f"{coco.images[0].file_name if coco.images else None!r}); check IMAGES_DIR"
        )
    labels, rows = out.parent / "labels", []
    building = out.parent / "labels.tmp"  # swapped in whole: a bad annotation leaves the last label maps as they were
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    for file, image in present.items():
        name = file.relative_to(images_dir).with_suffix(".png").as_posix().replace("/", "__")
        if (building / name).exists():
            raise UserError(f"{args.coco}: {file} and another image share the label map name {name}; rename one")
        Image.fromarray(coco.label_map(image)).save(building / name)
        rows.append((_relative(file, out.parent), _relative(labels / name, out.parent)))
    shutil.rmtree(labels, ignore_errors=True)
    building.rename(labels)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([args.image_column, args.label_column])
        writer.writerows(rows)
    (out.parent / "labels.json").write_text(json.dumps(coco.labels, indent=1) + "\n")
    print(
        f"make-csv: {len(rows)} rows written to {out}, label maps in {labels}, "
        f"label values in {out.parent / 'labels.json'}"
    )
    if coco.grouping:
        print(f"left out, as they only group other categories: {', '.join(coco.grouping)}")
    print("outputs for params.yaml, one mask per category (or one class mask: labels: {name: value, ...}):")
    for name, value in coco.labels.items():
        print(f"  {_key(name)}: {{type: segmentation, column: {args.label_column}, label: {value}}}")


def _key(name: str) -> str:
    """A category name as an output name: letters, digits and underscores."""
    key = "".join(c if c.isalnum() else "_" for c in name.strip()) or "category"
    return key if not key[0].isdigit() else f"c_{key}"

"""`cnn-factory make-csv IMAGES_DIR LABELS_DIR`: pairs images and label maps (or scans and label
volumes: NIfTI, TIFF stacks) by file name into a CSV."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from cnn_factory.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".nii", ".nii.gz"}


def _stem_and_suffix(path: Path) -> tuple[str, str]:
    """`scan` and `.nii.gz` of scan.nii.gz, `a` and `.png` of a.png."""
    name = path.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")], ".nii.gz"
    return path.stem, path.suffix.lower()


def make_csv(args: argparse.Namespace) -> None:
    """Writes a CSV pairing IMAGES_DIR/<stem>.* with LABELS_DIR/<stem>.*; unpaired files go to stderr."""
    out = Path(args.out)
    images, labels = _by_stem(Path(args.images_dir)), _by_stem(Path(args.labels_dir))
    pairs = sorted(set(images) & set(labels))
    for what, files, other in (("image", images, "label map"), ("label map", labels, "image")):
        unpaired = sorted(set(files) - set(pairs))
        if unpaired:
            listing = ", ".join(str(files[s]) for s in unpaired[:20]) + (", ..." if len(unpaired) > 20 else "")
            print(f"warning: {len(unpaired)} {what}(s) without a matching {other}: {listing}", file=sys.stderr)
    if not pairs:
        raise UserError(f"{args.images_dir} and {args.labels_dir}: no file names in common; nothing to pair")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([args.image_column, args.label_column])
        for stem in pairs:
            writer.writerow([_relative(images[stem], out.parent), _relative(labels[stem], out.parent)])
    print(f"make-csv: {len(pairs)} rows written to {out} (paths relative to {out.parent.resolve()})")


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem, suffix = _stem_and_suffix(path)
        if suffix not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if stem in files:
            raise UserError(f"{folder}: {files[stem].name} and {path.name} share the name {stem!r}")
        files[stem] = path
    return files


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()

"""What a decoded row depends on, as the row cache's key: `row_key` names what `load_row` makes of
a row from its files' bytes, its cells and `decoding_key`, the definitions and the decoding code."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import numpy as np

from cnn_factory import dicom, dicom_scans, images
from cnn_factory import volumes as reading
from cnn_factory.config import Config
from cnn_factory.data import grids, label_maps, resample, rows
from cnn_factory.data.table import Table
from cnn_factory.outputs import decoding
from cnn_factory.outputs.base import csv_columns

# the code that decides what a row decodes to: decoding a row (rows.py, grids.py), reading images, volumes
# (NIfTI, TIFF, DICOM) and label maps, resampling, and the kinds' data halves (outputs/decoding.py), not
# their losses, metrics, plots or writers
DECODING_MODULES = (rows, grids, images, reading, dicom, dicom_scans, label_maps, resample, decoding)


def decoding_key(cfg: Config) -> str:
    """Everything besides a row's own files and cells that decides its arrays: the input and
    output definitions (less their training-only fields), the decoding code and the decoders' versions."""
    inputs = [[n, s.model_dump(mode="json", exclude=s.unused)] for n, s in cfg.inputs.items()]
    outputs = [[n, s.model_dump(mode="json", exclude=set(s.training_only))] for n, s in cfg.outputs.items()]
    code = [hashlib.sha256(Path(str(m.__file__)).read_bytes()).hexdigest() for m in DECODING_MODULES]
    # the decoders: read from the installed packages' metadata, without importing them
    decoders = ("scikit-image", "scipy", "tifffile", "nibabel", "pydicom", "python-gdcm")
    versions = [np.__version__, *(_version(name) for name in decoders)]
    return json.dumps([inputs, outputs, code, *versions], default=str)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def row_key(table: Table, index: int, cfg: Config, defs: str) -> str | None:
    """32 hex digits naming what load_row makes of this row: a hash of `defs`, the bytes of the
    files it names and its category/numeric cells. None when a file is missing or unreadable
    (load_row then says why)."""
    row = table.rows[index]
    files = [s.column for s in cfg.inputs.values()] + [s.column for s in cfg.outputs.values() if s.reads_label_map]
    cells = [c for s in cfg.outputs.values() if not s.reads_label_map for c in csv_columns(s)]
    digest = hashlib.sha256(defs.encode())
    for column in dict.fromkeys(files):
        if not row[column]:
            return None
        try:
            content = content_digest(cfg.data.resolve(row[column]))
        except OSError:
            return None
        digest.update(f"\nfile {column!r} {content}".encode())
    for column in dict.fromkeys(cells):
        digest.update(f"\ncell {column!r} {row[column]!r}".encode())
    return digest.hexdigest()[:32]


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes; of a folder (a DICOM series), of each file's name and digest."""
    if not path.is_dir():
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    digest = hashlib.sha256()
    for child in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(f"{child.name} {content_digest(child)}\n".encode())
    return digest.hexdigest()

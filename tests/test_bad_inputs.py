"""The catalogue of bad inputs, each through the real `dvc repro`: a non-zero exit, one line that
names the file, row, column or key and what was expected, no traceback, and the model and the
prepared data of the last good run byte-for-byte as they were."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from skimage import io

from tests.conftest import make_repo, run, tiny_params, with_majority

pytestmark = pytest.mark.slow  # runs the real dvc pipeline; `pytest -m 'not slow'` skips it

KEPT = ("models", "data/prepared")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A repository whose data lives in data/raw (as a user's would), after one good `dvc repro`."""
    params = tiny_params()
    params["data"].update(csv="data/raw/data.csv", root="data/raw")
    repo = make_repo(tmp_path_factory.mktemp("bad") / "repo", params)
    run(["python", "-m", "stages.make_example", "--out", "data/raw"], repo)
    run(["dvc", "repro", "evaluate"], repo)
    return repo


def snapshot(repo: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(repo)): p.read_bytes() for d in KEPT for p in sorted((repo / d).rglob("*")) if p.is_file()
    }


def edit_csv(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def apply(repo: Path) -> None:
        path = repo / "data" / "raw" / "data.csv"
        path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")

    return apply


def edit_params(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(repo: Path) -> None:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        change(params)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    return apply


def write_image(name: str, pixels: np.ndarray) -> Callable[[Path], None]:
    return lambda repo: io.imsave(repo / "data" / "raw" / name, pixels, check_contrast=False)


def replace_cell(row: int, old: str, new: str) -> Callable[[Path], None]:
    return edit_csv(lambda lines: [line.replace(old, new) if i == row - 1 else line for i, line in enumerate(lines)])


def add_column(name: str, values: Callable[[int], str]) -> Callable[[Path], None]:
    return edit_csv(lambda lines: [f"{lines[0]},{name}"] + [f"{x},{values(i)}" for i, x in enumerate(lines[1:])])


def truncate(repo: Path) -> None:
    path = repo / "data" / "raw" / "images" / "0001.png"
    path.write_bytes(path.read_bytes()[:200])


def empty(repo: Path) -> None:
    (repo / "data" / "raw" / "images" / "0001.png").write_bytes(b"")


def both(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(repo: Path) -> None:
        for change in changes:
            change(repo)

    return apply


def set_key(path: str, value) -> Callable[[Path], None]:
    def change(params: dict) -> None:
        *parents, last = path.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[last] = value

    return edit_params(change)


CSV = "data/raw/data.csv"
CASES = {
    "empty-csv": (edit_csv(lambda lines: []), f"{CSV}: the CSV is empty"),
    "no-header": (edit_csv(lambda lines: lines[1:]), f"{CSV}: row 1 must be the header"),
    "duplicate-columns": (
        edit_csv(lambda lines: [lines[0] + ",image"] + [x + ",x" for x in lines[1:]]),
        f"{CSV}: row 1: column name 'image' appears twice",
    ),
    "missing-column": (
        edit_csv(lambda lines: [",".join(x.split(",")[::2]) for x in lines]),
        f"{CSV}: row 1: no column 'labels' (needed by outputs.round)",
    ),
    "names-overlap": (
        edit_params(lambda p: p["outputs"].update(image=p["outputs"].pop("round"))),
        "inputs.image and outputs.image: input and output names must not overlap",
    ),
    "missing-file": (
        replace_cell(3, "images/0001.png", "images/gone.png"),
        f"{CSV}: row 3, column 'image': file not found: data/raw/images/gone.png",
    ),
    "not-an-image": (
        replace_cell(3, "images/0001.png", "data.csv"),
        f"{CSV}: row 3, column 'image': data/raw/data.csv cannot be read as an image",
    ),
    "truncated-image": (truncate, f"{CSV}: row 3, column 'image': data/raw/images/0001.png cannot be read"),
    "empty-file": (empty, f"{CSV}: row 3, column 'image': data/raw/images/0001.png is an empty file (0 bytes)"),
    "directory-cell": (
        replace_cell(3, "labels/0001.png", "labels"),
        f"{CSV}: row 3, column 'labels': data/raw/labels is a directory, expected an image file",
    ),
    "wrong-channels": (
        set_key("inputs.image.channels", 1),
        "row 2, column 'image': data/raw/images/0000.png has 3 channel(s) but inputs.image.channels is 1",
    ),
    "labels-absent-everywhere": (
        set_key("outputs.round.label", 9),
        "outputs.round: 24 of 24 label maps in column 'labels' hold none of the label values [9]",
    ),
    "label-map-size": (
        write_image("labels/0002.png", np.zeros((8, 8), np.uint8)),
        "row 4, column 'labels': data/raw/labels/0002.png is 8x8 but its image is 16x16",
    ),
    "colour-label-map": (
        write_image(
            "labels/0002.png", np.stack([np.full((16, 16), 128, np.uint8), *[np.zeros((16, 16), np.uint8)] * 2], -1)
        ),
        "row 4, column 'labels': data/raw/labels/0002.png is a colour image; expected a single-channel label map "
        "of integer values, or add outputs.round.colours to map its colours to label values",
    ),
    "bad-colour-table": (
        set_key("outputs.round.colours", {"#80000": 1}),
        "params.yaml: outputs.round.colours: '#80000' is not a colour; expected '#rrggbb' in hex",
    ),
    "unknown-class": (
        replace_cell(2, ",disc", ",hexagon"),
        "row 2, column 'majority': 'hexagon' is not a known class; expected one of disc, square, triangle",
    ),
    "class-id-out-of-range": (
        both(
            edit_params(lambda p: p["outputs"]["majority"].pop("classes")),
            edit_csv(lambda lines: [lines[0]] + [with_majority(x, "7") for x in lines[1:]]),
        ),
        "row 2, column 'majority': '7' is not a known class; expected one of 0, 1, 2",
    ),
    "not-a-number": (
        both(
            add_column("area", lambda i: "lots" if i == 2 else str(i)),
            set_key("outputs.area", {"type": "numeric", "loss": "mse"}),
        ),
        "row 4, column 'area': 'lots' is not a number",
    ),
    "nan-cell": (
        both(
            add_column("area", lambda i: "nan" if i == 0 else str(i)),
            set_key("outputs.area", {"type": "numeric", "loss": "mse"}),
        ),
        "row 2, column 'area': 'nan' is not a finite number",
    ),
    "empty-cell": (
        edit_csv(lambda lines: [x if i != 4 else with_majority(x, "") for i, x in enumerate(lines)]),
        "row 5, column 'majority': empty cell; expected a value for outputs.majority",
    ),
    "unknown-split": (
        both(add_column("fold", lambda i: "holdout" if i == 0 else "train"), set_key("data.split.column", "fold")),
        "row 2, column 'fold': unknown split 'holdout'; expected train, val or test",
    ),
    "empty-split": (set_key("data.split.val", 0.01), "the val split is empty"),
    "unknown-key": (set_key("train.epoch", 3), "train.epoch: unknown key; did you mean 'train.epochs'?"),
    "wrong-type": (set_key("train.lr", "fast"), "train.lr: expected a number, got 'fast' (str)"),
    "zero-size": (
        set_key("inputs.image.size", [0, 16]),
        "inputs.image.size: expected [height, width] (images) or [depth, height, width] (volumes) as positive "
        "integers, got [0, 16]",
    ),
    "zero-epochs": (set_key("train.epochs", 0), "train.epochs: expected an integer >= 1, got 0"),
    "negative-batch": (set_key("train.batch_size", -2), "train.batch_size: expected an integer >= 1, got -2"),
    "loss-misfit": (
        set_key("outputs.majority.loss", "dice"),
        "outputs.majority.loss: unknown value 'dice'; expected one of categorical_crossentropy",
    ),
    "measure-of-no-mask": (
        set_key("outputs.area", {"type": "measure", "of": "majority", "measure": "area"}),
        "outputs.area.of: 'majority' is no mask output; expected one of round, angular",
    ),
    "measure-in-mm-without-spacing": (
        set_key("outputs.area", {"type": "measure", "of": "round", "measure": "area", "unit": "mm"}),
        "outputs.area.unit: mm needs each image's pixel size",
    ),
    "measure-spacing-not-positive": (
        both(
            add_column("pixel_mm", lambda i: "0" if i == 4 else "0.5"),
            set_key(
                "outputs.area", {"type": "measure", "of": "round", "measure": "area", "spacing_column": "pixel_mm"}
            ),
        ),
        f"{CSV}: row 6, column 'pixel_mm': '0' is not positive; expected mm per pixel for outputs.area.spacing_column",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly_and_keeps_the_last_good_outputs(built, tmp_path, case):
    change, expected = CASES[case]
    repo = Path(shutil.copytree(built, tmp_path / "repo", symlinks=True))
    before = snapshot(repo)
    change(repo)
    result = run(["dvc", "repro", "evaluate"], repo, check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert snapshot(repo) == before


def test_labels_absent_from_some_rows_warn_with_a_count(built, tmp_path):
    repo = Path(shutil.copytree(built, tmp_path / "repo", symlinks=True))
    for i in range(3):  # three label maps without a disc (label 1)
        path = repo / "data" / "raw" / "labels" / f"{i:04d}.png"
        labels = io.imread(path)
        io.imsave(path, np.where(labels == 1, 0, labels).astype(np.uint8), check_contrast=False)
    result = run(["dvc", "repro", "prepare"], repo)
    assert "warning: outputs.round:" in result.stderr and "label maps in column 'labels'" in result.stderr


def test_spreadsheet_csv_just_works(built, tmp_path):
    """Windows line endings, a BOM, quoted paths with spaces and non-ASCII names."""
    repo = Path(shutil.copytree(built, tmp_path / "repo", symlinks=True))
    raw = repo / "data" / "raw"
    (raw / "images" / "0000.png").rename(raw / "images" / "île de mai 0.png")
    lines = (raw / "data.csv").read_text().splitlines()
    lines[1] = lines[1].replace("images/0000.png", '"images/île de mai 0.png"')
    (raw / "data.csv").write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    result = run(["dvc", "repro", "prepare"], repo)
    assert "prepare: " in result.stdout


def test_damaged_prepared_array_is_reported_and_rebuilt(built, tmp_path):
    repo = Path(shutil.copytree(built, tmp_path / "repo", symlinks=True))
    array = repo / "data" / "prepared" / "train" / "round.npy"
    array.write_bytes(array.read_bytes()[:-100])  # truncated
    result = run(["python", "-m", "stages.train"], repo, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data/prepared/train/round.npy: damaged" in result.stderr and "dvc repro" in result.stderr
    assert "prepare" in run(["dvc", "repro", "evaluate"], repo).stdout  # DVC sees the changed output
    np.load(array)  # rebuilt whole

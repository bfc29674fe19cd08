"""prepare: label-map splitting, the cache it writes, and a clear error for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import io

from stages.config import parse_params
from stages.errors import UserError
from stages.prepare import validate_and_load, write_prepared
from stages.validate import split_mask


def config_for(params: dict, example_dir: Path, csv_text: str | None = None, name: str = "data.csv"):
    csv_path = example_dir / name
    if csv_text is not None:
        csv_path.write_text(csv_text, newline="")
    params["data"].update(csv=str(csv_path), root=str(example_dir))
    return parse_params(params)


def rows_of(example_dir: Path) -> list[str]:
    return (example_dir / "data.csv").read_text().splitlines()


def problems(params, example_dir, csv_text) -> str:
    with pytest.raises(UserError) as err:
        validate_and_load(config_for(params, example_dir, csv_text, "bad.csv"))
    return str(err.value)


def test_split_mask_merges_label_values(params):
    cfg = parse_params(params)
    labels = np.array([[0, 1, 2], [3, 2, 0]], np.uint8)
    angular = cfg.outputs["angular"]  # label: [2, 3]
    spec = angular.__class__(**{**angular.__dict__, "size": (2, 3)})
    assert split_mask(labels, spec).tolist() == [[0, 0, 1], [1, 1, 0]]
    assert split_mask(labels, spec).dtype == np.uint8


def test_split_mask_resizes_nearest_and_stays_boolean(params):
    cfg = parse_params(params)
    labels = np.kron(np.array([[1, 0], [0, 3]], np.uint8), np.ones((4, 4), np.uint8))  # 8x8
    spec = cfg.outputs["round"].__class__(**{**cfg.outputs["round"].__dict__, "size": (4, 4)})
    mask = split_mask(labels, spec)
    assert mask.shape == (4, 4)
    assert set(np.unique(mask)) <= {0, 1}
    assert mask[:2, :2].all() and not mask[2:, 2:].any()


def test_prepared_cache_layout(params, example_dir, tmp_path):
    cfg = config_for(params, example_dir)
    table, splits, rows = validate_and_load(cfg)
    report = write_prepared(cfg, table, splits, rows, tmp_path / "prepared")
    train = np.load(tmp_path / "prepared" / "train" / "image.npy", mmap_mode="r")
    assert train.dtype == np.uint8 and train.shape[1:] == (3, 16, 16)
    assert np.load(tmp_path / "prepared" / "train" / "round.npy").dtype == np.uint8
    assert np.load(tmp_path / "prepared" / "train" / "majority.npy").dtype == np.int64
    assert sum(report["rows"].values()) == 24
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert len(manifest["inputs"]["image"]["mean"]) == 3
    all_rows = sorted(r for s in manifest["splits"].values() for r in s["rows"])
    assert all_rows == list(range(2, 26))  # every CSV row lands in exactly one split


def test_masks_match_label_maps(params, example_dir, tmp_path):
    cfg = config_for(params, example_dir)
    table, splits, rows = validate_and_load(cfg)
    labels = io.imread(example_dir / table.rows[0]["labels"])
    assert np.array_equal(rows[0]["round"], labels == 1)
    assert np.array_equal(rows[0]["angular"], np.isin(labels, [2, 3]))


def test_split_column_assigns_rows(params, example_dir):
    lines = rows_of(example_dir)
    names = ["train"] * 20 + ["val"] * 2 + ["test"] * 2
    text = "\n".join([lines[0] + ",fold"] + [f"{line},{n}" for line, n in zip(lines[1:], names)])
    params["data"]["split"]["column"] = "fold"
    _, splits, _ = validate_and_load(config_for(params, example_dir, text, "folds.csv"))
    assert splits == names


def test_windows_line_endings_bom_and_quoted_paths_just_work(params, example_dir):
    (example_dir / "images" / "été 1.png").write_bytes((example_dir / "images" / "0000.png").read_bytes())
    lines = rows_of(example_dir)
    lines[1] = '"images/été 1.png","labels/0000.png",' + lines[1].split(",")[2]
    text = "\ufeff" + "\r\n".join(lines) + "\r\n"
    csv_path = example_dir / "windows.csv"
    csv_path.write_bytes(text.encode("utf-8"))
    table, _, rows = validate_and_load(config_for(params, example_dir, None, "windows.csv"))
    assert table.header == ["image", "labels", "majority"]
    assert len(rows) == 24


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda L: L[:1] + [L[1].replace("images/0000.png", "images/nope.png")] + L[2:],
            "bad.csv: row 2, column 'image': file not found",
        ),
        (
            lambda L: (
                L[:1]
                + [L[1].replace(",disc", ",hexagon").replace(",square", ",hexagon").replace(",triangle", ",hexagon")]
                + L[2:]
            ),
            "bad.csv: row 2, column 'majority': 'hexagon' is not a known class; expected one of disc, square, triangle",
        ),
        (
            lambda L: L[:1] + [",".join(L[1].split(",")[:2]) + ","] + L[2:],
            "bad.csv: row 2, column 'majority': empty cell",
        ),
        (lambda L: L[:1] + [L[1].replace("images/0000.png", "data.csv")] + L[2:], "bad.csv: row 2, column 'image':"),
        (
            lambda L: ["image,majority"] + [",".join(x.split(",")[::2]) for x in L[1:]],
            "bad.csv: row 1: no column 'labels' (needed by outputs.round)",
        ),
        (lambda L: [L[0] + ",image"] + [x + ",x" for x in L[1:]], "bad.csv: row 1: column name 'image' appears twice"),
        (lambda L: [], "bad.csv: the CSV is empty"),
        (lambda L: L[:1], "bad.csv: the CSV has a header but no data rows"),
        (lambda L: L[1:], "row 1 must be the header"),
    ],
    ids=[
        "missing-file",
        "unknown-class",
        "empty-cell",
        "not-an-image",
        "missing-column",
        "duplicate-column",
        "empty-csv",
        "no-rows",
        "no-header",
    ],
)
def test_bad_csv_is_reported_with_row_and_column(params, example_dir, edit, expected):
    assert expected in problems(params, example_dir, "\n".join(edit(rows_of(example_dir))))


def test_all_problems_are_reported_at_once(params, example_dir):
    lines = rows_of(example_dir)
    lines[3] = lines[3].replace("images/0002.png", "images/missing.png")
    lines[5] = ",".join(lines[5].split(",")[:2]) + ",circle"
    message = problems(params, example_dir, "\n".join(lines))
    assert "row 4, column 'image': file not found" in message
    assert "row 6, column 'majority': 'circle' is not a known class" in message
    assert message.startswith("2 problem(s)")


def test_truncated_image(params, example_dir):
    data = (example_dir / "images" / "0001.png").read_bytes()
    (example_dir / "images" / "0001.png").write_bytes(data[: len(data) // 2])
    assert "row 3, column 'image':" in problems(params, example_dir, "\n".join(rows_of(example_dir)))


def test_wrong_channel_count(params, example_dir):
    io.imsave(example_dir / "images" / "0001.png", np.zeros((16, 16), np.uint8), check_contrast=False)
    message = problems(params, example_dir, "\n".join(rows_of(example_dir)))
    assert "row 3, column 'image':" in message and "has 1 channel(s) but inputs.image.channels is 3" in message


def test_label_map_of_another_size(params, example_dir):
    io.imsave(example_dir / "labels" / "0002.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    message = problems(params, example_dir, "\n".join(rows_of(example_dir)))
    assert "row 4, column 'labels':" in message and "a label map must match its image's size" in message


def test_numeric_values_must_parse(params, example_dir):
    lines = rows_of(example_dir)
    text = "\n".join([lines[0] + ",area"] + [f"{x},{i}.5" for i, x in enumerate(lines[1:])])
    text = text.replace(",3.5", ",lots").replace(",4.5", ",nan")
    params["outputs"]["area"] = {"type": "numeric", "loss": "mse", "weight": 1.0}
    message = problems(params, example_dir, text)
    assert "row 5, column 'area': 'lots' is not a number" in message
    assert "row 6, column 'area': 'nan' is not a finite number" in message


def test_label_absent_everywhere_is_an_error(params, example_dir):
    params["outputs"]["round"]["label"] = 7
    message = problems(params, example_dir, "\n".join(rows_of(example_dir)))
    assert "outputs.round: 24 of 24 label maps in column 'labels' hold none of the label values [7]" in message


def test_label_absent_somewhere_is_a_warning(params, example_dir, capsys):
    validate_and_load(config_for(params, example_dir))
    assert "warning: outputs.round:" in capsys.readouterr().err


def test_split_column_with_unknown_value(params, example_dir):
    lines = rows_of(example_dir)
    text = "\n".join([lines[0] + ",fold"] + [f"{x},{'train' if i else 'holdout'}" for i, x in enumerate(lines[1:])])
    params["data"]["split"]["column"] = "fold"
    assert "row 2, column 'fold': unknown split 'holdout'" in problems(params, example_dir, text)


def test_split_left_empty(params, example_dir):
    params["data"]["split"].update(val=0.01, test=0.2)
    message = problems(params, example_dir, "\n".join(rows_of(example_dir)))
    assert "the val split is empty" in message


def test_blank_lines_keep_row_numbers_true_to_the_file(params, example_dir):
    lines = rows_of(example_dir)
    lines.insert(2, "")  # a blank line: the file's row 3
    lines[5] = lines[5].replace("images/0003.png", "images/missing.png")  # file row 6
    assert "row 6, column 'image': file not found" in problems(params, example_dir, "\n".join(lines))

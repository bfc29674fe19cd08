"""prepare: label-map splitting, the cache it writes, and a clear error for each bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import io

from cnn_factory.config import parse_params
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import prepare, validate_and_load, write_prepared
from cnn_factory.data.row_keys import DECODING_MODULES
from cnn_factory.errors import UserError
from cnn_factory.outputs import KINDS
from tests.conftest import with_majority


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


def test_masks_merge_label_values(params):
    cfg = parse_params(params)
    labels = np.array([[0, 1, 2], [3, 2, 0]], np.uint8)
    angular = cfg.outputs["angular"]  # label: [2, 3]
    spec = angular.model_copy(update={"size": (2, 3)})
    assert spec.decode("labels/x.png", labels).tolist() == [[0, 0, 1], [1, 1, 0]]
    assert spec.decode("labels/x.png", labels).dtype == np.uint8


def test_masks_resize_nearest_and_stay_boolean(params):
    cfg = parse_params(params)
    labels = np.kron(np.array([[1, 0], [0, 3]], np.uint8), np.ones((4, 4), np.uint8))  # 8x8
    spec = cfg.outputs["round"].model_copy(update={"size": (4, 4)})
    mask = spec.decode("labels/x.png", labels)
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
    lines[1] = '"images/été 1.png","labels/0000.png",' + ",".join(lines[1].split(",")[2:])
    text = "\ufeff" + "\r\n".join(lines) + "\r\n"
    csv_path = example_dir / "windows.csv"
    csv_path.write_bytes(text.encode("utf-8"))
    table, _, rows = validate_and_load(config_for(params, example_dir, None, "windows.csv"))
    assert table.header == ["image", "labels", "majority", "round_px"]
    assert len(rows) == 24

    lines[2] = lines[2].replace("/", "\\")  # images\0001.png, as paths are written on Windows
    csv_path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    _, _, windows_rows = validate_and_load(config_for(params, example_dir, None, "windows.csv"))
    assert rows[1] and all(np.array_equal(windows_rows[1][k], v) for k, v in rows[1].items())


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_spreadsheet_of_a_decimal_comma_locale_just_works(params, example_dir, separator):
    """Where the comma is the decimal mark, spreadsheets save CSV with semicolons (tabs when copied):
    the header says which, and with semicolons a number's decimal comma reads as a point."""
    comma = rows_of(example_dir)
    lines = [comma[0].replace(",", separator)]
    for line in comma[1:]:
        *cells, round_px = line.split(",")
        lines.append(separator.join([*cells, f"{round_px},5" if separator == ";" else f"{round_px}.5"]))
    table, _, rows = validate_and_load(config_for(params, example_dir, "\n".join(lines), "locale.csv"))
    assert table.header == ["image", "labels", "majority", "round_px"] and len(rows) == 24
    assert [r["round_px"] for r in table.rows] == [f"{line.split(',')[-1]}.5" for line in comma[1:]]
    assert table.rows[0]["image"] == comma[1].split(",")[0]

    lines[2] = lines[2].replace(separator, " ", 1)  # a row a separator short
    message = problems(params, example_dir, "\n".join(lines))
    kind = {";": "semicolons", "\t": "tabs"}[separator]
    assert message.endswith(f"bad.csv: row 3: 3 cells but the header has 4; quote cells that contain {kind}")


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
            lambda L: L[:1] + [with_majority(L[1], "")] + L[2:],
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


def test_empty_file_and_directory_cells_say_so_plainly(params, example_dir):
    (example_dir / "images" / "empty.png").write_bytes(b"")
    lines = rows_of(example_dir)
    lines[2] = lines[2].replace("images/0001.png", "images/empty.png")
    lines[3] = lines[3].replace("labels/0002.png", "labels")
    message = problems(params, example_dir, "\n".join(lines))
    assert f"row 3, column 'image': {example_dir}/images/empty.png is an empty file (0 bytes)" in message
    assert f"row 4, column 'labels': {example_dir}/labels is a directory, expected an image file" in message
    assert "cannot be read" not in message and message.startswith("2 problem(s)")


def test_all_problems_are_reported_at_once(params, example_dir):
    lines = rows_of(example_dir)
    lines[3] = lines[3].replace("images/0002.png", "images/missing.png")
    lines[5] = with_majority(lines[5], "circle")
    message = problems(params, example_dir, "\n".join(lines))
    assert "row 4, column 'image': file not found" in message
    assert "row 6, column 'majority': 'circle' is not a known class" in message
    assert message.startswith("2 problem(s)")


def test_truncated_image(params, example_dir):
    data = (example_dir / "images" / "0001.png").read_bytes()
    (example_dir / "images" / "0001.png").write_bytes(data[: len(data) // 2])
    assert "row 3, column 'image':" in problems(params, example_dir, "\n".join(rows_of(example_dir)))


def test_wrong_channel_count(params, example_dir):
    params["inputs"]["image"]["channels"] = 1  # the example's images are in colour
    message = problems(params, example_dir, "\n".join(rows_of(example_dir)))
    assert "row 2, column 'image':" in message and "has 3 channel(s) but inputs.image.channels is 1" in message


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
    # what the first one holds instead, so that a mask of 0/255 is told from a mask of 0/1
    first = rows_of(example_dir)[1].split(",")[rows_of(example_dir)[0].split(",").index("labels")]
    held = ", ".join(map(str, np.unique(np.asarray(Image.open(example_dir / first))).tolist()))
    assert message.endswith(f"row 2's label map holds {held}; check the label values of outputs.round")


def test_label_absent_somewhere_is_a_warning(params, example_dir, capsys):
    validate_and_load(config_for(params, example_dir))
    assert "warning: outputs.round:" in capsys.readouterr().err


def test_repeated_rows_warn_with_row_numbers_and_crossed_splits(params, example_dir, capsys):
    lines = rows_of(example_dir)
    names = ["train"] * 20 + ["val"] * 2 + ["test"] * 2
    lines = [lines[0] + ",fold"] + [f"{line},{n}" for line, n in zip(lines[1:], names)]
    lines.append(lines[1].replace("images/0000.png", "./images/../images/0000.png").replace(",train", ",test"))
    lines.append(lines[3].replace("images/0002.png", str(example_dir / "images" / "0002.png")))  # absolute
    params["data"]["split"]["column"] = "fold"
    validate_and_load(config_for(params, example_dir, "\n".join(lines), "repeats.csv"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "repeat" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: {example_dir}/repeats.csv: 2 row(s) repeat an earlier row's input files")
    assert "row 26 (test) repeats row 2 (train), row 27 repeats row 4;" in warnings[0]
    assert "1 of them in a different split from the row it repeats" in warnings[0]


def test_no_repeated_rows_no_warning(params, example_dir, capsys):
    validate_and_load(config_for(params, example_dir))
    assert "repeat" not in capsys.readouterr().err


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


# --- parallel decoding and the row cache (data/cache) ---


def prepared_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cached_records(cache: Path) -> int:
    return sum(len(np.load(p, mmap_mode="r")) for p in cache.glob("*.npy"))


def test_two_workers_write_the_same_bytes_as_one(params, example_dir, tmp_path):
    cfg = config_for(params, example_dir)
    for workers in (1, 2):
        report, rows = prepare(cfg, tmp_path / f"out{workers}", tmp_path / f"cache{workers}", workers)
        assert rows.decoded == 24 and rows.reused == 0
    assert prepared_files(tmp_path / "out1") == prepared_files(tmp_path / "out2")
    assert prepared_files(tmp_path / "cache1") == prepared_files(tmp_path / "cache2")  # shards named by content


def test_rerun_decodes_only_new_or_changed_rows_and_forgets_removed_ones(params, example_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("cnn_factory.data.prepare.BLOCK", 5)  # rows are copied in several blocks
    cfg, out, cache = config_for(params, example_dir), tmp_path / "out", tmp_path / "cache"
    assert prepare(cfg, out, cache, 2)[1].decoded == 24
    first = prepared_files(out)
    _, rows = prepare(cfg, out, cache, 2)
    assert (rows.decoded, rows.reused) == (0, 24) and prepared_files(out) == first

    lines = rows_of(example_dir)
    more = tmp_path / "more"
    make_example(more, rows=4, size=(16, 16), seed=1)
    for line in rows_of(more)[1:]:
        for folder in ("images", "labels"):
            name = line.split(",")[0 if folder == "images" else 1].split("/")[1]
            shutil.copy(more / folder / name, example_dir / folder / f"new-{name}")
        lines.append(line.replace("images/", "images/new-").replace("labels/", "labels/new-"))
    (example_dir / "data.csv").write_text("\n".join(lines) + "\n")
    image = example_dir / "images" / "0005.png"
    io.imsave(image, 255 - io.imread(image), check_contrast=False)  # same path, new content
    report, rows = prepare(cfg, out, cache, 2)
    assert (rows.decoded, rows.reused) == (5, 23) and sum(report["rows"].values()) == 28
    assert len(list(cache.glob("*.npy"))) == 2  # the first run's shard and this run's
    prepare(cfg, tmp_path / "fresh", None, 1)
    assert prepared_files(out) == prepared_files(tmp_path / "fresh")  # gathered from both, in row order

    (example_dir / "data.csv").write_text("\n".join(lines[:11]) + "\n")  # rows 2..11 stay
    report, rows = prepare(cfg, out, cache, 1)
    assert (rows.decoded, rows.reused) == (0, 10)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(r for s in manifest["splits"].values() for r in s["rows"]) == list(range(2, 12))
    assert sum(len(np.load(out / s / "image.npy")) for s in ("train", "val", "test")) == 10
    assert cached_records(cache) == 10 and len(list(cache.glob("*.npy"))) == 1  # the rest was pruned


def test_only_definitions_that_shape_the_arrays_invalidate_the_cache(params, example_dir, tmp_path):
    cache = tmp_path / "cache"
    prepare(config_for(params, example_dir), tmp_path / "out", cache, 1)
    params["outputs"]["round"]["weight"] = 3.0
    params["outputs"]["round"]["loss"] = "dice"
    assert prepare(config_for(params, example_dir), tmp_path / "out", cache, 1)[1].decoded == 0
    params["outputs"]["round"]["label"] = [1, 2]
    assert prepare(config_for(params, example_dir), tmp_path / "out", cache, 1)[1].decoded == 24
    assert cached_records(cache) == 24  # the shard of the old label is gone


@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte"])
def test_damaged_cache_shard_is_detected_and_rebuilt(params, example_dir, tmp_path, capsys, damage):
    cfg, out, cache = config_for(params, example_dir), tmp_path / "out", tmp_path / "cache"
    prepare(cfg, out, cache, 1)
    first = prepared_files(out)
    (shard,) = cache.glob("*.npy")
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-100] ^= 0xFF  # inside the last row's arrays
    shard.write_bytes(bytes(data))
    _, rows = prepare(cfg, out, cache, 2)
    assert "is damaged" in capsys.readouterr().err
    assert rows.decoded == 24 and prepared_files(out) == first
    assert shard.read_bytes() != bytes(data) and cached_records(cache) == 24


def test_rows_that_decoded_are_kept_when_others_fail(params, example_dir, tmp_path):
    cfg, cache = config_for(params, example_dir), tmp_path / "cache"
    good = rows_of(example_dir)
    bad = good[:3] + [good[3].replace("images/0002.png", "images/missing.png")] + good[4:]
    (example_dir / "data.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(UserError, match="row 4, column 'image': file not found"):
        prepare(cfg, tmp_path / "out", cache, 2)
    assert not (tmp_path / "out").exists()
    (example_dir / "data.csv").write_text("\n".join(good) + "\n")
    assert prepare(cfg, tmp_path / "out", cache, 2)[1].decoded == 1


def test_two_workers_report_the_same_problems_in_row_order(params, example_dir, tmp_path):
    lines = rows_of(example_dir)
    lines[20] = lines[20].replace("images/0019.png", "images/missing.png")
    lines[3] = with_majority(lines[3], "circle")
    cfg = config_for(params, example_dir, "\n".join(lines), "bad.csv")
    messages = []
    for workers in (1, 2):
        with pytest.raises(UserError) as err:
            prepare(cfg, tmp_path / "out", tmp_path / f"cache{workers}", workers)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert messages[0].index("row 4, column 'majority'") < messages[0].index("row 21, column 'image'")


def test_the_cache_key_covers_the_decoding_code_and_not_the_kinds_losses_or_plots():
    """An edit to a loss, metric, plot or prediction writer leaves the decoded rows valid (dvc.yaml's
    prepare deps name the same files: tests/test_pipeline.py edits a loss and sees prepare skipped)."""
    hashed = {m.__name__ for m in DECODING_MODULES}
    assert hashed == {
        "cnn_factory.data.rows",
        "cnn_factory.data.grids",
        "cnn_factory.images",
        "cnn_factory.volumes",
        "cnn_factory.dicom",
        "cnn_factory.dicom_scans",
        "cnn_factory.data.label_maps",
        "cnn_factory.data.resample",
        "cnn_factory.outputs.decoding",
    }
    for cls in KINDS.values():  # what each kind decodes comes from decoding.py, not from its own module
        for method in ("array_field", "decode", "summary"):
            assert getattr(cls, method).__module__ == "cnn_factory.outputs.decoding", (cls.kind, method)

"""Label maps as annotation tools save them: palette PNGs read as their indices, RGB masks coded
in colours mapped through each output's `colours` table, 16-bit maps with labels above 255."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import jsonschema
import numpy as np
import pytest
import tifffile
from PIL import Image

from cnn_factory.config import parse_params, schema
from cnn_factory.data.grids import grid_for
from cnn_factory.data.label_maps import read_label_map
from cnn_factory.data.prepare import prepare, validate_and_load
from cnn_factory.data.rows import RowLabelMaps
from cnn_factory.data.table import Table
from cnn_factory.errors import UserError
from tests.test_prepare import config_for, problems, rows_of

# label value -> colour, as an annotation tool might draw them (Pascal VOC's first colours)
COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0)}
TABLE = {"#000000": 0, "#800000": 1, "#008000": 2, "#808000": 3}


def label_files(example_dir: Path) -> list[Path]:
    return sorted((example_dir / "labels").glob("*.png"))


def originals(example_dir: Path) -> dict[str, np.ndarray]:
    """Each label map of the generated example (values 0..3), by its path in the CSV."""
    return {f"labels/{p.name}": iio.imread(p) for p in label_files(example_dir)}


def write_palette_png(path: Path, indices: np.ndarray) -> None:
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([channel for i in range(256) for channel in COLOURS.get(i, (i, 255 - i, 64))])
    image.save(path)


def colour_mask(labels: np.ndarray) -> np.ndarray:
    rgb = np.zeros((*labels.shape, 3), np.uint8)
    for value, colour in COLOURS.items():
        rgb[labels == value] = colour
    return rgb


def test_palette_png_is_read_as_its_indices(tmp_path):
    indices = np.array([[0, 1, 2], [3, 2, 0]], np.uint8)
    write_palette_png(tmp_path / "map.png", indices)
    assert Image.open(tmp_path / "map.png").mode == "P"
    labels = read_label_map(tmp_path / "map.png")
    assert labels.dtype == np.uint8 and labels.tolist() == indices.tolist()
    colours = read_label_map(tmp_path / "map.png", colours=True)  # what an output with a table reads
    assert colours.shape == (2, 3, 3) and colours[1, 0].tolist() == [128, 128, 0]


def test_prepare_reads_palette_label_maps_by_index(params, example_dir):
    truth = originals(example_dir)
    for path in label_files(example_dir):
        write_palette_png(path, truth[f"labels/{path.name}"])
    table, _, rows = validate_and_load(config_for(params, example_dir))
    for i, row in enumerate(table.rows):
        labels = truth[row["labels"]]
        assert np.array_equal(rows[i]["round"], labels == 1)
        assert np.array_equal(rows[i]["angular"], np.isin(labels, [2, 3]))


def test_colour_masks_map_through_each_outputs_own_table(params, example_dir):
    truth = originals(example_dir)
    for path in label_files(example_dir):
        iio.imwrite(path, colour_mask(truth[f"labels/{path.name}"]))
    params["outputs"]["round"]["colours"] = TABLE
    # another table for the same column: olive and green become 7 and 8, which angular picks
    params["outputs"]["angular"].update(colours={"#000000": 0, "#800000": 0, "#008000": 7, "#808000": 8}, label=[7, 8])
    table, _, rows = validate_and_load(config_for(params, example_dir))
    for i, row in enumerate(table.rows):
        labels = truth[row["labels"]]
        assert np.array_equal(rows[i]["round"], labels == 1)
        assert np.array_equal(rows[i]["angular"], np.isin(labels, [2, 3]))


def test_a_class_mask_reads_colour_masks_through_its_table(params, example_dir):
    truth = originals(example_dir)
    for path in label_files(example_dir):
        iio.imwrite(path, colour_mask(truth[f"labels/{path.name}"]))
    del params["outputs"]["angular"]
    params["outputs"]["round"]["colours"] = TABLE
    params["outputs"]["shapes"] = {
        "type": "segmentation",
        "column": "labels",
        "labels": {"square": 2, "triangle": 3},
        "colours": TABLE,
    }
    table, _, rows = validate_and_load(config_for(params, example_dir))
    for i, row in enumerate(table.rows):
        labels = truth[row["labels"]]
        expected = np.select([labels == 2, labels == 3], [1, 2], 0)  # class indices: square 1, triangle 2
        assert np.array_equal(rows[i]["shapes"], expected)


def test_outputs_sharing_a_table_map_the_label_map_once(params, example_dir):
    path = label_files(example_dir)[0]
    iio.imwrite(path, colour_mask(iio.imread(path)))
    params["outputs"]["round"]["colours"] = TABLE
    params["outputs"]["angular"]["colours"] = dict(reversed(TABLE.items()))  # the same table, in another order
    cfg = config_for(params, example_dir)
    table = Table("data.csv", ["labels"], [{"labels": f"labels/{path.name}"}], [2])
    maps = RowLabelMaps(table, 0, cfg.data, grid_for(cfg.first_input), None, declared={"labels": (0, 1, 2, 3)})
    round_values = maps.values_for(cfg.outputs["round"])
    assert round_values is maps.values_for(cfg.outputs["angular"]) and len(maps.values) == 1


SPREAD = np.array([0, 80, 160, 240], np.uint8)  # label values 0..3 spread apart, as a grey JPEG mask holds them


def write_jpeg_label_maps(example_dir: Path, colours: bool = False) -> None:
    """The example's label maps as JPEG files beside the PNGs (grey with values spread apart, or
    coloured), and the CSV naming them."""
    for path in label_files(example_dir):
        labels = iio.imread(path)
        pixels = colour_mask(labels) if colours else SPREAD[labels]
        Image.fromarray(pixels).save(path.with_suffix(".jpg"), quality=90)
    lines = [line.split(",") for line in rows_of(example_dir)]
    for cells in lines[1:]:
        cells[1] = cells[1].replace(".png", ".jpg")  # the label-map column
    (example_dir / "data.csv").write_text("\n".join(",".join(cells) for cells in lines))


def test_jpeg_label_maps_are_snapped_to_the_values_the_outputs_look_for(params, example_dir, capsys):
    """JPEG blurs a label map's values along every edge; each pixel is read as the nearest of the
    values that the outputs reading the column look for, all of them, and 0."""
    truth = originals(example_dir)
    write_jpeg_label_maps(example_dir)
    params["outputs"]["round"]["label"] = 80
    params["outputs"]["angular"]["label"] = [160, 240]
    table, _, rows = validate_and_load(config_for(params, example_dir))
    stored = [iio.imread(example_dir / row["labels"]) for row in table.rows]
    assert not all(np.isin(s, SPREAD).all() for s in stored)  # the files hold blurred values: snapping is needed
    for i, row in enumerate(table.rows):
        labels = truth[row["labels"].replace(".jpg", ".png")]
        assert np.array_equal(rows[i]["round"], labels == 1)
        assert np.array_equal(rows[i]["angular"], np.isin(labels, [2, 3]))
    assert (
        "row 2, column 'labels': labels/0000.jpg and 23 more label maps in the column are JPEG, whose compression "
        "blurs values along edges: each pixel is read as the nearest of 0, 80, 160, 240; PNG keeps label maps exact"
    ) in capsys.readouterr().err


def test_coloured_jpeg_label_maps_take_the_nearest_listed_colour(params, example_dir):
    truth = originals(example_dir)
    write_jpeg_label_maps(example_dir, colours=True)
    params["outputs"]["round"]["colours"] = TABLE
    params["outputs"]["angular"]["colours"] = TABLE
    table, _, rows = validate_and_load(config_for(params, example_dir))
    agree = [
        (rows[i]["round"] == (truth[row["labels"].replace(".jpg", ".png")] == 1)).mean()
        for i, row in enumerate(table.rows)
    ]
    assert min(agree) > 0.97  # chroma is stored at half resolution: a pixel on a colour edge may go either way


def test_unlisted_colour_names_row_colour_and_key(params, example_dir):
    for path in label_files(example_dir):
        iio.imwrite(path, colour_mask(iio.imread(path)))
    stray = iio.imread(example_dir / "labels" / "0003.png")
    stray[0, 0] = (255, 0, 255)
    iio.imwrite(example_dir / "labels" / "0003.png", stray)
    params["outputs"]["round"]["colours"] = TABLE
    params["outputs"]["angular"]["colours"] = {**TABLE, "#ffffff": 0}
    message = problems(params, example_dir, "\n".join(rows_of(example_dir)))
    where = "bad.csv: row 5, column 'labels': "
    assert (
        f"{where}{example_dir}/labels/0003.png has colour #ff00ff, which outputs.round.colours does not list" in message
    )
    assert "which outputs.angular.colours does not list" in message  # each table with its own key
    assert message.startswith("2 problem(s)")
    params["outputs"]["angular"]["colours"] = TABLE  # one table: the label map is mapped, and reported, once
    assert problems(params, example_dir, "\n".join(rows_of(example_dir))).startswith("1 problem(s)")


def test_colour_label_map_without_a_table_says_to_add_one(params, example_dir):
    path = example_dir / "labels" / "0001.png"
    iio.imwrite(path, colour_mask(iio.imread(path)))
    message = problems(params, example_dir, "\n".join(rows_of(example_dir)))
    assert "row 3, column 'labels':" in message and "is a colour image" in message
    assert "add outputs.round.colours to map its colours to label values" in message
    assert message.startswith("1 problem(s)")  # round and angular read one file: said once


@pytest.mark.parametrize(
    ("colours", "expected"),
    [
        ({"#80000": 1}, "outputs.round.colours: '#80000' is not a colour; expected '#rrggbb'"),
        ({"800000": 1}, "outputs.round.colours: '800000' is not a colour"),
        ({"#800000": 1, "#80000A": 2, "#80000a": 3}, "outputs.round.colours: '#80000a' and '#80000A' are one colour"),
        ({"#800000": -1}, "outputs.round.colours: '#800000': expected a label value (integer >= 0), got -1"),
        ({"#800000": "one"}, "outputs.round.colours: '#800000': expected a label value (integer >= 0), got 'one'"),
        ([128, 0, 0], "outputs.round.colours: expected a mapping of '#rrggbb' colours to label values"),
        ({}, "outputs.round.colours: expected a mapping of '#rrggbb' colours to label values"),
    ],
)
def test_bad_colour_table_is_one_line_naming_the_key(params, colours, expected):
    params["outputs"]["round"]["colours"] = colours
    with pytest.raises(UserError) as err:
        parse_params(params)
    assert str(err.value).splitlines() == [str(err.value)]
    assert str(err.value).startswith(f"params.yaml: {expected}")


def test_colour_table_is_checked_by_the_schema_and_kept_in_lower_case(params):
    params["outputs"]["round"]["colours"] = {"#80000A": 1, "#000000": 0}
    assert parse_params(params).outputs["round"].colour_table == {"#80000a": 1, "#000000": 0}
    validator = jsonschema.Draft202012Validator(schema())
    assert list(validator.iter_errors(params)) == []
    params["outputs"]["round"]["colours"] = {"#80000": 1}
    assert list(validator.iter_errors(params))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_label_maps_with_labels_above_255(params, example_dir, tmp_path, suffix):
    truth = originals(example_dir)
    lines = rows_of(example_dir)
    for path in label_files(example_dir):
        values = truth[f"labels/{path.name}"].astype(np.uint16) * 100  # 0, 100, 200, 300
        path.unlink()
        if suffix == ".tif":
            tifffile.imwrite(path.with_suffix(suffix), values)
        else:
            iio.imwrite(path, values)
    assert read_label_map(example_dir / "labels" / f"0000{suffix}").dtype == np.uint16
    params["outputs"]["round"]["label"] = 300
    params["outputs"]["angular"]["label"] = [100, 200]
    cells = [line.split(",") for line in lines]
    renamed = [",".join([image, labels.replace(".png", suffix), *rest]) for image, labels, *rest in cells]
    cfg = config_for(params, example_dir, "\n".join(renamed))
    report, rows = prepare(cfg, tmp_path / "prepared", tmp_path / "cache", 1)
    assert rows.decoded == 24
    for i, line in enumerate(lines[1:]):
        name = line.split(",")[1]
        assert np.array_equal(rows[i]["round"], truth[name] == 3)
        assert np.array_equal(rows[i]["angular"], np.isin(truth[name], [1, 2]))
    train = np.load(tmp_path / "prepared" / "train" / "round.npy")
    assert train.dtype == np.uint8 and set(np.unique(train)) == {0, 1}
    assert report["outputs"]["round"]["coverage_train"] > 0

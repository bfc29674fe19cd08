"""params.yaml parsing: the shipped file is valid, and every kind of bad value is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from cnn_factory.config import load_params, parse_params, schema
from cnn_factory.data.prepare import validate_and_load
from cnn_factory.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_parse():
    cfg = load_params(ROOT / "params.yaml")
    assert cfg.outputs["angular"].label_values == (2, 3)
    assert cfg.outputs["round"].column == "labels" == cfg.outputs["angular"].column
    assert cfg.outputs["majority"].class_names == ("disc", "square", "triangle")
    assert cfg.inputs["image"].column == "image"  # defaults to the name
    assert cfg.model.path == Path("models/example.pt")


def test_params_read_as_dvc_reads_them_numbers_with_an_exponent_and_yes_and_no(tmp_path):
    """YAML 1.2, as DVC: `lr: 1e-4` by hand, or `1e-05` as `dvc exp run -S train.lr=1e-5` writes it,
    is a number (YAML 1.1 makes strings of exponents without a decimal point), and the classes
    `[no, yes]` are the CSV's words (YAML 1.1 makes booleans of them)."""
    text = (ROOT / "params.yaml").read_text().replace("  lr: 0.003 ", "  lr: 1e-4  ", 1)
    text = text.replace("  weight_decay: 0.0 ", "  weight_decay: 1e-05 ", 1)
    text = text.replace("classes: [disc, square, triangle]", "classes: [no, yes, off]", 1)
    assert "lr: 1e-4" in text and "weight_decay: 1e-05" in text and "[no, yes, off]" in text
    (tmp_path / "params.yaml").write_text(text)
    cfg = load_params(tmp_path / "params.yaml")
    assert (cfg.train.lr, cfg.train.weight_decay) == (1e-4, 1e-05)
    assert cfg.outputs["majority"].class_names == ("no", "yes", "off")
    assert yaml.safe_load("[1e-4, no, yes]") == ["1e-4", False, True]  # what PyYAML's own loader makes of them


def _error(params: dict) -> str:
    with pytest.raises(UserError) as err:
        parse_params(params)
    return str(err.value)


def test_unknown_key_suggests_nearest(params):
    params["train"]["learning_rate"] = 0.1
    message = _error(params)
    assert "train.learning_rate: unknown key" in message


def test_misspelt_key_suggests_nearest(params):
    params["train"]["epoch"] = params["train"].pop("epochs")
    message = _error(params)
    assert "train.epoch: unknown key; did you mean 'train.epochs'?" in message
    assert "train.epochs: missing" in message


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("train", "epochs", 0, "train.epochs: expected an integer >= 1, got 0"),
        ("train", "batch_size", -4, "train.batch_size: expected an integer >= 1, got -4"),
        ("train", "epochs", "ten", "train.epochs: expected an integer, got 'ten'"),
        ("train", "lr", 0, "train.lr: expected a number > 0"),
        ("train", "optimizer", "adam2", "train.optimizer: unknown value 'adam2'; expected one of adam"),
        ("train", "shuffle", "yes", "train.shuffle: expected true or false"),
        ("model", "depth", 1.5, "model.depth: expected an integer, got 1.5"),
    ],
)
def test_bad_values_are_named(params, section, key, value, expected):
    params[section][key] = value
    assert expected in _error(params)


def test_bad_sizes(params):
    params["inputs"]["image"]["size"] = [0, 16]
    params["outputs"]["round"]["size"] = [16]
    message = _error(params)
    expected = "expected [height, width] (images) or [depth, height, width] (volumes) as positive integers"
    assert f"inputs.image.size: {expected}, got [0, 16]" in message
    assert f"outputs.round.size: {expected}, got [16]" in message


def test_size_must_fit_depth(params):
    params["inputs"]["image"]["size"] = [18, 16]
    assert "inputs.image.size: [18, 16] must be divisible by 2**model.depth = 4" in _error(params)


def test_in_patch_mode_a_mask_has_the_patch_size(params):
    params["inputs"]["image"].update(mode="patch", size=[32, 32])
    params["outputs"]["round"]["size"] = [64, 64]  # as in resize mode: train would fail on its first batch
    params["outputs"]["angular"]["size"] = [32, 32]
    message = _error(params)
    assert "outputs.round.size: [64, 64] differs from the patch, inputs' size [32, 32]" in message
    assert "set it to [32, 32] or leave size out" in message and "outputs.angular" not in message
    del params["outputs"]["round"]["size"]
    assert parse_params(params).outputs["round"].size == (32, 32)  # left out: the patch's


def test_a_strided_stem_takes_one_more_halving_and_only_the_unet(params):
    params["model"]["stem"] = "strided"
    params["inputs"]["image"]["size"] = [20, 16]  # divisible by 2**depth = 4, not by 8
    message = _error(params)
    assert "inputs.image.size: [20, 16] must be divisible by 2**(model.depth + 1) (model.stem strided) = 8" in message
    params["inputs"]["image"]["size"] = [24, 16]
    assert parse_params(params).model.stem == "strided"
    params["model"]["encoder"] = "resnet18"
    assert "model.stem: a strided stem is the unet encoder's; resnet18 has its own" in _error(params)


def test_loss_must_fit_output_type(params):
    params["outputs"]["majority"]["loss"] = "dice"
    message = _error(params)
    assert "outputs.majority.loss: unknown value 'dice'; expected one of categorical_crossentropy" in message


def test_input_and_output_names_must_not_overlap(params):
    params["outputs"]["image"] = dict(params["outputs"].pop("round"))
    assert "inputs.image and outputs.image: input and output names must not overlap" in _error(params)


def test_an_output_may_not_be_named_epoch(params):
    """eval/metrics.json holds each output's headline figure under its name, and the saved epoch."""
    params["outputs"]["epoch"] = dict(params["outputs"].pop("round"))
    assert "outputs.epoch: the name 'epoch' is taken by the saved epoch in eval/metrics.json" in _error(params)


def test_every_problem_is_reported_at_once(params):
    params["train"]["epochs"] = -1
    params["model"]["filters"] = "many"
    params["outputs"]["round"]["label"] = "one"
    lines = _error(params).splitlines()
    assert len(lines) == 3
    assert all(line.startswith("params.yaml: ") for line in lines)


def test_category_classes_and_size_must_agree(params):
    params["outputs"]["majority"]["size"] = 4
    assert "outputs.majority.size: is 4 but classes lists 3 names" in _error(params)


def test_category_without_classes_uses_ids(params):
    del params["outputs"]["majority"]["classes"]
    cfg = parse_params(params)
    assert cfg.outputs["majority"].class_names == ("0", "1", "2")


def test_split_fractions_must_leave_training_rows(params):
    params["data"]["split"].update(val=0.5, test=0.5)
    assert "data.split: val + test must leave rows for training" in _error(params)


def test_the_example_writes_dicom_series_of_scans_only(params):
    assert parse_params(params).example.format == "nifti"  # the default: the 2-D example's params name none
    params["example"]["format"] = "dicom"
    assert "example.format: dicom writes scans: give example.size three numbers" in _error(params)
    params["example"]["size"] = [8, 16, 16]
    assert parse_params(params).example.format == "dicom"
    params["example"]["format"] = "dcm"
    assert "example.format: unknown value 'dcm'; expected one of nifti, dicom" in _error(params)


def test_not_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(path)


def test_shipped_schema_is_the_models_schema():
    shipped = json.loads((ROOT / "params.schema.json").read_text())
    assert shipped == schema(), "params.schema.json is stale: python -m cnn_factory.config > params.schema.json"


def test_schema_checks_params_as_an_editor_would(params):
    validator = jsonschema.Draft202012Validator(schema())
    assert list(validator.iter_errors(yaml.safe_load((ROOT / "params.yaml").read_text()))) == []
    assert list(validator.iter_errors(params)) == []
    params["train"]["epoch"] = params["train"].pop("epochs")
    params["outputs"]["round"]["loss"] = "softmax"
    messages = " ".join(e.message for e in validator.iter_errors(params))
    assert "'epoch' was unexpected" in messages and "'epochs' is a required property" in messages
    assert "softmax" in messages


def test_output_with_unknown_type_is_named(params):
    params["outputs"]["round"]["type"] = "mask"
    assert "outputs.round.type: unknown value 'mask'; expected one of segmentation, category, numeric" in _error(params)


def test_relative_paths_next_to_a_csv_outside_data_root_are_an_error(params, example_dir, tmp_path):
    # a user's CSV in its own folder, data.root left at the example's: same file names in both
    mine = tmp_path / "mine"
    shutil.copytree(example_dir, mine)
    params["data"].update(csv=str(mine / "data.csv"), root=str(example_dir))
    with pytest.raises(UserError) as err:
        validate_and_load(parse_params(params))
    assert f"set data.root to {mine}" in str(err.value)
    assert "row 2, column 'image'" in str(err.value)
    params["data"]["root"] = str(mine)
    validate_and_load(parse_params(params))  # set as it says: fine

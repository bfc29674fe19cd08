"""The output-kind recipe of docs/output-kinds.md runs: docs/examples/binary_output.py, registered
as a kind, is prepared, trained for an epoch, saved, loaded and scored like the built-in kinds;
and every built-in kind names itself."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import FunctionType

import pytest
import torch

from cnn_factory.config import parse_params
from cnn_factory.data.prepare import prepare
from cnn_factory.evaluate import Scoring, evaluate_split
from cnn_factory.model import ModelFile
from cnn_factory.outputs import KINDS, Output, Outputs, Scorer, Writer, kind_name, make_output
from cnn_factory.training.fit import fit
from tests.conftest import ROOT, SIZE

RECIPE = ROOT / "docs" / "examples" / "binary_output.py"


def test_each_kind_is_registered_under_its_own_name():
    assert all(cls.kind == name for name, cls in KINDS.items())
    assert kind_name({"type": "segmentation", "labels": {"a": 1}}) == "class_mask"


def test_the_docs_show_the_recipe_file_as_it_is():
    text = (ROOT / "docs" / "output-kinds.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert RECIPE.read_text() in blocks, "docs/output-kinds.md must show docs/examples/binary_output.py verbatim"


@pytest.fixture
def binary(monkeypatch):
    spec = importlib.util.spec_from_file_location("binary_output", RECIPE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "binary_output", module)  # pydantic resolves its annotations there
    spec.loader.exec_module(module)
    monkeypatch.setitem(KINDS, "binary", module.BinaryOutput)  # outputs/__init__.py's one line
    return module.BinaryOutput


def test_the_recipe_kind_trains_saves_loads_and_scores(binary, params, example_dir, tmp_path, monkeypatch):
    with (example_dir / "data.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["defect"] = "1" if row["majority"] == "disc" else "0"
    with (example_dir / "data.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    params["train"].update(epochs=1, log_images_every=0)
    cfg = parse_params(params)
    defect = binary.model_validate({"type": "binary"}).named("defect", tuple(SIZE))
    cfg = cfg.model_copy(update={"outputs": Outputs({**cfg.outputs, "defect": defect})})

    prepare(cfg, tmp_path / "prepared", None, workers=1)
    monkeypatch.chdir(tmp_path)
    fit(cfg, tmp_path / "prepared")
    assert os.path.isfile(tmp_path / "dvclive" / "plots" / "curves" / "binary" / "defect.tsv")

    model, model_file = ModelFile.load(tmp_path / cfg.model.path)
    assert model_file.outputs["defect"].kind == "binary"
    assert set(model_file.val or {}) >= {"defect/loss", "defect/accuracy"}
    scored = evaluate_split(
        model, model_file, model_file.outputs, tmp_path / "prepared" / "test", 4, torch.device("cpu"), scoring=Scoring()
    )
    figures = Scorer.of(model_file.outputs["defect"]).summarise(scored.rows["defect"])
    assert 0 <= figures["accuracy"] <= 1 and figures["accuracy"] == pytest.approx(scored.metrics["defect/accuracy"])
    assert Path(tmp_path / "prepared" / "manifest.json").is_file()


def test_the_core_of_a_kind_is_small_and_its_stages_live_in_adapters():
    """`Output` holds what params checking, prepare, the model and training need (at most 15 methods);
    evaluation and prediction are the adapters' (`Scorer`, `Writer`), which every built-in kind has or
    inherits."""
    members = (classmethod, staticmethod, property, FunctionType)
    core = [k for k, v in vars(Output).items() if isinstance(v, members) and not k.startswith(("_", "model_"))]
    assert len(core) <= 15, core
    assert not {"image_scores", "summarise", "write_prediction", "answer", "logits_shape"} & set(core)
    for cls in KINDS.values():
        assert Scorer.kinds[cls].__module__ == cls.__module__  # beside its core, in the kind's module
    assert Writer.of(make_output("n", type="numeric")).logits_shape() == ["batch"]  # the default: no writer needed

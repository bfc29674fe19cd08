"""Starting from a trained model (`train.init_from`), system metrics (`train.monitor_system`), and
fetching the model from another clone with `dvc artifacts get`."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
import yaml

from cnn_factory.config import parse_params
from cnn_factory.data.dataset import read_manifest
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import prepare
from cnn_factory.errors import UserError
from cnn_factory.model import MultiOutputNet, load_model, model_args
from cnn_factory.training.fit import fit
from cnn_factory.training.init_from import init_source, initialise
from cnn_factory.training.loop import seed_everything
from tests.conftest import SIZE, checkpoint_epoch, make_repo, repro_killed_when, run, tiny_params

TINY_LR = 1e-9  # one epoch at this rate leaves every weight where it started, to within 1e-6


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def config(data: Path, drop: str | None = None, **train):
    """The tiny example's params on the generated data in `data`, without output `drop`."""
    params = tiny_params()
    params["data"].update(csv=str(data / "data.csv"), root=str(data))
    params["outputs"].pop(drop, None)
    params["train"].update(log_images_every=0, **train)
    return parse_params(params)


def fit_in(folder: Path, cfg, prepared: Path) -> None:
    """Runs fit() with `folder` as the working directory (models/, checkpoints/, dvclive/ go there)
    and waits for dvclive's system monitor, which logs once more after the run as it stops."""
    folder.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    os.chdir(folder)
    try:
        fit(cfg, prepared)
    finally:
        for thread in threading.enumerate():
            if "_monitoring_loop" in thread.name:  # Thread(target=...) is named after its target
                thread.join(timeout=30)
        os.chdir(here)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict:
    """A model trained for two epochs on the example without its `angular` output, and the
    prepared data of all three outputs (the other runs' configurations read a subset of it)."""
    root = tmp_path_factory.mktemp("finetune")
    make_example(root / "data", rows=24, size=tuple(SIZE), seed=0)
    prepare(config(root / "data"), root / "prepared", None, workers=1)
    cfg = config(root / "data", drop="angular", seed=1)  # other starting weights than the runs below (seed 0)
    fit_in(root / "source", cfg, root / "prepared")
    return {"root": root, "model": root / "source" / "models" / "example.pt"}


def parameters(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(path)
    return dict(model.named_parameters())


def far(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_same_outputs_start_from_the_source_weights(source, tmp_path, capsys):
    init = str(source["model"])
    cfg = config(source["root"] / "data", drop="angular", epochs=1, lr=TINY_LR, init_from=init)
    fit_in(tmp_path, cfg, source["root"] / "prepared")
    out = capsys.readouterr().out
    assert f"train: initialised from {init}: all " in out and "tensors loaded" in out, out

    trained, before = parameters(tmp_path / "models" / "example.pt"), parameters(source["model"])
    assert all(far(trained[n], before[n]) < 1e-6 for n in before)  # one epoch at TINY_LR: where it started
    seed_everything(cfg.train.seed)  # where the same run without init_from would start
    fresh = dict(
        MultiOutputNet.from_args(
            model_args(
                cfg.model, cfg.inputs, cfg.outputs, read_manifest(source["root"] / "prepared", cfg.inputs, cfg.outputs)
            )
        ).named_parameters()
    )
    assert max(far(fresh[n], before[n]) for n in before) > 1e-2

    _, meta = load_model(tmp_path / "models" / "example.pt")
    assert meta["init_from"] == {"path": init, "sha256": sha256(source["model"])}
    assert load_model(source["model"])[1]["init_from"] is None  # trained from random weights
    assert not (tmp_path / "dvclive" / "plots" / "metrics" / "system").exists()  # monitor_system is off


def test_an_added_output_gets_a_fresh_head_and_the_rest_loads(source, tmp_path, capsys):
    init = str(source["model"])
    cfg = config(source["root"] / "data", epochs=1, lr=TINY_LR, init_from=init)  # angular is new
    fit_in(tmp_path, cfg, source["root"] / "prepared")
    out = capsys.readouterr().out
    assert "  new, freshly initialised: heads.angular\n" in out, out
    assert "  loaded: encoder, heads.round, heads.majority\n" in out, out

    trained, before = parameters(tmp_path / "models" / "example.pt"), parameters(source["model"])
    assert all(far(trained[n], before[n]) < 1e-6 for n in before)
    seed_everything(cfg.train.seed)  # as fit() does before it builds the network
    fresh = dict(
        MultiOutputNet.from_args(
            model_args(
                cfg.model, cfg.inputs, cfg.outputs, read_manifest(source["root"] / "prepared", cfg.inputs, cfg.outputs)
            )
        ).named_parameters()
    )
    angular = [n for n in trained if n.startswith("heads.angular.")]
    assert angular and all(far(trained[n], fresh[n]) < 1e-6 for n in angular)  # as a run from scratch starts


def test_a_category_with_another_class_count_skips_that_layer(source):
    definition = tiny_params()["outputs"]["majority"]
    params = tiny_params()
    params["outputs"] = {
        "round": params["outputs"]["round"],
        "majority": {**definition, "size": 4, "classes": [*definition["classes"], "hexagon"]},
    }
    cfg = parse_params(params)
    manifest = read_manifest(source["root"] / "prepared", cfg.inputs, cfg.outputs)
    model = MultiOutputNet.from_args(model_args(cfg.model, cfg.inputs, cfg.outputs, manifest))
    untouched = model.heads["majority"].linear[-1].weight.detach().clone()

    transfer = initialise(model, init_source(str(source["model"])))
    assert set(transfer.skipped) == {"heads.majority.linear.3.weight", "heads.majority.linear.3.bias"}
    assert transfer.skipped["heads.majority.linear.3.weight"][0][0] == 3  # 3 classes in the file, 4 here
    assert "  skipped, shapes differ: heads.majority.linear.3 (weight [3, " in transfer.summary()
    assert torch.equal(model.heads["majority"].linear[-1].weight, untouched)
    before = parameters(source["model"])
    for name, value in model.named_parameters():
        if not name.startswith("heads.majority."):
            assert torch.equal(value, before[name]), name


def test_a_missing_or_unreadable_file_is_a_one_line_error_naming_the_key(source, tmp_path):
    for path, expected in [
        (tmp_path / "missing.pt", "no such file"),
        (tmp_path / "text.pt", "cannot be loaded as a model file"),
    ]:
        if path.name == "text.pt":
            path.write_text("not a model\n")
        cfg = config(source["root"] / "data", drop="angular", init_from=str(path))
        with pytest.raises(UserError) as err:
            fit_in(tmp_path / "run", cfg, source["root"] / "prepared")
        message = str(err.value)
        assert message.startswith(f"train.init_from: {path}: ") and expected in message, message
        assert "\n" not in message
        assert not (tmp_path / "run" / "models").exists()


def test_the_runs_own_model_file_as_start_says_to_copy_it_first(tmp_path):
    """Under dvc repro the model file is deleted before train runs: naming it says what to do."""
    with pytest.raises(UserError) as err:
        init_source(str(tmp_path / "models" / "example.pt"), str(tmp_path / "models" / "example.pt"))
    message = str(err.value)
    assert "train stage's own output" in message and "copy it first" in message and "\n" not in message


def test_a_model_file_without_init_from_still_loads_and_initialises(source, tmp_path):
    old = torch.load(source["model"], weights_only=True)
    del old["init_from"]  # as model files were written before it was recorded
    torch.save(old, tmp_path / "old.pt")
    model, meta = load_model(tmp_path / "old.pt")
    assert "init_from" not in meta
    fresh = MultiOutputNet.from_args(copy.deepcopy(old["model_args"]))
    assert initialise(fresh, init_source(str(tmp_path / "old.pt"))).summary().endswith("tensors loaded")
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))


def test_monitor_system_logs_system_metrics(source, tmp_path):
    cfg = config(source["root"] / "data", drop="angular", epochs=2, monitor_system=True)
    fit_in(tmp_path, cfg, source["root"] / "prepared")
    system = tmp_path / "dvclive" / "plots" / "metrics" / "system"
    for curve in ("cpu/usage (%).tsv", "ram/usage (GB).tsv"):
        header, *rows = (system / curve).read_text().splitlines()
        assert header.split("\t")[:2] == ["timestamp", "step"] and rows, curve


# --- through the real dvc CLI ---


@pytest.mark.slow
def test_more_epochs_of_a_finished_run_resume_after_a_kill(tmp_path):
    params = tiny_params()
    params["train"].update(log_images_every=0)
    base = make_repo(tmp_path / "base", params)
    run(["dvc", "repro"], base)
    (base / "weights").mkdir()
    shutil.copy(base / "models" / "example.pt", base / "weights" / "example.pt")  # DVC deletes models/ before train
    first = sha256(base / "weights" / "example.pt")
    params["train"].update(epochs=8, init_from="weights/example.pt")
    for name in ("whole", "cut"):
        shutil.copytree(base, tmp_path / name, symlinks=True)
        (tmp_path / name / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert "train: initialised from weights/example.pt: all " in run(["dvc", "repro"], whole).stdout

    repro_killed_when(cut, lambda: checkpoint_epoch(cut) >= 2)
    killed_at = checkpoint_epoch(cut)  # read after the kill: training went on between the last poll and it
    assert 2 <= killed_at < 8
    assert sha256(cut / "weights" / "example.pt") == first
    result = run(["dvc", "repro"], cut)
    assert f"train: resuming after epoch {killed_at}" in result.stdout and "initialised from" not in result.stdout
    for path in ("dvclive/metrics.json", "eval/metrics.json", "eval/figures.json"):
        assert json.loads((cut / path).read_text()) == json.loads((whole / path).read_text()), path
    assert load_model(cut / "models" / "example.pt")[1]["init_from"]["sha256"] == first
    assert "up to date" in run(["dvc", "status"], cut).stdout  # a new model file re-runs nothing


@pytest.mark.slow
def test_dvc_artifacts_get_fetches_the_model_from_another_clone(tmp_path):
    params = tiny_params()
    params["train"].update(log_images_every=0)
    repo = make_repo(tmp_path / "repo", params)
    run(["dvc", "repro"], repo)
    run(["dvc", "remote", "add", "-d", "storage", str(tmp_path / "remote")], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "trained"], repo)
    run(["dvc", "push"], repo)
    shutil.rmtree(repo / ".dvc" / "cache")  # only the remote holds the model now
    (repo / "models" / "example.pt").rename(tmp_path / "trained.pt")
    trained = sha256(tmp_path / "trained.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    untagged = run(["dvc", "artifacts", "get", str(repo), "model"], elsewhere, check=False)
    assert untagged.returncode != 0 and "Unable to find artifact 'model'" in untagged.stderr  # no version yet
    run(["dvc", "get", str(repo), "models/example.pt", "-o", "by-path.pt"], elsewhere)  # by path: no version needed
    assert sha256(elsewhere / "by-path.pt") == trained

    run(["git", "tag", "-a", "model@v1.0.0", "-m", "first model"], repo)  # a version, as `gto register` writes it
    run(["dvc", "artifacts", "get", str(repo), "model"], elsewhere)
    model, meta = load_model(elsewhere / "example.pt")
    assert sha256(elsewhere / "example.pt") == trained
    assert set(meta["outputs"]) == set(params["outputs"]) and meta["init_from"] is None
    run(["dvc", "artifacts", "get", str(repo), "model", "--rev", "v1.0.0", "-o", "v1.pt"], elsewhere)
    assert sha256(elsewhere / "v1.pt") == trained

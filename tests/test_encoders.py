"""Encoders from timm (`model.encoder`, `model.weights`, `train.freeze_encoder_epochs`,
`train.encoder_lr`) on timm's tiny test models at 32x32, offline: weights come from files written here."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml
from safetensors.torch import save_file

from cnn_factory.config import parse_params
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import prepare
from cnn_factory.encoder_weights import pretrained_normalisation, pretrained_state
from cnn_factory.encoders import timm_module
from cnn_factory.errors import UserError
from cnn_factory.export import export_model
from cnn_factory.model import MultiOutputNet, NetShape, load_model, model_args
from cnn_factory.predict import predict_images
from cnn_factory.training.optim import Schedule, make_optimizer, parameter_groups
from tests.conftest import ROOT, tiny_params
from tests.test_finetune import fit_in

TINY = "test_efficientnet"  # timm's own test model: 0.2M parameters, strides 2 to 32
SIZE = [32, 32]
# the state_dict of the UNet built from params.yaml under torch.manual_seed(0), computed before timm
# encoders existed: the default encoder must stay the same network, weight for weight
UNET_SHA256 = "bfeec6ab4187494287280c544d2d9652aed86f5ad3823896a9260373e838179e"


def state_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def test_the_unet_encoder_is_the_same_network_as_before():
    cfg = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert cfg.model.encoder == "unet" and cfg.model.weights == "none"
    torch.manual_seed(0)
    assert (
        state_sha256(MultiOutputNet.from_args(model_args(cfg.model, cfg.inputs, cfg.outputs, {"outputs": {}})))
        == UNET_SHA256
    )


def weights_file(folder: Path, suffix: str = ".safetensors", seed: int = 3) -> tuple[Path, dict]:
    """timm's whole classification model (as timm publishes weights), random, saved to a file."""
    torch.manual_seed(seed)
    state = timm_module().create_model(TINY).state_dict()
    path = folder / f"{TINY}{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path, state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_weights_file_loads_tensor_for_tensor(tmp_path, suffix):
    path, saved = weights_file(tmp_path, suffix)
    state, note = pretrained_state(TINY, 3, str(path))
    assert note == "" and set(state) < set(saved)  # the pyramid lacks the classifier
    assert all(torch.equal(tensor, saved[name]) for name, tensor in state.items())
    shape = NetShape(in_channels=3, depth=2, filters=4, encoder=TINY)
    model = MultiOutputNet(shape=shape, outputs={"m": {"type": "segmentation", "size": SIZE}})
    model.encoder.body.load_state_dict(state)  # as train loads it


def test_one_channel_sums_the_rgb_filters_and_says_so(tmp_path):
    path, saved = weights_file(tmp_path)
    state, note = pretrained_state(TINY, 1, str(path))
    assert torch.allclose(state["conv_stem.weight"], saved["conv_stem.weight"].sum(1, keepdim=True))
    assert "conv_stem" in note and "summed" in note
    mean, std = pretrained_normalisation(TINY, [1])
    cfg = timm_module().get_pretrained_cfg(TINY)
    assert mean == pytest.approx([sum(cfg.mean) / 3]) and std == pytest.approx([sum(cfg.std) / 3])
    assert pretrained_normalisation(TINY, [3, 3])[0] == pytest.approx(list(cfg.mean) * 2)


def tiny_net() -> MultiOutputNet:
    torch.manual_seed(0)
    outputs = {"m": {"type": "segmentation", "size": SIZE}, "k": {"type": "category", "classes": ["a", "b"]}}
    return MultiOutputNet(shape=NetShape(in_channels=3, depth=2, filters=4, encoder=TINY), outputs=outputs)


def one_step(model: MultiOutputNet) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    out = model(torch.randn(4, 3, *SIZE))
    (out["m"].mean() + out["k"].mean()).backward()
    optimizer.step()


def encoder_state(model: MultiOutputNet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}  # weights and batch-norm statistics


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_a_frozen_encoder_keeps_weights_and_statistics_until_released():
    model = tiny_net()
    model.freeze_encoder(True)
    before, head = encoder_state(model), model.heads["m"].head.weight.clone()
    one_step(model)
    assert not changed(before, encoder_state(model))
    assert not torch.equal(head, model.heads["m"].head.weight)  # the rest trains
    model.freeze_encoder(False)
    one_step(model)
    moved = changed(before, encoder_state(model))
    assert any(k.endswith("running_mean") for k in moved) and any(k.endswith("conv_stem.weight") for k in moved)


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_encoder_lr_gives_the_encoder_its_own_rate(scheduler):
    model = tiny_net()
    groups = parameter_groups(model, 0.01, 0.1)
    optimizer = make_optimizer("adam", groups, 0.01, 0.9, 0.0)
    Schedule(scheduler, optimizer, 0.01, 3, 2, 1, 0)
    rest, encoder = optimizer.param_groups
    assert encoder["lr"] == pytest.approx(rest["lr"] * 0.1)
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.encoder.parameters()}
    assert len(parameter_groups(model, 0.01, 1.0)) == 1  # the default: one group, as before


def tiny_config(data: Path, **changes) -> dict:
    params = tiny_params()
    params["example"]["size"] = SIZE
    params["data"].update(csv=str(data / "data.csv"), root=str(data))
    params["inputs"]["image"]["size"] = SIZE
    params["outputs"].pop("angular")
    params["outputs"]["round"]["size"] = SIZE
    params["model"].update(encoder=TINY, norm="batch")
    params["train"].update(epochs=2, log_images_every=0)
    for key, value in changes.items():
        section, name = key.split(".")
        params[section][name] = value
    return params


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Two epochs from a weights file, the encoder frozen for the first and slower afterwards."""
    root = tmp_path_factory.mktemp("encoders")
    make_example(root / "data", rows=24, size=tuple(SIZE), seed=0)
    params = tiny_config(root / "data")
    prepare(parse_params(params), root / "prepared", None, workers=1)
    weights, _ = weights_file(root)
    params = tiny_config(
        root / "data", **{"model.weights": str(weights), "train.freeze_encoder_epochs": 1, "train.encoder_lr": 0.1}
    )
    fit_in(root / "run", parse_params(params), root / "prepared")
    return {"root": root, "model": root / "run" / "models" / "example.pt", "weights": weights, "params": params}


def offline(monkeypatch) -> None:
    """No connection can be made, and the hub knows it (it reads HF_HUB_OFFLINE when imported)."""

    def refused(*args, **kwargs):
        raise OSError("network refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_a_model_file_loads_and_predicts_without_network_or_weights_file(trained, tmp_path, monkeypatch):
    offline(monkeypatch)
    moved = trained["weights"].rename(trained["weights"].with_suffix(".gone"))  # the file is not needed either
    try:
        model, meta = load_model(trained["model"])
        predict_images(
            str(trained["model"]), [str(trained["root"] / "data" / "images" / "*.png")], tmp_path, 4, "cpu", False
        )
    finally:
        moved.rename(trained["weights"])
    assert meta["model_args"]["encoder"] == TINY and meta["encoder_weights"]["weights"] == str(trained["weights"])
    cfg = timm_module().get_pretrained_cfg(TINY)
    assert meta["inputs"]["image"]["mean"] == pytest.approx(list(cfg.mean))  # the weights' normalisation
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 25  # a header and 24 images


def test_export_of_a_timm_encoder_model(trained, tmp_path):
    model, meta = load_model(trained["model"])
    x = torch.randn(2, 3, *SIZE)
    expected = model(x)
    traced = torch.jit.load(str(export_model(str(trained["model"]), "torchscript", str(tmp_path / "m.ts"))))
    for name, got in zip(json.loads((tmp_path / "m.ts.json").read_text())["outputs"], traced(x)):
        assert torch.allclose(got, expected[name["name"]], atol=1e-5)
    onnxruntime = pytest.importorskip("onnxruntime")
    export_model(str(trained["model"]), "onnx", str(tmp_path / "m.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    for name, got in zip(session.get_outputs(), session.run(None, {"x": x.numpy()})):
        assert torch.allclose(torch.from_numpy(got), expected[name.name], atol=1e-4)


STRIDE = "inputs.image.size: [48, 48] must be divisible by test_efficientnet's largest stride 32"
BAD = {
    "unknown name": (
        {"model.encoder": "resnet19"},
        "model.encoder: 'resnet19' is neither unet nor a timm model; did you mean resnet18",
    ),
    "no feature pyramid": (
        {"model.encoder": "vit_tiny_patch16_224"},
        "model.encoder: vit_tiny_patch16_224's feature levels have strides [16, 16, 16]",
    ),
    "size and stride": ({"inputs.image": {"type": "image", "size": [48, 48], "channels": 3}}, STRIDE),
    "missing file": ({"model.weights": "nowhere/w.safetensors"}, "model.weights: nowhere/w.safetensors: no such file"),
    "pretrained offline": (
        {"model.weights": "pretrained"},
        "model.weights: pretrained: timm could not fetch test_efficientnet's weights",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_encoder_settings_are_one_line_before_training(trained, tmp_path, monkeypatch, case):
    offline(monkeypatch)
    changes, expected = BAD[case]
    with pytest.raises(UserError) as raised:
        fit_in(tmp_path, parse_params(tiny_config(trained["root"] / "data", **changes)), trained["root"] / "prepared")
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "models").exists() and not (tmp_path / "checkpoints").exists()


def test_an_encoder_timm_cannot_give_as_a_pyramid_is_one_line(monkeypatch):
    def refuses(name, **kwargs):  # what timm raises for a model without features_only support
        raise RuntimeError(f"features_only not implemented for {name}")

    monkeypatch.setattr(timm_module(), "create_model", refuses)
    shape = NetShape(in_channels=3, depth=2, filters=4, encoder="resnet18")
    with pytest.raises(UserError, match=r"^params.yaml: model.encoder: resnet18 cannot give a feature pyramid"):
        MultiOutputNet(shape=shape, outputs={"m": {"type": "segmentation", "size": SIZE}})


def test_timm_leaves_torchvision_as_it_found_it():
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here: timm imports the real one")
    assert timm_module().create_model(TINY, features_only=True) is not None
    with pytest.raises(ImportError):  # the stand-ins served timm's import only
        import torchvision  # noqa: F401


def test_weights_that_do_not_fit_name_the_tensors(tmp_path):
    path, saved = weights_file(tmp_path)
    saved, norm = dict(saved), saved["bn1.weight"]
    saved.pop("conv_stem.weight")
    saved["bn1.weight"] = torch.ones(3)
    save_file({k: v.contiguous() for k, v in saved.items()}, str(path))
    with pytest.raises(UserError) as raised:
        pretrained_state(TINY, 3, str(path))
    message = str(raised.value)
    assert message.startswith(f"params.yaml: model.weights: {path} does not fit {TINY} (shapes differ: bn1.weight [3]")
    assert "\n" not in message
    saved["bn1.weight"] = norm
    save_file({k: v.contiguous() for k, v in saved.items()}, str(path))
    with pytest.raises(UserError, match=r"does not fit test_efficientnet \(missing conv_stem.weight\)"):
        pretrained_state(TINY, 3, str(path))


def test_the_train_stage_says_it_in_one_line(trained, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(trained["root"] / "prepared")
    params = tiny_config(trained["root"] / "data", **{"model.encoder": "resnet19"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([sys.executable, "-m", "stages.train"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "error: params.yaml: model.encoder: 'resnet19' is neither unet nor a timm model; did you mean"
    )

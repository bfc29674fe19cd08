"""Model shapes per configuration, early shape errors, and the self-contained model file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnn_factory.errors import UserError
from cnn_factory.heads import UNetDecoder
from cnn_factory.model import Blocks, MultiOutputNet, NetShape, load_model, save_model

OUTPUTS = {
    "mask": {"type": "segmentation", "size": [16, 16], "classes": []},
    "small_mask": {"type": "segmentation", "size": [8, 4], "classes": []},
    "kind": {"type": "category", "size": None, "classes": ["a", "b", "c"]},
    "area": {"type": "numeric", "size": None, "classes": [], "mean": 5.0, "std": 2.0},
}


def net(outputs: dict, **shape) -> MultiOutputNet:
    return MultiOutputNet(shape=NetShape(**shape), outputs=outputs)


@pytest.mark.parametrize("in_channels", [1, 3, 4])
@pytest.mark.parametrize(("depth", "filters"), [(1, 4), (2, 8), (3, 4)])
def test_output_shapes(in_channels, depth, filters):
    model = net(OUTPUTS, in_channels=in_channels, depth=depth, filters=filters).eval()
    out = model(torch.randn(2, in_channels, 16, 16))
    assert set(out) == set(OUTPUTS)
    assert out["mask"].shape == (2, 16, 16)
    assert out["small_mask"].shape == (2, 8, 4)
    assert out["kind"].shape == (2, 3)
    assert out["area"].shape == (2,)


def test_one_decoder_per_segmentation_output_and_shared_encoder():
    model = net(OUTPUTS, in_channels=3, depth=2, filters=4)
    assert set(model.heads) == {"mask", "small_mask", "kind", "area"}
    assert {n for n, head in model.heads.items() if isinstance(head, UNetDecoder)} == {"mask", "small_mask"}
    assert model.heads["mask"] is not model.heads["small_mask"]


def test_asked_for_some_heads_the_network_runs_those_alone():
    """Validation scores the views for the image-level outputs only: the masks' decoders stay idle."""
    model, x = net(OUTPUTS, in_channels=3, depth=2, filters=4).eval(), torch.randn(2, 3, 16, 16)
    calls = []
    model.heads["mask"].register_forward_hook(lambda *_: calls.append("mask"))
    every, some = model(x), model(x, heads=["kind", "area"])
    assert calls == ["mask"] and set(some) == {"kind", "area"}
    assert all(torch.equal(some[n], every[n]) for n in some)


def test_numeric_head_predicts_in_target_units():
    model = net(OUTPUTS, in_channels=3, depth=1, filters=4).eval()
    torch.nn.init.zeros_(model.heads["area"].linear[-1].weight)
    torch.nn.init.zeros_(model.heads["area"].linear[-1].bias)
    assert torch.allclose(model(torch.randn(2, 3, 16, 16))["area"], torch.tensor([5.0, 5.0]))


def test_bad_input_size_fails_early_with_advice():
    model = net(OUTPUTS, in_channels=3, depth=3, filters=4)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 3, 20, 16))


def test_model_file_round_trip_is_weights_only(tmp_path):
    args = {"in_channels": 3, "depth": 2, "filters": 4, "outputs": OUTPUTS}
    model = MultiOutputNet.from_args(args).eval()
    path = tmp_path / "m.pt"
    save_model(path, model, args, {"inputs": {"image": {"size": [16, 16]}}, "outputs": {"kind": {"classes": ["a"]}}})
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed into place
    torch.load(path, weights_only=True)  # plain types and tensors only
    loaded, meta = load_model(path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for name, value in model(x).items():
            assert torch.equal(value, loaded(x)[name])
    assert meta["inputs"]["image"]["size"] == [16, 16]


def test_loading_something_else_is_a_user_error(tmp_path):
    path = tmp_path / "not-a-model.pt"
    path.write_text("hello")
    with pytest.raises(UserError, match="cannot be loaded as a model file"):
        load_model(path)
    with pytest.raises(UserError, match="model file not found"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("upsample", ["bilinear", "transpose"])
@pytest.mark.parametrize("skip", ["concat", "add", "none"])
def test_shape_knobs(norm, upsample, skip):
    model = net(
        OUTPUTS,
        in_channels=3,
        depth=2,
        filters=[4, 6, 8],
        blocks=Blocks(norm=norm, dropout=0.2, upsample=upsample, skip=skip),
    )
    out = model.train()(torch.randn(2, 3, 16, 16))
    assert out["mask"].shape == (2, 16, 16) and out["kind"].shape == (2, 3)
    assert model.encoder.channels == [4, 6, 8]
    out["mask"].mean().backward()  # every knob trains
    has_norm = any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in model.modules())
    assert has_norm == (norm != "none")
    has_transpose = any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    assert has_transpose == (upsample == "transpose")


def test_filters_list_must_match_depth():
    with pytest.raises(ValueError, match="expected depth"):
        net(OUTPUTS, in_channels=3, depth=2, filters=[4, 8])


VOLUME_OUTPUTS = {
    "organ": {"type": "segmentation", "size": [8, 16, 16]},
    "tissue": {"type": "segmentation", "size": [8, 16, 16], "labels": {"organ": [1], "tumour": [2]}},
    "grade": {"type": "category", "classes": ["low", "high"]},
    "volume_ml": {"type": "numeric", "mean": 3.0, "std": 1.5},
}


@pytest.mark.parametrize("upsample, norm", [("bilinear", "batch"), ("transpose", "group")])
def test_the_same_network_takes_volumes(upsample, norm):
    """dims 3: one encoder, a decoder per mask and pooled heads, over (B, C, D, H, W)."""
    model = net(VOLUME_OUTPUTS, in_channels=2, depth=2, filters=4, dims=3, blocks=Blocks(norm=norm, upsample=upsample))
    out = model(torch.randn(2, 2, 8, 16, 16))
    assert out["organ"].shape == (2, 8, 16, 16) and out["tissue"].shape == (2, 3, 8, 16, 16)
    assert out["grade"].shape == (2, 2) and out["volume_ml"].shape == (2,)
    sum(v.float().mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(isinstance(m, torch.nn.Conv3d) for m in convs)
    with pytest.raises(ValueError, match="8x16x10 pixels: every side must be divisible by 4"):
        model(torch.randn(1, 2, 8, 16, 10))


def test_a_volume_model_file_round_trips(tmp_path):
    torch.manual_seed(0)
    model = net(VOLUME_OUTPUTS, in_channels=1, depth=2, filters=4, dims=3).eval()
    args = {"in_channels": 1, "depth": 2, "filters": 4, "outputs": VOLUME_OUTPUTS, "dims": 3}
    save_model(tmp_path / "scan.pt", model, args, {})
    again, _ = load_model(tmp_path / "scan.pt")
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).values(), again(x).values()))


def test_class_masks_of_volumes_take_their_classes_from_the_channel_axis():
    from cnn_factory.outputs import Scorer, make_output

    tissue = make_output("tissue", type="segmentation", column="labels", labels={"organ": [1], "tumour": [2]})
    tissue = tissue.model_copy(update={"size": (8, 16, 16)})
    logits = torch.randn(2, 3, 8, 16, 16)
    probabilities = tissue.probabilities(logits)
    assert torch.allclose(probabilities.sum(1), torch.ones(2, 8, 16, 16))
    assert torch.equal(Scorer.of(tissue).predicted_mask(probabilities), logits.argmax(1).to(torch.uint8))
    image = tissue.model_copy(update={"size": (16, 16)})
    assert torch.allclose(image.probabilities(logits[:, :, 0]).sum(1), torch.ones(2, 16, 16))


@pytest.mark.parametrize("upsample", ["bilinear", "transpose"])  # transpose: what `auto` gives volumes
def test_a_volume_network_exports_to_torchscript_and_onnx(tmp_path, upsample):
    from cnn_factory.export import OrderedOutputs, write_onnx

    torch.manual_seed(0)
    blocks = Blocks(upsample=upsample)
    wrapped = OrderedOutputs(net(VOLUME_OUTPUTS, in_channels=1, depth=2, filters=4, dims=3, blocks=blocks)).eval()
    x = torch.randn(2, 1, 8, 16, 16)
    with torch.no_grad():
        expected = wrapped(x)
        traced = torch.jit.trace(wrapped, x)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(traced(x), expected))
    onnxruntime = pytest.importorskip("onnxruntime")
    write_onnx(wrapped, x, tmp_path / "scan.onnx")
    got = onnxruntime.InferenceSession(str(tmp_path / "scan.onnx")).run(None, {"x": x.numpy()})
    assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
    assert all(torch.allclose(torch.from_numpy(g), e, atol=1e-4) for g, e in zip(got, expected))


def full_resolution_convolutions(model: MultiOutputNet, x: torch.Tensor) -> list[str]:
    """The convolutions (kernel above 1, up-sampling aside) whose output has the input's spatial size."""
    seen: list[str] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, args, out, name=name: seen.append(name) if out.shape[2:] == x.shape[2:] else None
        )
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) and max(m.kernel_size) > 1
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("upsample", ["bilinear", "transpose"])
def test_a_strided_stem_runs_every_level_at_half_resolution(upsample):
    """model.stem strided: the masks still come at full size, but no 3x3x3 convolution runs at the
    input's resolution (the full stem runs four: two in the encoder, two in each decoder)."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 16, 16)
    model = net(
        VOLUME_OUTPUTS, in_channels=1, depth=2, filters=4, dims=3, stem="strided", blocks=Blocks(upsample=upsample)
    ).eval()
    out = model(x)
    assert out["organ"].shape == (2, 8, 16, 16) and out["tissue"].shape == (2, 3, 8, 16, 16)
    assert out["grade"].shape == (2, 2) and out["volume_ml"].shape == (2,)
    assert [f.shape[2:] for f in model.encoder(x)] == [(4, 8, 8), (2, 4, 4), (1, 2, 2)]
    assert full_resolution_convolutions(model, x) == []
    full = net(VOLUME_OUTPUTS, in_channels=1, depth=2, filters=4, dims=3, blocks=Blocks(upsample=upsample)).eval()
    assert len(full_resolution_convolutions(full, x)) == 2 + 2 * 2
    with pytest.raises(ValueError, match=r"8x16x12 pixels: every side must be divisible by 8 \(2\*\*depth times the"):
        model(torch.randn(1, 1, 8, 16, 12))


def test_a_coarse_axis_keeps_its_resolution_in_a_strided_stem():
    """Slices 3.2 mm apart against 1 mm pixels: the stem halves height and width only (nnU-Net's
    rule: an axis over twice as coarse as the finest is not pooled yet), and the decoders' last
    step up-samples by (1, 2, 2)."""
    from cnn_factory.model import stem_strides

    assert stem_strides("strided", 3, [3.2, 1.0, 1.0]) == [1, 2, 2]
    assert stem_strides("strided", 3, [1.9, 1.0, 1.0]) == [2, 2, 2] == stem_strides("strided", 3)
    assert stem_strides("full", 3, [3.2, 1.0, 1.0]) == [1, 1, 1] and stem_strides([1, 2, 2], 3) == [1, 2, 2]
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 16, 16)
    model = net(VOLUME_OUTPUTS, in_channels=1, depth=2, filters=4, dims=3, stem=[1, 2, 2]).eval()
    out = model(x)
    assert out["organ"].shape == (2, 8, 16, 16) and out["tissue"].shape == (2, 3, 8, 16, 16)
    assert [f.shape[2:] for f in model.encoder(x)] == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]
    assert full_resolution_convolutions(model, x) == []
    with pytest.raises(ValueError, match=r"8x16x12 pixels: the sides must be divisible by 4x8x8"):
        model(torch.randn(1, 1, 8, 16, 12))
    model(torch.randn(1, 1, 4, 8, 8))  # the coarse axis needs 2**depth only


def test_a_strided_stem_round_trips_and_old_files_have_a_full_one(tmp_path):
    torch.manual_seed(0)
    args = {"in_channels": 1, "depth": 1, "filters": 4, "outputs": VOLUME_OUTPUTS, "dims": 3, "stem": "strided"}
    model = MultiOutputNet.from_args(args).eval()
    save_model(tmp_path / "scan.pt", model, args, {})
    again, _ = load_model(tmp_path / "scan.pt")
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).values(), again(x).values()))
    old = {k: v for k, v in args.items() if k != "stem"}  # a model file from before model.stem
    save_model(tmp_path / "old.pt", MultiOutputNet.from_args(old), old, {})
    assert load_model(tmp_path / "old.pt")[0].encoder.stem == [1, 1, 1]


def test_a_strided_stem_lifts_by_a_learned_up_sampling_and_old_files_keep_theirs(tmp_path):
    """The strided stem's last step has no skip to sharpen it: new model files learn it (a
    transposed convolution) whatever model.upsample says; files from before keep model.upsample's."""
    import yaml

    from cnn_factory.config import parse_params
    from cnn_factory.model import model_args

    def lifting(model: MultiOutputNet) -> set[type]:
        lifts = [m for head in model.heads.values() for m in head.modules() if type(m).__name__ == "Lift"]
        assert len(lifts) == 2  # organ's and tissue's decoders
        return {type(m) for lift in lifts for m in lift.modules()}

    root = Path(__file__).resolve().parents[1]
    p = yaml.safe_load((root / "examples" / "volumes" / "params.yaml").read_text())
    p["model"]["upsample"] = "bilinear"
    cfg = parse_params(p)
    made = model_args(cfg.model, cfg.inputs, cfg.outputs, {"spacing": [3.2, 1.0, 1.0], "outputs": {}})
    assert made["lift"] == "transpose" and made["upsample"] == "bilinear" and made["stem"] == [1, 2, 2]
    args = {**made, "outputs": VOLUME_OUTPUTS}
    assert lifting(MultiOutputNet.from_args(args)) >= {torch.nn.ConvTranspose3d} - {torch.nn.Upsample}
    assert torch.nn.Upsample not in lifting(MultiOutputNet.from_args(args))
    old = {k: v for k, v in args.items() if k != "lift"}  # a model file from before the learned lift
    save_model(tmp_path / "old.pt", MultiOutputNet.from_args(old), old, {})
    loaded = lifting(load_model(tmp_path / "old.pt")[0])
    assert torch.nn.Upsample in loaded and torch.nn.ConvTranspose3d not in loaded


def test_the_model_file_records_the_stem_per_axis_from_the_target_spacing():
    import yaml

    from cnn_factory.config import parse_params
    from cnn_factory.model import model_args

    root = Path(__file__).resolve().parents[1]
    cfg = parse_params(yaml.safe_load((root / "examples" / "volumes" / "params.yaml").read_text()))
    assert cfg.model.stem == "strided"
    assert model_args(cfg.model, cfg.inputs, cfg.outputs, {"spacing": [3.26, 1.02, 1.02], "outputs": {}})["stem"] == [
        1,
        2,
        2,
    ]
    assert model_args(cfg.model, cfg.inputs, cfg.outputs, {"spacing": [1.5, 1.02, 1.02], "outputs": {}})["stem"] == [
        2,
        2,
        2,
    ]
    full = cfg.model_copy(update={"model": cfg.model.model_copy(update={"stem": "full"})})
    assert (
        model_args(full.model, full.inputs, full.outputs, {"spacing": [3.26, 1.02, 1.02], "outputs": {}})["stem"]
        == "full"
    )


@pytest.mark.parametrize(
    ("sizes", "spacing", "cuda", "stem"),
    [
        ([(64, 64)], None, False, "full"),  # images keep the full stem: the 2-D figures are the full stem's
        ([(16, 48, 48)], [3.2, 1.0, 1.0], False, [1, 2, 2]),  # thick slices kept in the stem
        ([(16, 48, 48)], [1.0, 1.0, 1.0], False, [2, 2, 2]),
        ([(16, 48, 48)], [3.2, 1.0, 1.0], True, "full"),  # CUDA: nnU-Net's full-resolution stem
        ([(16, 40, 48)], [3.2, 1.0, 1.0], False, "full"),  # 40 does not divide by 2 * 2**3
        ([(8, 48, 48)], [3.2, 1.0, 1.0], False, [1, 2, 2]),  # the kept axis needs 2**3 only
    ],
)
def test_an_auto_stem_is_strided_for_volumes_on_the_cpu_where_the_sizes_allow(sizes, spacing, cuda, stem):
    from cnn_factory.model import resolve_stem

    assert resolve_stem("auto", sizes, 3, spacing, cuda) == stem
    assert resolve_stem("full", sizes, 3, spacing, cuda) == "full"


def test_params_yaml_builds_the_same_2d_network_with_the_auto_stem_as_with_the_full_one():
    """params.yaml's default `auto` stem and up-sampling resolve to `full` and `bilinear` for the
    built-in example: the same model file, so the same figures."""
    import yaml

    from cnn_factory.config import parse_params
    from cnn_factory.model import model_args

    root = Path(__file__).resolve().parents[1]
    cfg = parse_params(yaml.safe_load((root / "params.yaml").read_text()))
    full = cfg.model.model_copy(update={"stem": "full", "upsample": "bilinear"})
    manifest = {"outputs": {}}
    assert cfg.model.stem == "auto" and cfg.model.upsample == "auto"
    for cuda in (False, True):
        auto_args = model_args(cfg.model, cfg.inputs, cfg.outputs, manifest, cuda=cuda)
        assert auto_args == model_args(full, cfg.inputs, cfg.outputs, manifest, cuda=cuda)
        assert auto_args["stem"] == "full" and auto_args["upsample"] == "bilinear"


def test_params_yaml_up_samples_volumes_by_transposed_convolutions():
    """`model.upsample: auto` learns a volume decoder's up-sampling (MultiOutputNet then holds
    transposed convolutions and no interpolation); a written value is kept."""
    import yaml

    from cnn_factory.config import parse_params
    from cnn_factory.model import model_args

    root = Path(__file__).resolve().parents[1]
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["inputs"]["image"].update(size=[16, 48, 48], channels=1, mode="patch")
    p["outputs"] = {"tumour": {"type": "segmentation", "column": "labels", "label": 2}}
    manifest = {"spacing": [3.2, 1.0, 1.0], "outputs": {}}

    def made(upsample: str) -> dict:
        cfg = parse_params({**p, "model": {**p["model"], "upsample": upsample}})
        return model_args(cfg.model, cfg.inputs, cfg.outputs, manifest)

    assert made("auto")["upsample"] == "transpose" and made("auto")["dims"] == 3
    layers = {type(m) for m in MultiOutputNet.from_args({**made("auto"), "outputs": VOLUME_OUTPUTS}).modules()}
    assert torch.nn.ConvTranspose3d in layers and torch.nn.Upsample not in layers
    assert made("bilinear")["upsample"] == "bilinear"


def test_volumes_with_the_full_stem_on_the_cpu_get_one_line_of_advice():
    import yaml

    from cnn_factory.config import parse_params
    from cnn_factory.model import stem_advice

    root = Path(__file__).resolve().parents[1]
    cfg = parse_params(yaml.safe_load((root / "examples" / "volumes" / "params.yaml").read_text()))
    sizes, spacing = [tuple(cfg.first_input.size)], [3.2, 1.0, 1.0]
    full = cfg.model.model_copy(update={"stem": "full"})
    advice = stem_advice(full, sizes, spacing, cuda=False)
    assert "model.stem full" in advice and advice.endswith("dvc exp run -S model.stem=auto")
    assert "\n" not in advice
    assert stem_advice(full, sizes, spacing, cuda=True) == ""  # on CUDA the full stem is the plan's too
    assert stem_advice(cfg.model, sizes, spacing, cuda=False) == ""  # strided already
    assert stem_advice(full, [(16, 36, 48)], spacing, cuda=False) == ""  # 36: not a multiple of 2 * 2**2
    assert stem_advice(full, [(64, 64)], None, cuda=False) == ""  # images


def test_a_model_file_keeps_the_flat_model_args_it_always_had(tmp_path):
    """A file as the train stage wrote it before NetShape: a flat `model_args` dict (here without dims
    and stem, as files from before those were recorded) loads, and the network gives the same dict back."""
    torch.manual_seed(0)
    flat = {"in_channels": 3, "depth": 2, "filters": [4, 6, 8], "outputs": OUTPUTS, "norm": "group", "dropout": 0.1,
            "upsample": "transpose", "skip": "add", "encoder": "unet"}  # fmt: skip
    shape = NetShape(in_channels=3, depth=2, filters=[4, 6, 8],
                     blocks=Blocks(norm="group", dropout=0.1, upsample="transpose", skip="add"))  # fmt: skip
    state = {k: v.clone() for k, v in MultiOutputNet(shape=shape, outputs=OUTPUTS).state_dict().items()}
    torch.save({"format": "cnn-factory/2", "model_args": flat, "state_dict": state, "epoch": 3}, tmp_path / "old.pt")
    model, meta = load_model(tmp_path / "old.pt")
    assert model.shape == shape and meta["epoch"] == 3
    assert model.args() == {**flat, "dims": 2, "stem": "full", "lift": "upsample"}
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    torch.save(
        {"format": "cnn-factory/2", "model_args": {**flat, "width": 2}, "state_dict": state}, tmp_path / "odd.pt"
    )
    with pytest.raises(UserError, match="do not fit this version"):
        load_model(tmp_path / "odd.pt")

"""Each loss against a value computed by hand, and the weighted total over the output dict."""

from __future__ import annotations

import math

import pytest
import torch

from cnn_factory.losses import soft_dice_loss
from cnn_factory.outputs import Output, make_output
from cnn_factory.training.losses import Criterion

EXTRA = {"segmentation": {"label": 1}, "category": {"classes": ["a", "b", "c"]}, "numeric": {}}


def spec(kind: str, loss: str, weight: float = 1.0, name: str = "o") -> Output:
    return make_output(name, type=kind, column="o", loss=loss, weight=weight, **EXTRA[kind])


def make_loss(spec: Output, scale: float = 1.0):
    return spec.make_loss({"std": scale})


def test_binary_crossentropy_by_hand():
    logits, target = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2  # -log(sigmoid(0)), -log(1 - sigmoid(2))
    assert make_loss(spec("segmentation", "binary_crossentropy"))(logits, target).item() == pytest.approx(expected)


def test_binary_crossentropy_is_stable_for_large_logits():
    loss = make_loss(spec("segmentation", "binary_crossentropy"))(torch.tensor([[-200.0]]), torch.tensor([[1.0]]))
    assert loss.item() == pytest.approx(200.0)


def test_soft_dice_by_hand():
    logits, target = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    # p = [0.5, 0.5]: intersection 0.5, sums 1 + 1, eps 1 -> 1 - (1 + 1) / (2 + 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - 2 / 3)
    assert make_loss(spec("segmentation", "bce_dice"))(logits, target).item() == pytest.approx(math.log(2) + 1 / 3)


def test_categorical_crossentropy_by_hand():
    logits, target = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0])
    expected = -math.log(math.e / (math.e + 2))
    assert make_loss(spec("category", "categorical_crossentropy"))(logits, target).item() == pytest.approx(expected)


def test_numeric_losses_are_in_units_of_std():
    pred, target = torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.0])
    assert make_loss(spec("numeric", "mse"), scale=2.0)(pred, target).item() == pytest.approx(0.5)  # (1^2 + 0)/2
    assert make_loss(spec("numeric", "mae"), scale=1.0)(pred, target).item() == pytest.approx(1.0)


def test_total_is_weighted_sum_over_outputs():
    outputs = {"a": spec("numeric", "mae", weight=2.0, name="a"), "b": spec("numeric", "mse", weight=0.5, name="b")}
    total, parts = Criterion(outputs, {})(
        {"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}, {"a": torch.tensor([0.0]), "b": torch.tensor([0.0])}
    )
    assert parts["a"].item() == pytest.approx(1.0) and parts["b"].item() == pytest.approx(4.0)
    assert total.item() == pytest.approx(2.0 * 1.0 + 0.5 * 4.0)


def test_soft_jaccard_by_hand():
    logits, target = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    # p = [0.5, 0.5]: intersection 0.5, union 1 + 1 - 0.5 = 1.5, eps 1 -> 1 - 1.5 / 2.5
    assert make_loss(spec("segmentation", "jaccard"))(logits, target).item() == pytest.approx(1 - 1.5 / 2.5)


def test_focal_by_hand():
    logits, target = torch.tensor([[0.0, math.log(3)]]), torch.tensor([[1.0, 1.0]])
    # pixel 1: p_t = 0.5 -> 0.25 * log 2; pixel 2: p_t = 0.75 -> 0.0625 * -log 0.75
    expected = (0.25 * math.log(2) + 0.0625 * -math.log(0.75)) / 2
    assert make_loss(spec("segmentation", "focal"))(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_focal_is_stable_for_large_logits():
    loss = make_loss(spec("segmentation", "focal"))(torch.tensor([[-100.0, 100.0]]), torch.tensor([[1.0, 0.0]]))
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(100.0)


def test_label_smoothing_by_hand():
    s = make_output(
        "o",
        type="category",
        column="o",
        loss="categorical_crossentropy",
        weight=1.0,
        classes=["a", "b"],
        label_smoothing=0.2,
    )
    # logits 0, 0: log p = log 0.5 for both; smoothed target [0.9, 0.1] -> loss log 2 whatever the class
    assert make_loss(s)(torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(math.log(2))
    # logits [1, 0]: -(0.9 log p0 + 0.1 log p1)
    p0 = math.e / (math.e + 1)
    expected = -(0.9 * math.log(p0) + 0.1 * math.log(1 - p0))
    assert make_loss(s)(torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(expected)


def test_class_weights_by_hand():
    s = make_output(
        "o",
        type="category",
        column="o",
        loss="categorical_crossentropy",
        weight=1.0,
        classes=["a", "b"],
        class_weights=[1.0, 3.0],
    )
    logits, target = torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    # each sample's loss is log 2; the weighted mean is (1 log2 + 3 log2) / (1 + 3) = log 2
    assert make_loss(s)(logits, target).item() == pytest.approx(math.log(2))
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p0 = math.e / (math.e + 1)
    expected = (1 * -math.log(p0) + 3 * -math.log(1 - p0)) / 4
    assert make_loss(s)(logits, target).item() == pytest.approx(expected)


def test_class_losses_of_volumes_equal_those_of_their_slices_side_by_side():
    from cnn_factory.losses import class_ce_dice_loss

    logits, target = torch.randn(2, 3, 4, 8, 8), torch.randint(0, 3, (2, 4, 8, 8))
    flat = class_ce_dice_loss(logits.reshape(2, 3, 32, 8), target.reshape(2, 32, 8))
    assert torch.allclose(class_ce_dice_loss(logits, target), flat)

"""The test-set scores against values worked out by hand, and their bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnn_factory.evaluate import Evaluation
from cnn_factory.outputs import Scorer, make_output
from cnn_factory.report import test_figures as report_figures  # not a test: pytest collects test_*
from cnn_factory.scores.bootstrap import intervals, resample_indices
from cnn_factory.scores.classes import class_summary, roc_auc
from cnn_factory.scores.masks import mask_scores, mask_summary
from cnn_factory.scores.numbers import number_summary
from cnn_factory.training.pictures import Gallery


def square(shape, top, left, side) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def pixel(shape, y, x) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y, x] = True
    return mask


def test_identical_masks_score_perfectly():
    s = mask_scores(square((7, 7), 2, 2, 3), square((7, 7), 2, 2, 3), tolerance=1)
    assert (s["dice"], s["iou"], s["hd95"], s["nsd"]) == (1.0, 1.0, 0.0, 1.0)
    assert (s["truth_px"], s["pred_px"], s["tp"], s["fp"], s["fn"]) == (9, 9, 9, 0, 0)


def test_a_square_shifted_by_one_pixel():
    """4x4 squares one column apart: 12 shared pixels, 4 on each side alone; each boundary of 12
    pixels has 6 on the other boundary (distance 0) and 6 one pixel from it."""
    truth, pred = square((10, 10), 2, 2, 4), square((10, 10), 2, 3, 4)
    s = mask_scores(pred, truth, tolerance=2)
    assert s["dice"] == pytest.approx(24 / 32) and s["iou"] == pytest.approx(12 / 20)
    assert s["hd95"] == pytest.approx(1.0) and s["nsd"] == 1.0
    assert mask_scores(pred, truth, tolerance=0.5)["nsd"] == pytest.approx(12 / 24)


def test_one_pixel_masks():
    one = pixel((9, 9), 3, 3)
    assert mask_scores(one, one, 1)["dice"] == 1.0 and mask_scores(one, one, 1)["hd95"] == 0.0
    apart = mask_scores(pixel((9, 9), 3, 5), one, tolerance=2)  # two pixels apart
    assert (apart["dice"], apart["iou"], apart["hd95"], apart["nsd"]) == (0.0, 0.0, 2.0, 1.0)
    assert mask_scores(pixel((9, 9), 3, 5), one, tolerance=1.5)["nsd"] == 0.0


def test_empty_masks_follow_the_stated_convention():
    empty = np.zeros((10, 10), bool)
    both = mask_scores(empty, empty, 2)
    assert all(math.isnan(both[k]) for k in ("dice", "iou", "hd95", "nsd")) and both["truth_px"] == 0
    missed = mask_scores(empty, pixel((10, 10), 4, 4), 2)  # truth there, nothing predicted
    invented = mask_scores(pixel((10, 10), 4, 4), empty, 2)  # nothing there, something predicted
    for s in (missed, invented):
        assert (s["dice"], s["iou"], s["nsd"]) == (0.0, 0.0, 0.0)
        assert s["hd95"] == pytest.approx(math.hypot(10, 10))  # the largest distance the image holds


@pytest.mark.parametrize(("shape", "spacing"), [((40, 50), None), ((16, 20, 20), (3.0, 1.0, 0.8))])
def test_boundary_scores_agree_with_monai(shape, spacing):
    metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    from scipy.ndimage import binary_opening, gaussian_filter

    rng = np.random.default_rng(0)
    for _ in range(5 if len(shape) == 2 else 2):
        if len(shape) == 2:
            truth, pred = (rng.random((2, *shape)) > 0.3).astype(float)
            truth, pred = binary_opening(truth, iterations=2), binary_opening(pred, iterations=2)
        else:  # blobs: opened noise leaves nothing in 3-D
            truth, pred = (gaussian_filter(rng.random(shape), 1.5) > 0.5 for _ in range(2))
        ours = mask_scores(pred, truth, tolerance=1.5, spacing=spacing)
        onehot = [torch.from_numpy(np.stack([~m, m])[None]).float() for m in (pred, truth)]
        hd95 = metrics.compute_hausdorff_distance(onehot[0], onehot[1], percentile=95, spacing=spacing).item()
        nsd = metrics.compute_surface_dice(onehot[0], onehot[1], class_thresholds=[1.5], spacing=spacing).item()
        assert ours["hd95"] == pytest.approx(hd95, rel=1e-6) and ours["nsd"] == pytest.approx(nsd, rel=1e-6)


def box(shape, corner, sides) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(c, c + n) for c, n in zip(corner, sides))] = True
    return mask


def test_spacing_of_one_leaves_the_pixel_figures_as_they_were():
    rng = np.random.default_rng(1)
    for shape in ((12, 15), (6, 8, 9)):
        pred, truth = rng.random((2, *shape)) > 0.5
        for tolerance in (0.5, 1.5):
            assert mask_scores(pred, truth, tolerance, spacing=(1.0,) * len(shape)) == mask_scores(
                pred, truth, tolerance
            )


def test_boxes_one_slice_apart_at_3_mm_slices():
    """6x6x6 boxes, the prediction one slice deeper, slices 3 mm apart, 1 mm in plane. Each boundary
    has 152 voxels: the 80 side voxels shared by both depths lie on the other boundary (0 mm); the
    face outside the other box (36 voxels) is 3 mm from the other's face; the face inside the other
    box is 0 mm from it on its rim (20 voxels) and 1 or 2 mm in plane from that rim (12 and 4 voxels)."""
    truth, pred = box((12, 14, 14), (2, 4, 4), (6, 6, 6)), box((12, 14, 14), (3, 4, 4), (6, 6, 6))
    s = mask_scores(pred, truth, tolerance=3.1, spacing=(3.0, 1.0, 1.0))
    assert s["dice"] == pytest.approx(2 * 180 / 432) and s["hd95"] == pytest.approx(3.0) and s["nsd"] == 1.0
    below = mask_scores(pred, truth, tolerance=2.9, spacing=(3.0, 1.0, 1.0))
    assert below["hd95"] == pytest.approx(3.0) and below["nsd"] == pytest.approx(2 * 116 / (2 * 152))
    assert mask_scores(pred, truth, tolerance=1.5, spacing=(3.0, 1.0, 1.0))["nsd"] == pytest.approx(2 * 112 / 304)
    apart = box((12, 14, 14), (4, 4, 4), (6, 6, 6))  # two slices deeper: 6 mm
    assert mask_scores(apart, truth, tolerance=1, spacing=(3.0, 1.0, 1.0))["hd95"] == pytest.approx(6.0)
    assert mask_scores(pred, truth, tolerance=1)["hd95"] == pytest.approx(1.0)  # in voxels, as without spacing


def test_a_square_shifted_along_half_millimetre_pixels():
    truth, pred = square((10, 10), 2, 2, 4), square((10, 10), 2, 3, 4)  # one column apart
    assert mask_scores(pred, truth, tolerance=0.4, spacing=(1.0, 0.5))["hd95"] == pytest.approx(0.5)
    assert mask_scores(pred, truth, tolerance=0.4, spacing=(1.0, 0.5))["nsd"] == pytest.approx(12 / 24)
    assert mask_scores(pred, truth, tolerance=0.5, spacing=(1.0, 0.5))["nsd"] == 1.0


def test_an_empty_volume_against_a_full_one_scores_the_diagonal_in_mm():
    empty, one = np.zeros((8, 10, 12), bool), box((8, 10, 12), (3, 3, 3), (2, 2, 2))
    for s in (mask_scores(empty, one, 2, spacing=(3.0, 0.5, 0.5)), mask_scores(one, empty, 2, spacing=(3.0, 0.5, 0.5))):
        assert s["hd95"] == pytest.approx(math.sqrt(24**2 + 5**2 + 6**2)) and s["nsd"] == 0.0


def test_spacing_needs_one_size_per_axis():
    with pytest.raises(ValueError, match="one size per axis"):
        mask_scores(np.ones((4, 4, 4), bool), np.ones((4, 4, 4), bool), 1, spacing=(1.0, 1.0))


def test_summary_over_images_leaves_out_images_with_nothing_to_score():
    rows = [mask_scores(p, t, 2) for p, t in [(square((8, 8), 1, 1, 4),) * 2, (np.zeros((8, 8), bool),) * 2]]
    rows.append(mask_scores(square((8, 8), 1, 1, 2), square((8, 8), 1, 1, 4), 2))  # 4 of 16 found: dice 0.4
    columns = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    s = mask_summary(columns)
    assert s["dice"] == pytest.approx((1 + 0.4) / 2) and s["empty_images"] == 1
    assert s["dice_pooled"] == pytest.approx(2 * 20 / (2 * 20 + 0 + 12))  # 16 + 4 found, 12 missed


def test_class_figures_by_hand():
    true = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])  # predicted 0, 1, 1, 1
    s = class_summary(true, probs, ("a", "b"))
    assert s["accuracy"] == 0.75 and s["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)
    assert (s["a/precision"], s["a/recall"]) == (1.0, 0.5) and s["b/precision"] == pytest.approx(2 / 3)
    assert s["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert s["roc_auc"] == 1.0  # every positive scores above every negative
    # each image alone in its confidence bin: |1 - .9|, |0 - .6|, |1 - .8|, |1 - .7| averaged
    assert s["ece"] == pytest.approx((0.1 + 0.6 + 0.2 + 0.3) / 4)


def test_roc_auc_counts_ties_half_and_needs_both_classes():
    assert roc_auc(np.array([True, False]), np.array([0.5, 0.5])) == 0.5
    assert roc_auc(np.array([True, False, True]), np.array([0.2, 0.6, 0.9])) == 0.5
    assert math.isnan(roc_auc(np.array([True, True]), np.array([0.2, 0.6])))


def test_three_classes_have_no_auc_and_balanced_accuracy_ignores_absent_classes():
    s = class_summary(np.array([0, 0, 1]), np.eye(3)[[0, 1, 1]], ("x", "y", "z"))
    assert "roc_auc" not in s and s["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)


def test_number_figures_by_hand():
    s = number_summary(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert s["mae"] == pytest.approx(2 / 3) and s["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert s["r2"] == pytest.approx(1 - 4 / 2)
    assert math.isnan(number_summary(np.ones(3), np.ones(3))["r2"])  # no spread in the truth


def mean_summary(columns):
    return {"mean": float(np.mean(columns["x"]))}


def test_bootstrap_intervals_cover_the_estimate_and_shrink_with_more_images():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 500):
        x = rng.beta(8, 2, n)
        low, high = intervals({"x": x}, mean_summary, ("mean",), 1000, seed=0)["mean"]
        assert low < x.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # about sqrt(25) = 5 times narrower
    x = rng.random(30)
    again = [intervals({"x": x}, mean_summary, ("mean",), 200, seed=7) for _ in range(2)]
    assert again[0] == again[1] != intervals({"x": x}, mean_summary, ("mean",), 200, seed=8)
    assert intervals({"x": x}, mean_summary, ("mean",), 0) == {}


def test_whole_groups_are_drawn_and_widen_the_interval_of_alike_images():
    """A patient's images, alike, count as one draw: 10 patients of 5 images each, each image its
    patient's value and a little noise, give an interval about sqrt(5) times the images' own."""
    rng = np.random.default_rng(3)
    patients = [f"P{i // 5}" for i in range(50)]
    x = np.repeat(rng.normal(0, 1, 10), 5) + rng.normal(0, 0.05, 50)
    drawn = resample_indices(50, 200, 4, patients)
    for idx in drawn:  # each resample: whole patients, ten of them
        taken = np.bincount(idx, minlength=50).reshape(10, 5)
        assert (taken == taken[:, :1]).all() and taken[:, 0].sum() == 10
    by_image = intervals({"x": x}, mean_summary, ("mean",), 1000, seed=0)["mean"]
    by_patient = intervals({"x": x}, mean_summary, ("mean",), 1000, seed=0, groups=patients)["mean"]
    ratio = (by_patient[1] - by_patient[0]) / (by_image[1] - by_image[0])
    assert 1.8 < ratio < 2.8, ratio
    alone = resample_indices(50, 200, 4, [str(i) for i in range(50)])  # groups of one image each
    assert np.array_equal(np.stack(alone), resample_indices(50, 200, 4))


def test_each_kind_summarises_its_own_rows():
    seg = Scorer.of(make_output("m", (8, 8), type="segmentation", label=1))
    rows = [seg.image_scores(square((8, 8), 1, 1, 4), square((8, 8), 1, 1, 4), 2.0)]
    columns = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    assert seg.summarise(columns)["dice"] == 1.0 and set(seg.interval_metrics) <= set(seg.summarise(columns))
    cat = Scorer.of(make_output("c", (8, 8), type="category", classes=["a", "b"]))
    rows = [cat.image_scores(np.array(p), np.array(t), 2.0) for p, t in [([0.8, 0.2], 0), ([0.3, 0.7], 0)]]
    columns = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    assert cat.summarise(columns)["accuracy"] == 0.5
    assert cat.table_cells(columns)["predicted"] == ["a", "b"]
    num = Scorer.of(make_output("n", (8, 8), type="numeric"))
    rows = [num.image_scores(np.array(p), np.array(t), 2.0) for p, t in [(1.5, 1.0), (2.0, 3.0)]]
    columns = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    assert num.summarise(columns)["mae"] == 0.75 and num.table_cells(columns)["error"] == [0.5, -1.0]


def test_an_outputs_intervals_do_not_depend_on_the_other_outputs():
    rng = np.random.default_rng(0)
    cat = Scorer.of(make_output("c", (8, 8), type="category", classes=["a", "b"]))
    num = Scorer.of(make_output("n", (8, 8), type="numeric"))
    rows = {
        "n": {"predicted": rng.random(40), "true": rng.random(40)},
        "c": {k: np.array(v) for k, v in _category_columns(cat, rng).items()},
    }
    alone = report_figures(Evaluation({}, {}, Gallery({}, 0), {}, rows={"c": rows["c"]}), {"c": cat.output}, 200, 3)
    beside = report_figures(
        Evaluation({}, {}, Gallery({}, 0), {}, rows=rows), {"c": cat.output, "n": num.output}, 200, 3
    )
    assert {k: v for k, v in beside.items() if k.startswith("c/")} == alone
    assert "c/accuracy_ci_low" in alone and "n/mae_ci_low" in beside


def _category_columns(cat: Scorer, rng: np.random.Generator) -> dict[str, list]:
    rows = [cat.image_scores(np.array([p, 1 - p]), np.array(int(rng.random() < 0.5)), 2.0) for p in rng.random(40)]
    return {k: [r[k] for r in rows] for k in rows[0]}

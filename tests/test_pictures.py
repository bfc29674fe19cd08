"""The pictures train and evaluate log: kept from the predictions their loops already make."""

from __future__ import annotations

import numpy as np
import torch
from dvclive import Live
from skimage import io

from cnn_factory.config import parse_params
from cnn_factory.training.pictures import HEADING, PREDICTION, TRUTH, Gallery, WorstCases, overlay_grid
from tests.conftest import tiny_params


def batch(n: int, first: int) -> tuple[torch.Tensor, dict, dict]:
    """n images numbered from `first` (each image filled with its number), masks and logits."""
    images = torch.arange(first, first + n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 16, 16).clone()
    truth = torch.zeros(n, 16, 16)
    truth[:, :8] = 1  # top half
    logits = torch.full((n, 16, 16), -1.0)
    logits[:, :, :8] = 1.0  # left half
    return images, {"round": truth, "angular": truth, "majority": torch.zeros(n)}, {"round": logits, "angular": logits}


def test_gallery_keeps_the_first_images_across_batches_and_logs_one_picture_per_mask(tmp_path):
    outputs = parse_params(tiny_params()).outputs  # round, angular: segmentation; majority: category
    gallery = Gallery(outputs, limit=5)
    for first in (0, 3, 6, 9):  # batches of 3: the first five images are 0, 1, 2 | 3, 4
        gallery.add(*batch(3, first))
    assert gallery.count == 5 and [len(b) for b in gallery.images] == [3, 2]
    assert set(gallery.masks) == {"round", "angular"}
    with Live(str(tmp_path / "live"), save_dvc_exp=False, dvcyaml=None) as live:
        gallery.log(live, "{output}/7.png")
    for name in ("round", "angular"):
        picture = io.imread(tmp_path / "live" / "plots" / "images" / name / "7.png")
        images, truth, pred = batch(5, 0)
        expected = overlay_grid(images.numpy(), truth[name].numpy() > 0.5, pred[name].numpy() > 0)
        assert np.array_equal(picture[..., :3], expected)
    assert not (tmp_path / "live" / "plots" / "images" / "majority").exists()


def test_an_empty_gallery_logs_nothing(tmp_path):
    with Live(str(tmp_path / "live"), save_dvc_exp=False, dvcyaml=None) as live:
        Gallery(parse_params(tiny_params()).outputs, limit=4).log(live, "{output}.png")
    assert not (tmp_path / "live" / "plots" / "images").exists()


def test_worst_cases_keep_the_lowest_scores_and_skip_unscored_images():
    worst = WorstCases(limit=2)
    mask = np.zeros((300, 600), bool)
    mask[100:200, 100:300] = True
    for row, score in enumerate([0.9, float("nan"), 0.2, 0.5, 0.1, 0.95]):
        image = np.full((1, 30, 60), row * 40, np.uint8)  # any size: brought to the mask's
        worst.offer(score, row, image, mask, mask)
    assert [(s, r) for s, r, _ in worst.items] == [(0.1, 4), (0.2, 2)]
    picture = worst.picture(["first", "second"])
    assert picture is not None and picture.dtype == np.uint8
    # each panel: a caption and a heading strip over [image | truth | prediction], the 600x300 mask
    # subsampled by 3 to fit
    assert picture.shape[1] == 3 * 200 + 4 and picture.shape[0] == 2 * (16 + HEADING + 100 + 6)
    assert picture[16 + HEADING + 4, 10].tolist() == [160, 160, 160]  # the image of row 4 (value 160), lowest first
    assert WorstCases(limit=0).picture([]) is None


def test_masks_are_outlined_over_the_image_with_a_black_rim_under_a_legend():
    """On a green image (as the example's backgrounds) the truth's yellow and the prediction's magenta
    edges show, with the image itself inside them; the heading names each panel with its colour."""
    images = np.zeros((1, 3, 64, 64), np.uint8)
    images[:, 1] = 150
    truth, pred = np.zeros((2, 1, 64, 64), bool)
    truth[0, 16:48, 16:48] = True
    pred[0, 20:52, 16:48] = True
    grid = overlay_grid(images, truth, pred)
    scale, width = 4, 256 + 8  # 64 px enlarged to 256, panels 8 px apart

    def at(panel: int, y: int, x: int) -> list[int]:
        return grid[HEADING + y, panel * width + x].tolist()

    green = [0, 150, 0]
    assert grid.shape == (HEADING + 256, 3 * 256 + 16, 3)
    assert at(0, 16 * scale, 128) == green  # the image panel as it is
    assert at(1, 16 * scale, 128) == list(TRUTH) and at(1, 16 * scale - 1, 128) == [0, 0, 0]
    assert at(1, 128, 128) == green  # inside the outline: the image
    assert at(2, 20 * scale + 1, 128) == list(PREDICTION) and at(2, 16 * scale, 128) == green
    assert at(2, 52 * scale - 1, 128) == list(PREDICTION) and at(2, 52 * scale, 128) == [0, 0, 0]
    legend = grid[:HEADING]
    assert grid[7, width + 7].tolist() == list(TRUTH) and grid[7, 2 * width + 7].tolist() == list(PREDICTION)
    assert (legend[:, :256] < 128).any()  # the word "image" over the first panel


def test_two_inputs_stacked_show_their_first_channel_in_grey():
    """A volume of two scans (two inputs, e.g. FLAIR and T1c) is drawn: its first channel, grey."""
    images = np.zeros((1, 2, 4, 32, 32), np.uint8)
    images[:, 0], images[:, 1] = 90, 200
    truth, pred = np.zeros((2, 1, 4, 32, 32), bool)
    truth[0, 2, 8:24, 8:24] = pred[0, 2, 10:24, 8:24] = True
    grid = overlay_grid(images, truth, pred)
    assert grid.shape[-1] == 3 and grid[HEADING + 64, 64].tolist() == [90, 90, 90]

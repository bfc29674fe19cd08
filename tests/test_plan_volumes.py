"""`cnn-factory plan` for volumes: the target spacing and why, a patch from a voxel budget (the
coarse axis gives up voxels first), depth, batch, and the command on a volume params file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnn_factory.config import parse_params
from cnn_factory.data.grids import resolve_spacing
from cnn_factory.data.table import read_table
from cnn_factory.data.volumes_example import make_volume_example
from cnn_factory.errors import UserError
from cnn_factory.plan import run_plan
from cnn_factory.plan.budget import Training
from cnn_factory.plan.fingerprint import Fingerprint, Grids, Masks, fingerprint
from cnn_factory.plan.patch import mm
from cnn_factory.plan.propose import propose
from cnn_factory.volumes import read_label_volume, read_volume
from tests.test_cli import cli
from tests.test_volume_pipeline import volume_params

MASK = {"m": type("Mask", (), {"spatial": True})()}


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """10 scans of about 12x24x24 voxels, slices 2.5-4 mm apart, pixels 0.8-1.2 mm."""
    folder = tmp_path_factory.mktemp("plan_scans")
    make_volume_example(folder, rows=10, size=(12, 24, 24), seed=0)
    return folder


@pytest.fixture(scope="module")
def cubes(tmp_path_factory) -> Path:
    """As many voxels along every axis (about 24), the slices three times as far apart as the pixels."""
    folder = tmp_path_factory.mktemp("plan_cubes")
    make_volume_example(folder, rows=4, size=(24, 24, 24), seed=1)
    return folder


def _fingerprint(shapes, spacings, given=None) -> Fingerprint:
    """100 rows, 20 scans read, one mask output "m"."""
    return Fingerprint(
        rows=100,
        read=20,
        channels=1,
        grids=Grids.of(shapes, spacings, given),
        intensity=(0.0, 50.0, 200.0),
        masks=Masks(foreground={"m": 0.01}, objects={"m": 20.0}),
    )


def test_the_fingerprint_reads_grids_intensities_and_masks(scans):
    cfg = parse_params(volume_params(scans))
    fp = fingerprint(cfg, sample=6)
    assert fp.rows == 10 and len(fp.grids.shapes) == 10 and fp.read == 6  # every header, the sample's voxels
    table = read_table(cfg.data.csv)
    prepared = resolve_spacing(cfg, table, ["train"] * len(table.rows)).first_input.spacing
    assert fp.grids.given is None and np.allclose(fp.grids.target, prepared)  # what prepare would resolve auto to
    assert 2.5 <= fp.grids.target[0] <= 4 and 0.8 <= fp.grids.target[1] <= 1.2 and fp.grids.anisotropy > 2
    assert np.all(np.abs(fp.grids.median - [12, 24, 24]) <= 6)
    assert 0 < fp.masks.foreground["tumour"] < fp.masks.foreground["organ"] < 0.5
    assert (
        0 < fp.masks.objects["tumour"] < fp.masks.objects["organ"] < 40
    )  # mm: the organ spans a third of the scan or so
    assert set(fp.columns.values) == {"grade", "tumour_ml", "tumour_volume"}  # the measure's truth column too
    assert fp.intensity[0] < fp.intensity[1] < fp.intensity[2]


def test_proposals_fit_the_scans_and_divide_by_two_to_the_depth(scans):
    cfg = parse_params(volume_params(scans))
    fp = fingerprint(cfg, sample=6)
    training = Training(train=cfg.train, rows=7, val=2)
    rows = {key: (value, why) for key, value, why in propose(fp, 2**30, cfg.outputs, training=training)}
    size, depth = rows["inputs.*.size"][0], rows["model.depth"][0] + 1  # and the strided stem's halving
    assert rows["model.stem"][0] == "strided" and "no GPU-sized budget" in rows["model.stem"][1]
    assert "depth, over twice as coarse, keeps its resolution there" in rows["model.stem"][1]  # slices of 2.5-4 mm
    assert len(size) == 3 and all(n % 2**depth == 0 for n in size) and 1 <= depth <= 5
    assert all(abs(n - m) <= 2**depth / 2 for n, m in zip(size, fp.grids.median))  # the median scan, whole
    assert size[0] < size[1] and size[0] // 2**depth >= 1 and 4 <= size[1] // 2**depth <= 8
    spacing, why = rows["inputs.*.spacing"]
    assert spacing == "auto" and f"resolves to {mm(fp.grids.target)} mm" in why
    assert rows["train.batch_size"][0] >= 2 and rows["model.filters"][0] == 16
    assert rows["train.foreground"][0] == 0.33 and "tumour" in rows["train.foreground"][1]
    assert "val scans" in rows["train.val_patches"][1]


def test_the_coarse_axis_gives_up_voxels_first(cubes):
    fp = fingerprint(parse_params(volume_params(cubes)), sample=4)
    assert abs(fp.grids.median[0] - fp.grids.median[1]) <= 4  # as many voxels, three times the mm along depth
    roomy = {k: (v, why) for k, v, why in propose(fp, 2**30, MASK)}["inputs.*.size"]
    size, why = {k: (v, why) for k, v, why in propose(fp, 0.05 * 2**30, MASK)}["inputs.*.size"]
    assert roomy[0] == [24, 24, 24] and "cut" not in roomy[1]  # the median scan fits whole
    assert size[0] < min(size[1:]) and size[1:] == roomy[0][1:] and "cut where longest in mm (depth 2x)" in why


def test_a_budget_shrinks_large_scans_and_sets_the_batch():
    fp = _fingerprint([(300, 512, 512)] * 5, [(1.0, 0.8, 0.8)] * 5)
    small = {k: v for k, v, _ in propose(fp, 4 * 2**30, MASK)}
    large = {k: v for k, v, _ in propose(fp, 80 * 2**30, MASK)}
    assert small["model.stem"] == "strided" and large["model.stem"] == "full"
    for rows in (small, large):
        halvings = rows["model.depth"] + (rows["model.stem"] == "strided")
        assert all(n % 2**halvings == 0 for n in rows["inputs.*.size"])
        assert 4 <= rows["inputs.*.size"][1] // 2**halvings <= 8 and rows["train.batch_size"] >= 2
    assert np.prod(small["inputs.*.size"]) < np.prod(large["inputs.*.size"]) and large["model.filters"] == 32
    # mm, not voxels, decide: the 300 slices of 1 mm are shorter than 512 pixels of 0.8 mm
    assert small["inputs.*.size"][0] <= small["inputs.*.size"][1] * 1.0 / 0.8


def test_the_spacing_reason_names_the_resolved_value_and_nnunets_rule():
    shapes = [(20, 256, 256)] * 8 + [(60, 256, 256)] * 2  # most scans of 20 thick slices, a few of thin ones
    fp = _fingerprint(shapes, [(5.0, 0.7, 0.7)] * 8 + [(1.5, 0.7, 0.7)] * 2)
    assert fp.grids.target[0] < 5  # the 10th percentile of the slice spacings, not their median
    key, value, why = propose(fp, 8 * 2**30, MASK)[0]
    assert (key, value) == ("inputs.*.spacing", "auto") and f"resolves to {mm(fp.grids.target)} mm" in why
    assert "depth is coarse (5 mm" in why and "its 10th percentile, as nnU-Net" in why
    given = _fingerprint(shapes, [(5.0, 0.7, 0.7)] * 8 + [(1.5, 0.7, 0.7)] * 2, given=(2.0, 0.7, 0.7))
    key, value, why = propose(given, 8 * 2**30, MASK)[0]
    assert value == [2.0, 0.7, 0.7] and f"auto would resolve to {mm(fp.grids.auto)} mm" in why


def test_tiff_stacks_without_calibration_are_planned_at_the_stated_spacing(scans, tmp_path):
    import tifffile

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    lines = ["image,labels,grade,tumour_ml"]
    for line in (scans / "data.csv").read_text().splitlines()[1:5]:
        image, labels, grade, ml = line.split(",")
        name = Path(image).name.replace(".nii.gz", ".tif")
        tifffile.imwrite(tmp_path / "images" / name, read_volume(scans / image, "test").array[0])
        tifffile.imwrite(tmp_path / "labels" / name, read_label_volume(scans / labels, "test").array)
        lines.append(f"images/{name},labels/{name},{grade},{ml}")
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"row 2, column 'image': .* has no voxel spacing .* inputs\.\*\.spacing"):
        fingerprint(parse_params(volume_params(tmp_path)), sample=4)
    params = volume_params(tmp_path)
    params["inputs"]["image"]["spacing"] = [3.0, 1.0, 1.0]
    fp = fingerprint(parse_params(params), sample=4)
    assert fp.grids.given == fp.grids.target == (3.0, 1.0, 1.0) and len(fp.grids.shapes) == 4
    assert fp.masks.objects["tumour"] > 0
    key, value, why = propose(fp, 2**30, MASK)[0]
    assert (key, value) == ("inputs.*.spacing", [3.0, 1.0, 1.0]) and why.startswith("as params")


def test_plan_command_on_a_volume_params_file(scans, tmp_path):
    params = volume_params(scans)
    (tmp_path / "volumes.yaml").write_text(yaml.safe_dump(params))
    result = cli("plan", "--params", "volumes.yaml", "--sample", "4", "--budget-gb", "1", cwd=tmp_path)
    assert "target spacing [" in result.stdout and "tumour: foreground" in result.stdout
    assert "dvc exp run -S inputs.image.spacing=auto -S inputs.image.size=[" in result.stdout
    assert run_plan(parse_params(params), 4, 1).splitlines()[-1] in result.stdout  # the library says it too

    bad = tmp_path / "bad"
    shutil.copytree(scans, bad)
    (bad / "images" / "0000.nii.gz").write_bytes(b"not a scan")
    params["data"].update(csv=str(bad / "data.csv"), root=str(bad))
    (tmp_path / "volumes.yaml").write_text(yaml.safe_dump(params))
    failed = cli("plan", "--params", "volumes.yaml", "--sample", "4", "--budget-gb", "1", cwd=tmp_path, check=False)
    assert failed.returncode == 1 and failed.stdout == "" and len(failed.stderr.strip().splitlines()) == 1
    assert "row 2, column 'image'" in failed.stderr and "0000.nii.gz cannot be read as NIfTI" in failed.stderr

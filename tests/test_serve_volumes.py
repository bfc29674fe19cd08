"""cnn-factory serve on a volume model: NIfTI (and TIFF stack) uploads answered with NIfTI masks on
the scan's own grid, each mask's volume in mL, the files predict writes, SageMaker's raw bodies,
bad scans, and a page that says it takes NIfTI."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnn_factory.outputs import Writer, make_output
from cnn_factory.palette import class_colours
from cnn_factory.predict import predict_images
from cnn_factory.serve import create_app
from cnn_factory.volumes import read_label_volume, read_volume, spacing_affine, volume_bytes
from tests.conftest import MASKS


@pytest.fixture(scope="module")
def client(served_scans) -> TestClient:
    return TestClient(create_app(served_scans["model"], device="cpu"))


def png(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


def test_a_nifti_upload_gets_masks_on_its_grid_and_their_volume_in_ml(served_scans, client, tmp_path):
    path = served_scans["folder"] / "oblique.nii.gz"
    scan = read_volume(path, "test")
    answer = client.post("/predict", files={"image": (path.name, path.read_bytes(), "application/gzip")}).json()
    d, h, w = scan.shape
    assert answer["scan"] == {"depth": d, "height": h, "width": w, "spacing": pytest.approx(list(scan.spacing))}
    assert png(answer["picture"]).shape == (h, w)  # the middle slice the page draws the masks over
    voxel_ml = np.prod(scan.spacing) / 1000
    marked = []
    for name in MASKS:
        out = answer["outputs"][name]
        (tmp_path / f"{name}.nii.gz").write_bytes(base64.b64decode(out["mask"]))
        mask = read_label_volume(tmp_path / f"{name}.nii.gz", "answer")
        assert mask.shape == scan.shape and np.allclose(mask.affine, scan.affine, atol=1e-4)
        on = int(np.count_nonzero(mask.array))
        assert out["voxels"] == {"background": mask.array.size - on, "foreground": on}
        assert out["ml"]["foreground"] == pytest.approx(on * voxel_ml)
        assert out["ml"]["background"] == pytest.approx((mask.array.size - on) * voxel_ml)
        assert (png(out["slice"]) > 0).tolist() == (mask.array[d // 2] > 0).tolist()
        marked.append(0 < on < mask.array.size)
    assert all(marked)  # real counts, not empty or full masks
    assert answer["outputs"]["grade"]["label"] in ("low", "high")
    assert np.isfinite(answer["outputs"]["tumour_ml"]["value"])


def test_served_masks_are_the_files_predict_writes(served_scans, client, tmp_path):
    for path in [served_scans["folder"] / name for name in ("oblique.nii.gz", "oblique.nii", "stack.tif")]:
        out = tmp_path / path.name
        predict_images(str(served_scans["model"]), [str(path)], out, 1, "cpu", tta=False)
        stem = path.name.split(".")[0]
        answer = client.post("/predict", files={"image": path.read_bytes()}).json()  # no file name: read by content
        for name in MASKS:
            written = (out / name / f"{stem}.nii.gz").read_bytes()
            assert base64.b64decode(answer["outputs"][name]["mask"]) == written, (path.name, name)
        direct = client.post("/predict?output=tumour", files={"image": path.read_bytes()})
        assert direct.headers["content-type"] == "application/gzip"
        assert 'filename="tumour.nii.gz"' in direct.headers["content-disposition"]
        assert direct.content == (out / "tumour" / f"{stem}.nii.gz").read_bytes()


def test_infer_and_sagemakers_invocations_take_the_scans_bytes(served_scans, client):
    body = (served_scans["folder"] / "oblique.nii.gz").read_bytes()
    form = client.post("/predict", files={"image": body}).json()
    raw = {"Content-Type": "application/octet-stream"}
    first = client.post("/invocations", content=body, headers=raw)
    assert first.status_code == 200 and first.headers["content-type"] == "application/gzip"
    assert first.content == base64.b64decode(form["outputs"]["organ"]["mask"])  # the first mask
    answer = client.post("/invocations", content=body, headers={**raw, "Accept": "application/json"}).json()
    assert answer["outputs"]["organ"]["ml"] == form["outputs"]["organ"]["ml"]
    tiff = (served_scans["folder"] / "stack.tif").read_bytes()
    inferred = client.post("/infer?output=tumour", content=tiff, headers={"Content-Type": "image/tiff"})
    assert inferred.status_code == 200 and inferred.content[:2] == b"\x1f\x8b"  # a .nii.gz
    info = client.get("/info").json()
    assert info["inputs"]["image"]["spacing"] == [3.0, 1.0, 1.0] and info["inputs"]["image"]["mode"] == "patch"


@pytest.mark.parametrize(
    ("case", "status", "fragment"),
    [
        ("an image", 400, "is not a volume file; expected NIfTI (.nii, .nii.gz), a TIFF stack or a multi-frame DICOM"),
        ("a cut scan", 400, "ends early (a truncated gzip stream)"),
        ("a 2-D NIfTI", 400, "is a 2-D image"),
        ("an image's type", 415, "send the scan's bytes as application/octet-stream (NIfTI"),
    ],
)
def test_a_bad_scan_is_a_4xx_with_one_line_and_the_server_keeps_serving(served_scans, client, case, status, fragment):
    scan = (served_scans["folder"] / "oblique.nii.gz").read_bytes()
    picture = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(picture, format="PNG")
    flat = volume_bytes(np.zeros((1, 1, 8, 8), np.uint8)[0], np.eye(4))
    bodies = {"an image": picture.getvalue(), "a cut scan": scan[: len(scan) // 2], "a 2-D NIfTI": flat}
    if case == "an image's type":
        response = client.post("/infer", content=scan, headers={"Content-Type": "image/png"})
    else:
        response = client.post("/predict", files={"image": bodies[case]})
    assert response.status_code == status and fragment in response.json()["error"], response.json()
    assert "\n" not in response.json()["error"]
    assert client.post("/predict", files={"image": scan}).status_code == 200


def test_a_scan_over_the_voxel_limit_is_refused_from_its_header(served_scans):
    client = TestClient(create_app(served_scans["model"], device="cpu", max_pixels=1000))
    for name in ("oblique.nii.gz", "stack.tif"):
        response = client.post("/predict", files={"image": (served_scans["folder"] / name).read_bytes()})
        assert response.status_code == 413 and "voxels; this server takes at most 1000" in response.json()["error"]


def test_the_page_says_what_the_model_takes(client, served):
    page = client.get("/").text
    assert "Drop a scan here (NIfTI: .nii or .nii.gz; a TIFF stack; a multi-frame DICOM file)" in page
    assert 'accept=".nii,' in page
    image_page = TestClient(create_app(served["resize"], device="cpu")).get("/").text
    assert "Drop an image here" in image_page and "NIfTI" not in image_page and "{{" not in image_page
    assert json.dumps(client.get("/health").json()) == '{"status": "ok"}'


def test_a_class_masks_answer_for_a_scan_counts_each_class_in_ml(tmp_path):
    organs = Writer.of(
        make_output("organs", (4, 6, 8), type="segmentation", column="labels", labels={"liver": 1, "kidney": 2})
    )
    index = np.random.default_rng(0).integers(0, 3, (4, 6, 8))
    value = np.eye(3)[index].transpose(3, 0, 1, 2)  # (K + 1, D, H, W) probabilities, class `index` certain
    affine = spacing_affine((2.5, 0.8, 0.8), origin=(10.0, -4.0, 7.0))
    answer = organs.answer(value, (4, 6, 8), 0.5, affine)
    (tmp_path / "organs.nii.gz").write_bytes(base64.b64decode(answer["mask"]))
    mask = read_label_volume(tmp_path / "organs.nii.gz", "answer")
    assert np.array_equal(mask.array, index) and np.allclose(mask.affine, affine)
    counts = {c: int((index == k).sum()) for k, c in enumerate(("background", "liver", "kidney"))}
    assert answer["voxels"] == counts
    assert answer["ml"] == pytest.approx({c: n * 2.5 * 0.8 * 0.8 / 1000 for c, n in counts.items()})
    middle = Image.open(io.BytesIO(base64.b64decode(answer["slice"])))
    assert middle.mode == "P" and np.array_equal(np.asarray(middle), index[2])  # the index PNG, with its palette
    assert middle.getpalette()[:9] == class_colours(2).ravel()[:9].tolist()
    assert organs.prediction_file(value, (4, 6, 8), 0.5, affine) == base64.b64decode(answer["mask"])

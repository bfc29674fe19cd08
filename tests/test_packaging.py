"""The installable package: one top-level package, declared dependencies that the lock satisfies, a version."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

import cnn_factory

ROOT = Path(__file__).resolve().parents[1]


def lock() -> dict[str, str]:
    """requirements.txt: name -> exact version."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_every_declared_dependency_is_locked_at_a_version_it_allows():
    declared = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    pins = lock()
    for req in declared:
        assert req.name.lower() in pins, f"{req.name} is declared but not pinned in requirements.txt"
        assert req.specifier.contains(pins[req.name.lower()]), f"{req.name}=={pins[req.name.lower()]} not in {req}"
    imported = {
        "dvc",
        "dvclive",
        "kornia",
        "nibabel",
        "numpy",
        "onnx",
        "pillow",
        "pydantic",
        "pyyaml",
        "safetensors",
        "scikit-image",
        "tifffile",
        "timm",
        "torch",
        "tqdm",
    }
    assert imported <= {r.name.lower() for r in declared}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for req in map(Requirement, extras["serve"]):  # cnn-factory serve's, installed by make and the image
        assert req.specifier.contains(pins[req.name.lower()]), f"{req.name}=={pins[req.name.lower()]} not in {req}"


def test_wheel_installs_one_top_level_package(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ next to the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("cnn_factory-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"cnn_factory"}
    shipped = {"cnn_factory/outputs/segmentation.py", "cnn_factory/data/prepare.py", "cnn_factory/py.typed"}
    assert shipped | {"cnn_factory/static/index.html"} <= set(names)  # serve's page, package data
    assert f"Version: {cnn_factory.__version__}" in metadata
    assert re.search(r"^Requires-Dist: torch", metadata, re.M) and "License-Expression: Apache-2.0" in metadata
    assert "cnn-factory = cnn_factory.cli:main" in entry_points


def test_version_and_import_without_torch():
    code = "import sys, cnn_factory; print(cnn_factory.__version__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == [cnn_factory.__version__, "False"]
    result = subprocess.run([sys.executable, "-m", "cnn_factory", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"cnn-factory {cnn_factory.__version__}"

"""The Docker image, checked without Docker (no engine runs on the build machines): what the
Dockerfile names exists, and its entrypoint runs the original cnn-factory's command as the container would."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_repo, tiny_params


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def image_env() -> dict[str, str]:
    """The ENV the Dockerfile sets, as written."""
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", dockerfile(), re.M).group(1)
    return dict(re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")))


def container_env(out: Path, app: Path) -> dict[str, str]:
    """The image's ENV with its /out and /app at the test's folders: the entrypoint runs as in the container."""
    mapped = {
        k: str(out) + v[4:] if v.startswith("/out") else str(app) if v == "/app" else v for k, v in image_env().items()
    }
    return {**os.environ, **mapped, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_the_container_writes_only_under_out():
    """--read-only works when HOME, TMPDIR and every cache the tools write lie under /out."""
    env = image_env()
    for name in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "DVC_SITE_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "MPLCONFIGDIR"):
        assert env[name].startswith("/out/"), name
    assert env["CNN_FACTORY_WORKDIR"].startswith("/out/") and env["CNN_FACTORY_HOME"] == "/app"


def test_entrypoint_is_the_cnn_factory_command():
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile(), re.M).group(1))
    assert entrypoint == ["cnn-factory"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["cnn-factory"].split(":")
    assert function in Path(importlib.util.find_spec(module).origin).read_text()


def test_files_the_dockerfile_copies_exist_and_are_not_ignored():
    sources = [src for line in re.findall(r"^COPY (.+)$", dockerfile(), re.M) for src in line.split()[:-1]]
    assert sources == ["requirements.txt", "."]
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("requirements.txt", "pyproject.toml", "src", "stages", "dvc.yaml", "params.yaml", ".git"):
        assert (ROOT / needed).exists() and needed not in ignored, needed
    assert "/out" in re.search(r"CNN_FACTORY_WORKDIR=(\S+)", dockerfile()).group(1)


def pinned(requirements: str) -> list[str]:
    """The `name==version` lines of a requirements file, in order."""
    return [line.split()[0] for line in requirements.splitlines() if line[:1].isalnum()]


def test_the_image_installs_requirements_as_make_install_does(tmp_path):
    """The Dockerfile's pip step, run with a `python` that records its arguments: a line marked --no-deps
    (timm: its torchvision would replace the base's CUDA build) goes in without its dependencies."""
    step = next(r for r in re.findall(r"^RUN ((?:.*\\\n)*.*)$", dockerfile(), re.M) if "requirements.txt" in r)
    shutil.copy(ROOT / "requirements.txt", tmp_path)
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(
        f"#!{sys.executable}\nimport json, sys\nfrom pathlib import Path\n"
        "files = [Path(a).read_text() for a in sys.argv[1:] if a.endswith('.txt')]\n"
        "with open('calls.jsonl', 'a') as log: print(json.dumps([sys.argv[1:], files]), file=log)\n"
    )
    python.chmod(0o755)
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", step.replace("\\\n", " ")], cwd=tmp_path, env=env, check=True)
    (with_deps, files), (without_deps, _) = [json.loads(line) for line in (tmp_path / "calls.jsonl").open()]
    requirements = (ROOT / "requirements.txt").read_text()
    marked = [line.split()[0] for line in requirements.splitlines() if line[:1].isalnum() and "--no-deps" in line]
    assert any(name.startswith("timm==") for name in marked)
    assert "--no-deps" not in with_deps and pinned(files[0]) == [r for r in pinned(requirements) if r not in marked]
    assert without_deps[-len(marked) - 1 :] == ["--no-deps", *marked]
    assert not list(tmp_path.glob("requirements-*"))  # nothing left behind in /app


@pytest.mark.slow
def test_original_command_runs_as_in_the_container(tmp_path, example_dir):
    """/app: the image's repository; /data and /out: the mounts; the working directory is /out."""
    app = make_repo(tmp_path / "app", tiny_params())
    data, out = example_dir, tmp_path / "out"
    out.mkdir()
    env = container_env(out, app)
    before = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=app, capture_output=True, text=True)
    original = [
        "--modelname",
        "my-model",
        "--csv",
        str(data / "data.csv"),
        "--batch-size",
        "4",
        "--num-augs",
        "1",
        "--num-epochs",
        "1",
        "--output-path",
        str(out / "models"),
        "--shuffle-data",
        "--learning-rate",
        "0.0001",
    ]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cnn-factory"), *original], cwd=out, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "models" / "my-model.pt").is_file()
    assert "Running stage 'example'" not in result.stdout and not (out / "work" / "data" / "example").exists()
    assert "No file hash info found" not in result.stdout + result.stderr  # DVC's warning for a new model name
    assert any((out / ".cache" / "dvc").iterdir())  # DVC's site cache: under /out, not /var/tmp/dvc

    args_file = out / "train.args.json"  # the original cnn-factory's ARGS_FILE, on a second run in the same work folder
    args_file.write_text(
        json.dumps(
            [
                "--modelname",
                "from-args",
                "--csv",
                str(data / "data.csv"),
                "--num-epochs",
                "1",
                "--output-path",
                str(out / "models"),
            ]
        )
    )
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cnn-factory")],
        cwd=out,
        env={**env, "ARGS_FILE": str(args_file)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "models" / "from-args.pt").is_file()

    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=out / "work", env=env, capture_output=True, text=True)
    names = {
        rev["data"]["params"]["params.yaml"]["data"]["model"]["name"]
        for row in json.loads(shown.stdout)
        for exp in row.get("experiments") or []
        for rev in exp["revs"]
    }
    assert names == {"my-model", "from-args"}
    after = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=app, capture_output=True, text=True)
    assert after.stdout == before.stdout  # nothing written to the image's repository: only under /out

    serve_in_container(out, env)


def serve_in_container(out: Path, env: dict) -> None:
    """`serve` as `docker run -p 8000:8000 ... serve /out/models/my-model.pt` runs it (here on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).parent / "cnn-factory"), "serve", str(out / "models" / "my-model.pt")]
    server = subprocess.Popen([*command, "--port", str(port)], cwd=out, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=5) as response:
                    assert json.load(response)["model"]["file"] == "my-model.pt"
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "serve did not start in the container"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=20)

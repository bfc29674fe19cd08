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
import yaml

from cnn_factory.model import load_model
from tests.conftest import ROOT, SERVER_START_S, make_repo, run, tiny_params


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def image_env() -> dict[str, str]:
    """The ENV the Dockerfile sets, as written."""
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", dockerfile(), re.M).group(1)
    return dict(re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")))


def container_env(out: Path, app: Path, data: Path) -> dict[str, str]:
    """The image's ENV with its /out, /app and /data at the test's folders: the entrypoint runs as in the container."""
    mounts = {"/out": out, "/app": app, "/data": data}
    mapped = {
        k: next((str(mounts[m]) + v[len(m) :] for m in mounts if v.startswith(m)), v) for k, v in image_env().items()
    }
    return {**os.environ, **mapped, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def entrypoint(*args: str, out: Path, env: dict) -> subprocess.CompletedProcess:
    """`docker run ... cnn-factory ARGS`: the installed console script, in /out as the image's WORKDIR."""
    command = [str(Path(sys.executable).parent / "cnn-factory"), *args]
    return subprocess.run(command, cwd=out, env=env, capture_output=True, text=True)


def image_repo(path: Path) -> Path:
    """The image's /app: a repository whose params.yaml is written by hand, as the real one is (a comment,
    lists inline), so that a run rewriting it would show."""
    repo = make_repo(path, tiny_params())
    text = yaml.safe_dump(tiny_params(), sort_keys=False, default_flow_style=None)
    (repo / "params.yaml").write_text("# the image's settings\n" + text)
    run(["git", "commit", "-qam", "params.yaml as written by hand"], repo)
    return repo


def bare_image(path: Path) -> Path:
    """An /app enough for the commands that stop before DVC runs: dvc.yaml and params.yaml committed."""
    path.mkdir()
    shutil.copy(ROOT / "dvc.yaml", path / "dvc.yaml")
    (path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "image"]):
        run(["git", *command], path)
    return path


def test_the_container_writes_only_under_out():
    """--read-only works when HOME, TMPDIR and every cache the tools write lie under /out."""
    env = image_env()
    for name in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "DVC_SITE_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "MPLCONFIGDIR"):
        assert env[name].startswith("/out/"), name
    assert env["CNN_FACTORY_WORKDIR"].startswith("/out/") and env["CNN_FACTORY_HOME"] == "/app"


def test_entrypoint_is_the_cnn_factory_command():
    declared = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile(), re.M).group(1))
    assert declared == ["cnn-factory"]
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
    """/app: the image's repository; /data and /out: the mounts; the working directory is /out. Two runs
    in the same /out: the second (ARGS_FILE) leaves flags out and gets the image's values for them."""
    app = image_repo(tmp_path / "app")
    image_params = (app / "params.yaml").read_bytes()
    data, out = example_dir, tmp_path / "out"
    out.mkdir()
    env = container_env(out, app, data)
    before = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=app, capture_output=True, text=True)
    flags = "--modelname my-model --batch-size 4 --num-augs 1 --num-epochs 1 --shuffle-data --learning-rate 0.0001"
    original = [*flags.split(), "--csv", str(data / "data.csv"), "--output-path", str(out / "models")]
    result = entrypoint(*original, out=out, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_model(out / "models" / "my-model.pt")[1]["epoch"] == 1
    assert "Running stage 'example'" not in result.stdout and not (out / "work" / "data" / "example").exists()
    assert "No file hash info found" not in result.stdout + result.stderr  # DVC's warning for a new model name
    assert any((out / ".cache" / "dvc").iterdir())  # DVC's site cache: under /out, not /var/tmp/dvc
    assert (out / "work" / "params.yaml").read_bytes() == image_params  # not left as the run rewrote it

    # the original cnn-factory's ARGS_FILE; --outputs replaces the outputs (not merged into them, a trailing
    # comma as in its README), --loss-function sets each one's loss
    outputs = '{"shapes": {"type": "segmentation", "column": "labels", "label": [1, 2, 3], "size": [16, 16]},}'
    args_file = out / "train.args.json"
    fewer = ["--modelname", "from-args", "--csv", str(data / "data.csv"), "--num-epochs", "1"]
    args_file.write_text(
        json.dumps([*fewer, "--outputs", outputs, "--loss-function", "dice", "--output-path", str(out)])
    )
    result = entrypoint(out=out, env={**env, "ARGS_FILE": str(args_file)})  # no flags: `docker run -e ARGS_FILE=...`
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(load_model(out / "from-args.pt")[1]["outputs"]) == {"shapes"}

    runs = experiments(out / "work", env)
    assert set(runs) == {"my-model", "from-args"}
    first, second = (runs[name]["params"]["params.yaml"]["data"] for name in ("my-model", "from-args"))
    assert first["data"] == {**first["data"], "csv": str(data / "data.csv"), "root": str(data)}
    assert [first["train"][k] for k in ("batch_size", "num_augs", "epochs", "lr", "shuffle")] == [4, 1, 1, 0.0001, True]
    assert "dice" in runs["my-model"]["metrics"]["eval/metrics.json"]["data"]["round"]
    assert second["outputs"] == {
        "shapes": {"type": "segmentation", "column": "labels", "label": [1, 2, 3], "size": [16, 16], "loss": "dice"}
    }
    defaults = yaml.safe_load(image_params)["train"]
    for key in ("batch_size", "num_augs", "lr"):  # left out the second time: the image's, not the first run's
        assert second["train"][key] == defaults[key] != first["train"][key], key
    assert (out / "work" / "params.yaml").read_bytes() == image_params == (app / "params.yaml").read_bytes()
    after = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=app, capture_output=True, text=True)
    assert after.stdout == before.stdout  # nothing written to the image's repository: only under /out

    serve_in_container(out, env)


def test_commands_that_need_no_pipeline_make_no_clone(tmp_path, served):
    """--version, --help, a usage error, make-csv and predict run where they are: nothing made under /out."""
    app, out, data = bare_image(tmp_path / "app"), tmp_path / "out", tmp_path / "data"
    out.mkdir()
    env = container_env(out, app, data)
    assert entrypoint("--version", out=out, env=env).stdout.startswith("cnn-factory ")
    usage = entrypoint(out=out, env=env)
    assert usage.returncode == 2 and "required: COMMAND" in usage.stderr
    shown = " ".join(entrypoint("train", "--help", out=out, env=env).stdout.split())
    assert f"(sets train.lr; default: params.yaml's value = {tiny_params()['train']['lr']})" in shown  # the image's
    shutil.copytree(served["resize_images"], data / "images")
    shutil.copytree(served["resize_images"], data / "labels")
    made = entrypoint(
        "make-csv", str(data / "images"), str(data / "labels"), "--out", str(data / "pairs.csv"), out=out, env=env
    )
    assert made.returncode == 0 and (data / "pairs.csv").is_file(), made.stderr
    predicted = entrypoint(
        "predict", str(served["resize"]), str(data / "images" / "small.png"), "--out", str(data / "p"), out=out, env=env
    )
    assert predicted.returncode == 0 and (data / "p" / "predictions.csv").is_file(), predicted.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("out_is", ["a file", "a folder of another user"])
def test_an_out_the_user_cannot_write_is_one_line(tmp_path, out_is):
    """Docker makes a missing `-v ...:/out` folder owned by root: a user's run there cannot write."""
    if out_is == "a folder of another user" and os.getuid() == 0:
        pytest.skip("root writes in any folder: only a file in /out's place is unwritable to it")
    app, out = bare_image(tmp_path / "app"), tmp_path / "out"
    if out_is == "a file":
        out.write_text("")
    else:
        out.mkdir(mode=0o500)
    result = entrypoint("--modelname", "m", "--num-epochs", "1", out=tmp_path, env=container_env(out, app, tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: cannot write in {out} ({out}")
    assert "`mkdir -p output`, then `-v $(pwd)/output:" in line and "`-u $(id -u):$(id -g)`" in line


def test_a_csv_the_container_cannot_see_is_one_line(tmp_path):
    """The user's files reach the container through the /data mount; a CSV elsewhere is named with the fix."""
    app, out, data = bare_image(tmp_path / "app"), tmp_path / "out", tmp_path / "data"
    out.mkdir()
    env = container_env(out, app, data)
    (out / "data.csv").write_text("image,labels\n")

    def refused(csv: Path) -> str:
        result = entrypoint("--modelname", "m", "--csv", str(csv), out=out, env=env)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        return result.stderr.splitlines()[-1]  # the first run says once where it works: the clone

    mount = f"`-v $(pwd)/data:{data}`, then --csv {data}/<file>.csv"
    assert refused(data / "input.csv") == (
        f"error: --csv {data}/input.csv: not found, and nothing is mounted at {data}; mount your data there: {mount}"
    )
    data.mkdir()
    elsewhere = tmp_path / "input.csv"
    assert (
        refused(elsewhere)
        == f"error: --csv {elsewhere}: not found; the container sees your files under {data}: {mount}"
    )
    assert refused(data / "input.csv").endswith(
        f"not found in the folder mounted at {data}; check the file's name there"
    )
    (out / "data.csv").write_text("image,labels\n")  # in /out, which holds the work folder
    assert refused(out / "data.csv").startswith(f"error: data.root would be '{out}', the repository root or a folder")
    assert (out / "work" / "params.yaml").read_bytes() == (app / "params.yaml").read_bytes()


def experiments(work: Path, env: dict) -> dict[str, dict]:
    """Each experiment's params and metrics as DVC recorded them, by model name."""
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=work, env=env, capture_output=True, text=True)
    runs = [
        rev["data"] for row in json.loads(shown.stdout) for exp in row.get("experiments") or [] for rev in exp["revs"]
    ]
    return {run["params"]["params.yaml"]["data"]["model"]["name"]: run for run in runs}


def serve_in_container(out: Path, env: dict) -> None:
    """`serve` as `docker run -p 8000:8000 ... serve /out/models/my-model.pt` runs it (here on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).parent / "cnn-factory"), "serve", str(out / "models" / "my-model.pt")]
    server = subprocess.Popen([*command, "--port", str(port)], cwd=out, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + SERVER_START_S
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

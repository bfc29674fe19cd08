"""The stage wrapper: one line and exit 1 for a user's mistake or a full disk, tracebacks for bugs."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from cnn_factory.errors import UserError, resource_error, run_stage


def _exit_code(main) -> int:
    with pytest.raises(SystemExit) as exc:
        run_stage(main)
    return exc.value.code


def test_user_error_is_one_line_and_exit_1(capsys):
    def main():
        raise UserError("data.csv: row 3, column 'image': file not found")

    assert _exit_code(main) == 1
    assert capsys.readouterr().err == "error: data.csv: row 3, column 'image': file not found\n"


def test_full_disk_says_what_to_do(capsys):
    def main():
        raise OSError(errno.ENOSPC, "No space left on device", "data/prepared/train/image.npy")

    assert _exit_code(main) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no space left on the disk while writing data/prepared/train/image.npy")
    assert "dvc gc" in err


def test_out_of_gpu_memory_names_the_params_to_change():
    class OutOfMemoryError(RuntimeError):  # the name torch.OutOfMemoryError has
        pass

    message = str(resource_error(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")))
    assert "train.batch_size" in message and "train.accumulate" in message


def test_bugs_keep_their_traceback():
    def main():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_stage(main)


def test_debug_flag_shows_the_traceback_of_a_user_error():
    code = (
        "import sys; from cnn_factory.errors import UserError, run_stage\n"
        "def main(): raise UserError('bad')\n"
        "run_stage(main)"
    )
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    loud = subprocess.run([sys.executable, "-c", code, "--debug"], capture_output=True, text=True)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert loud.returncode != 0 and "Traceback" in loud.stderr

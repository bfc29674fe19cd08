"""benchmarks/run.py: a tiny run end to end, so that the benchmark cannot rot. No timing is asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import QUICK, table

pytestmark = pytest.mark.slow  # end to end through real processes; `pytest -m "not slow"` skips it

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    "training efficiency, num_augs 0",
    "training efficiency, num_augs 4",
    "training efficiency, num_augs 0, val_every 5",
    "loader vs decoding every access",
    "prepare 40 rows of 32px, 1 worker",
    "prepare 40 rows of 32px, 2 workers",
    "prepare speed-up, 2 workers over 1",
    "prepare after adding 4 rows, over first run",
    "dvc status, 44 rows, up to date",
    "dvc repro prepare after adding 4 rows",
    "peak RSS of training, 10x rows over 1x",
    "peak RSS, 1x rows (24)",
    "its training loop alone, num_augs 0",
    "evaluate (prepared arrays)",
    "predict (PNG files, masks written)",
]


def test_quick_benchmark_prints_and_writes_every_row(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    assert results["quick"] is True and results["environment"]["cores"] >= 1
    rows = {row["what"]: row for row in results["table"]}
    assert set(ROWS) <= set(rows)
    assert rows == {row["what"]: row for row in table(results)}  # the table is the one the results give
    for row in results["table"]:
        assert f"| {row['what']} |" in result.stdout
    # not timings: every measurement ran, and facts the benchmark relies on hold
    identical = rows.pop("arrays of 2 workers byte-identical to 1 worker's")
    assert identical["value"] == "yes"
    for row in rows.values():
        assert not isinstance(row["value"], str) and math.isfinite(row["value"]) and row["value"] >= 0, row
    assert results["prepare"]["incremental_decoded"] == QUICK["added"]
    assert results["training"]["train_augs0"]["epochs"] == 2


def test_the_saved_epoch_benchmark_reads_each_rule_off_the_curves_as_training_picks(tmp_path):
    from benchmarks.large import rule_epochs

    curves = {  # 6 validated epochs: the mask improves to the end, the count dips by luck at epoch 3
        "loss": [3.0, 2.0, 1.0, 1.6, 1.5, 1.4],
        "cells/loss": [1.0, 0.6, 0.5, 0.45, 0.42, 0.41],
        "cells/dice": [0.5, 0.8, 0.9, 0.9, 0.905, 0.91],
        "density/loss": [0.7, 0.5, 0.4, 0.4, 0.4, 0.4],
        "count/loss": [2.0, 1.5, 0.1, 1.2, 1.1, 1.0],
    }
    folder = tmp_path / "dvclive" / "plots" / "metrics" / "val"
    for name, values in curves.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{step}\t{value}\n" for step, value in enumerate(values))
        (folder / f"{name}.tsv").write_text(f"step\t{name.split('/')[-1]}\n{rows}")
    epochs = rule_epochs(tmp_path, ("cells", "density", "count"), smoothing=0.9)
    assert epochs["val/loss"] == 3 and epochs["val/cells/dice"] == 6
    assert epochs["relative_loss, losses"] == 3 and epochs["relative_loss, mask by dice"] == 3
    assert epochs["relative_loss, mask by dice, moving average"] == 6

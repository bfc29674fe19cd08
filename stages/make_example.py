"""Stage `example`: generates the built-in example data set, deterministically.

    python -m stages.make_example [--out data/example]

Reads params.yaml `example` (rows, size, seed); writes images/, labels/ and data.csv
(see cnn_factory/data/example.py for what the images show). A `size` of three numbers
[depth, height, width] writes scans instead (cnn_factory/data/volumes_example.py), NIfTI files or,
with `example.format: dicom`, DICOM series.
"""

from cnn_factory import runtime

if __name__ == "__main__":  # this process is the stage: tuned before the imports below (cnn_factory/runtime.py)
    runtime.before_stage_imports()

import argparse
from pathlib import Path

from cnn_factory.config import load_params
from cnn_factory.data.example import make_example
from cnn_factory.data.volumes_example import make_volume_example
from cnn_factory.errors import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/example", help="folder to write (default: %(default)s)")
    args = parser.parse_args()
    ex = load_params().example
    if len(ex.size) == 3:
        d, h, w = ex.size
        make_volume_example(Path(args.out), ex.rows, (d, h, w), ex.seed, ex.format)
        print(f"example: wrote {ex.rows} scans ({ex.format}) to {args.out}")
        return
    h, w = ex.size
    make_example(Path(args.out), ex.rows, (h, w), ex.seed)
    print(f"example: wrote {ex.rows} images to {args.out}")


if __name__ == "__main__":
    run_stage(main)

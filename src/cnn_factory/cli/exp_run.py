"""`dvc exp run` as `cnn-factory train` runs it: DVC's own command line, less one misleading warning.

    python -m cnn_factory.cli.exp_run exp run -S model.name=m ...   # = dvc exp run -S model.name=m ...

Before it reproduces, `dvc exp run` checks out the baseline's outputs, with the new params
already applied. An output the run is about to create (`models/<name>.pt` for a new
`--modelname`, everything in a fresh clone) has no hash yet, and DVC warned on every run:
`WARNING: No file hash info found for '.../models/<name>.pt'. It won't be created.` The run
creates it a minute later, so here that warning is dropped; every other message stays.
"""

from __future__ import annotations

import logging
import sys

MISSING_HASH = "No file hash info found for"


def main() -> None:
    logging.getLogger("dvc_data.index.checkout").addFilter(
        lambda record: not record.getMessage().startswith(MISSING_HASH)
    )
    from dvc.cli import main as dvc_main

    sys.exit(dvc_main(sys.argv[1:]))


if __name__ == "__main__":
    main()

"""The `cnn-factory` command: `main` parses the subcommands (main.py); train flags in train.py."""

from cnn_factory.cli.main import main

__all__ = ["main"]

"""`python -m cnn_factory ...` is the `cnn-factory` command."""

from cnn_factory.cli import main

main()

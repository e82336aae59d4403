"""The `keras-vae` command line, kept under its old name: see `keras_vae_cli`, which holds the
parser (importing nothing heavy) and dispatches to each command's handler module."""

import sys

from keras_vae_cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

"""The `keras-vae` command line (also `python -m keras_vae`).

Each feature module contributes its subcommands through an `add_commands(subparsers)`
function; this module only assembles them, so commands live next to the code they run.
"""

import argparse
import importlib
import os
import sys

# Modules that define `add_commands(subparsers)`, in the order their commands are listed.
COMMAND_MODULES = ("keras_vae.training", "keras_vae.training.tabular", "keras_vae.exporting",
                   "keras_vae.zoo")


def build_parser():
    """The `keras-vae` argument parser, with the subcommands of every COMMAND_MODULES entry."""
    parser = argparse.ArgumentParser(
        prog="keras-vae",
        description="Train, evaluate, sample from and export variational autoencoders.")
    from keras_vae import __version__
    parser.add_argument("--version", action="version", version=f"keras-vae {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv=None):
    """Entry point of `keras-vae` / `python -m keras_vae`.

    Args:
        argv: the arguments (default: sys.argv[1:]).

    Returns:
        The exit status: 0 on success, 1 when a command fails, 2 for bad arguments or input
        (printed as one line, "keras-vae COMMAND: error: ...", without a traceback).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"keras-vae {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

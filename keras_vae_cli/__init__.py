"""The `keras-vae` command line (also `python -m keras_vae` and `python -m keras_vae_cli`).

This package holds the argument parser of every command and nothing heavy: `keras-vae --help`
and `keras-vae COMMAND --help` import neither TensorFlow nor Keras nor `keras_vae`. Each
command names its handler as a "module:function" string (e.g.
"keras_vae.training.cli:run_train"), imported only when the command runs.

    keras_vae_cli/training.py   train, evaluate, sample, reconstruct -> keras_vae/training/cli.py
    keras_vae_cli/exporting.py  export                              -> keras_vae/exporting/cli.py
    keras_vae_cli/zoo.py        zoo list|info|download|build       -> keras_vae/zoo/cli.py

Quiet by default: TensorFlow's C++ log lines (absl/gRPC, "I0000 ...", cuInit failures on
machines without a GPU, CPU feature notes) are turned off before TensorFlow loads; the ones
TensorFlow prints while it starts, before its logging settings apply, are filtered out of
stderr for that moment (everything else on stderr is kept). `keras-vae --verbose ...` or
KERAS_VAE_VERBOSE=1 shows them all.
"""

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import re
import sys
import tempfile

from keras_vae_cli import exporting, training, zoo

#: The groups of commands, in the order `keras-vae --help` lists them.
GROUPS = (training, exporting, zoo)
VERBOSE_ENV = "KERAS_VAE_VERBOSE"
#: Environment that silences TensorFlow's C++ logging (set unless already set).
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2",
             "ABSL_MIN_LOG_LEVEL": "2"}
# C++ log lines of TensorFlow/XLA/absl: "I0000 00:00:1700000000.123 123 file.cc:12] ...".
_CPP_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|WARNING: All log "
                           r"messages before absl::InitializeLog\(\) is called|To enable the "
                           r"following instructions: .* rebuild TensorFlow)")


def version():
    """keras_vae's version, read from keras_vae/version.py without importing keras_vae."""
    spec = importlib.util.find_spec("keras_vae")
    path = os.path.join(spec.submodule_search_locations[0], "version.py")
    namespace = {}
    with open(path) as handle:
        exec(handle.read(), namespace)
    return namespace["__version__"]


def build_parser():
    """The `keras-vae` argument parser, with the subcommands of every group in GROUPS."""
    parser = argparse.ArgumentParser(
        prog="keras-vae",
        description="Train, evaluate, sample from and export variational autoencoders.")
    parser.add_argument("--version", action="version", version=f"keras-vae {version()}")
    parser.add_argument("--verbose", action="store_true",
                        help=f"show TensorFlow's C++ log lines (also {VERBOSE_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(subparsers)
    return parser


def resolve(handler):
    """The function a "module:function" string names (callables are returned as they are)."""
    if callable(handler):
        return handler
    module, _, name = handler.partition(":")
    return getattr(importlib.import_module(module), name)


def verbose_requested(args=None):
    return bool(getattr(args, "verbose", False)) or \
        os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def quiet_environment():
    """Sets QUIET_ENV (values the caller set win)."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


def configured_backend():
    """The Keras backend Keras will pick, found without importing Keras: KERAS_BACKEND, else
    "backend" in KERAS_HOME/keras.json (default ~/.keras/keras.json), else "tensorflow"."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as handle:
            return str(json.load(handle).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


@contextlib.contextmanager
def without_cpp_log_lines():
    """Runs the block with the process's stderr (file descriptor 2, which C++ code writes to)
    redirected to a temporary file, then writes back everything it got except C++ log lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(True)
                    if not _CPP_LOG_LINE.match(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def start_tensorflow_quietly():
    """Imports TensorFlow and lets it look for accelerators `without_cpp_log_lines`: it writes
    those lines from C++ (through absl, before its own log settings apply), which no Python
    setting reaches. Does nothing when TensorFlow is not installed or already imported."""
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    with without_cpp_log_lines():
        import tensorflow as tf

        tf.config.list_physical_devices()  # where the cuInit failure is logged


def quiet_start(verbose=False):
    """Unless `verbose` (or KERAS_VAE_VERBOSE=1): QUIET_ENV, then TensorFlow started without
    its C++ log lines (`start_tensorflow_quietly`)."""
    if verbose or verbose_requested():
        return
    quiet_environment()
    start_tensorflow_quietly()


def main(argv=None):
    """Entry point of `keras-vae`.

    Args:
        argv: the arguments (default: sys.argv[1:]).

    Returns:
        The exit status: 0 on success, 1 when a command fails, 2 for bad arguments or input
        (printed as one line, "keras-vae COMMAND: error: ...", without a traceback).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    quiet_start(verbose_requested(args))
    try:
        return resolve(args.func)(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"keras-vae {args.command}: error: {err}", file=sys.stderr)
        return 2

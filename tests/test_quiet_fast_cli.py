"""`keras-vae` builds its parser without TensorFlow, Keras or keras_vae (so --help is fast),
its copied choices equal the ones the package uses, and a training run prints no C++/absl log
lines nor tf.data's partial-cache warning."""

import json
import re

import pytest
from conftest import run_python, subprocess_env

HEAVY = ("tensorflow", "keras", "keras_vae", "jax", "torch")
# What a TensorFlow start used to print on a machine without a GPU, and tf.data's warning.
NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog|cuInit|cpu_feature_guard|"
                   r"cudart_stub|did not fully read the dataset being cached", re.M)

PROBE = """
import json, sys
from keras_vae_cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["export", "--help"], ["zoo", "build", "--help"],
                                  ["--version"]])
def test_help_imports_no_tensorflow_keras_or_keras_vae(argv):
    got = run_python("-c", PROBE.format(argv=argv, heavy=HEAVY), timeout=120)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stderr.strip().splitlines()[-1]) == []
    assert "usage: keras-vae" in got.stdout or got.stdout.startswith("keras-vae ")


def test_parser_choices_equal_the_packages_own():
    from keras_vae import datasets, distribute, likelihoods, model
    from keras_vae.detector import SCORES
    from keras_vae.training import tabular
    from keras_vae.exporting import formats
    from keras_vae.training import recipe
    from keras_vae.zoo import downloader
    from keras_vae_cli import constants as c

    assert c.MODELS == recipe.MODELS and c.DEFAULT_HIDDEN == recipe.DEFAULT_HIDDEN
    assert c.OBJECTIVES == model.OBJECTIVES
    assert c.DATASET_NAMES == datasets.known_names() and c.SPLITS == datasets.SPLITS
    assert c.BINARIZE == datasets.BINARIZE
    assert c.STRATEGIES == distribute.STRATEGIES
    assert c.MIXED_PRECISION == distribute.MIXED_PRECISION_POLICIES
    assert c.FORMATS == formats.FORMATS and c.DEFAULT_FORMATS == formats.DEFAULT_FORMATS
    assert (c.URL_ENV, c.OFFLINE_ENV) == (downloader.URL_ENV, downloader.OFFLINE_ENV)
    assert c.TABLE_LIKELIHOODS == likelihoods.TWO_PARAMETER and c.DETECTOR_SCORES == SCORES
    assert c.DEFAULT_CONTAMINATION == tabular.DEFAULT_CONTAMINATION


def test_every_handler_a_command_names_exists():
    import argparse

    from keras_vae_cli import build_parser, resolve

    handlers = []

    def walk(parser):
        for action in parser._actions:  # argparse keeps its subparsers only here
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    handlers.append(sub.get_default("func"))
                    walk(sub)

    walk(build_parser())
    named = [h for h in handlers if isinstance(h, str)]
    assert len(named) == 12  # train evaluate sample reconstruct score export; zoo list info
    # download build push export
    assert all(callable(resolve(h)) for h in named)


def test_cpp_log_lines_are_filtered_and_everything_else_is_kept():
    code = ("import os, sys\nfrom keras_vae_cli import without_cpp_log_lines\n"
            "with without_cpp_log_lines():\n"
            "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called "
            "are written to STDERR\\n')\n"
            "    os.write(2, b'I0000 00:00:1796180018.766978   27929 cudart_stub.cc:31] no GPU\\n')\n"
            "    os.write(2, b'a real warning\\n')\n"
            "    print('from python', file=sys.stderr)\n"
            "print('after', file=sys.stderr)\n")
    got = run_python("-c", code, timeout=60)
    assert got.returncode == 0
    assert got.stderr == "a real warning\nfrom python\nafter\n"


def test_importing_the_package_in_a_script_prints_nothing(tmp_path, monkeypatch):
    """`import keras_vae` with no TensorFlow log setting in the environment: TensorFlow (the
    backend Keras picks here) is loaded, and stderr holds no C++ log line, nor anything else;
    other backends do not load TensorFlow at all."""
    env = subprocess_env(TF_CPP_MIN_LOG_LEVEL=None, KERAS_VAE_VERBOSE=None, KERAS_BACKEND=None,
                         KERAS_HOME=str(tmp_path))
    probe = "import sys, keras_vae, keras; print(keras.backend.backend(), 'tensorflow' in sys.modules)"
    got = run_python("-c", probe, env=env, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout.split() == ["tensorflow", "True"]
    assert got.stderr == ""
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    got = run_python("-c", probe, env=env, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout.split() == ["jax", "False"]
    # the backend is found as Keras finds it: the variable, then keras.json, then TensorFlow
    from keras_vae_cli import configured_backend
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert configured_backend() == "torch"
    monkeypatch.delenv("KERAS_BACKEND")
    (tmp_path / "keras.json").write_text("{not json")
    assert configured_backend() == "tensorflow"


@pytest.mark.large
def test_two_epoch_training_prints_no_cpp_log_lines(tmp_path):
    """`python -m keras_vae train` and `keras-vae evaluate` (console-script path), with no
    TensorFlow log setting in the environment."""
    env = subprocess_env(TF_CPP_MIN_LOG_LEVEL=None, KERAS_VAE_VERBOSE=None)
    run_dir = tmp_path / "run"
    got = run_python("-m", "keras_vae", "train", "--epochs", "2", "--hidden-units", "32",
                     "--run-dir", run_dir, env=env, timeout=600)
    assert got.returncode == 0, got.stderr[-3000:]
    assert "test -ELBO" in got.stdout
    assert NOISE.findall(got.stderr) == [], got.stderr[-3000:]
    got = run_python("-m", "keras_vae_cli", "evaluate", run_dir, env=env, timeout=600)
    assert got.returncode == 0, got.stderr[-3000:]
    assert NOISE.findall(got.stderr) == [], got.stderr[-3000:]


CACHE_PROBE = """
import gc, sys
import tensorflow as tf
from keras_vae import datasets
def read_one_batch(ds):
    it = iter(ds)
    next(it)
    del it
    gc.collect()
ds = (datasets.load("digits", "train", cache=False).cache().batch(10) if sys.argv[1] == "control"
      else datasets.load("digits", "train", batch_size=10))
graph = tf.raw_ops.DatasetToGraphV2(input_dataset=ds._variant_tensor).numpy()
read_one_batch(ds)
print(sum(1 for _ in ds), b"CacheDataset" in graph)
"""


def test_a_partly_read_split_discards_no_cache_and_warns_nothing():
    """Keras reads one batch of a fresh iterator to build a model under a strategy; a
    `.cache()`d in-memory split then warned "did not fully read the dataset being cached"
    (when TensorFlow gets to log it: not on every run) and could give back fewer batches
    afterwards. The split is prepared once instead: its pipeline holds no cache op (a plain
    `.cache()`, the control, does), it gives back every batch after a partial read and nothing
    warns."""
    env = subprocess_env(TF_CPP_MIN_LOG_LEVEL="0")
    ours = run_python("-c", CACHE_PROBE, "ours", env=env, timeout=300)
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert ours.stdout.split() == ["144", "False"]  # 1437 examples in batches of 10
    assert "did not fully read the dataset being cached" not in ours.stderr
    control = run_python("-c", CACHE_PROBE, "control", env=env, timeout=300)
    assert control.returncode == 0, control.stderr[-3000:]
    assert control.stdout.split()[1] == "True"

"""Fixtures and helpers shared by the tests: the digits data (thresholded, and the package's
named splits), a tiny VAE, and the environment of a `keras-vae` subprocess."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_VAE_FAST", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def binary_digits():
    """scikit-learn's bundled 8x8 digits, thresholded at half intensity: (train, test) of shape
    (1500, 64) and (297, 64), float32 in {0, 1}, in a fixed shuffled order."""
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0 > 0.5).astype("float32")
    x = x[np.random.default_rng(0).permutation(len(x))]
    return x[:1500], x[1500:]


@pytest.fixture(scope="session")
def digits_splits():
    """The package's `digits` splits binarized at 0.5, as `zoo build` trains and measures on
    them: (train, valid, test) of shape (1437, 64), (180, 64), (180, 64)."""
    from keras_vae.datasets.splits import load_splits

    return load_splits("digits")


def tiny_vae(input_dim=64, latent_dim=2, hidden_units=16, seed=0, **kwargs):
    """A small Kingma-Welling VAE (fresh weights) for tests that need any trained-able model."""
    import keras_vae as kv

    return kv.VAE.kingma_welling(input_dim=input_dim, latent_dim=latent_dim,
                                 hidden_units=hidden_units, seed=seed, **kwargs)


def subprocess_env(**changes):
    """The environment of a `keras-vae` subprocess: this checkout first on PYTHONPATH, quiet
    TensorFlow unless `changes` say otherwise (a value of None removes a variable)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_python(*args, timeout=300, env=None, cwd=None):
    """`python *args` in a subprocess with `subprocess_env()` (or `env`)."""
    return subprocess.run([sys.executable, *map(str, args)], env=env or subprocess_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)

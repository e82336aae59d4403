"""The model zoo: pretrained VAEs, their measured quality, and a verified download path.

    import keras_vae as kv
    kv.zoo.list()                                  # one dict per model: name, test NLL, size...
    vae = kv.zoo.load("kw_mnist_z20")              # or kv.VAE.from_pretrained("kw_mnist_z20")
    vae.sample(16, seed=0)

Command line: `keras-vae zoo list | info NAME | download [NAME ...] | build NAME --data PATH`.

Where the weights come from
    Each model is a `.weights.h5` file (weights only, no optimizer state) plus constructor
    arguments kept here in `REGISTRY`, so the architecture is code and the file is data.
    The file is fetched from `<base URL>/<file>` with `keras.utils.get_file(...,
    file_hash=<sha256>)` into the Keras cache, `$KERAS_HOME/models/keras_vae/` (default
    `~/.keras/models/keras_vae/`), under a name that contains the hash, so a second load reads
    the cache and needs no network. The base URL is

    - `DEFAULT_BASE_URL`: the repository's `weights/` folder at the release tag of this
      version, `https://github.com/keras-vae/keras-vae/raw/v{version}/weights/`;
    - overridden by `$KERAS_VAE_WEIGHTS_URL` or `load(..., base_url=...)`: any http(s) URL of a
      mirror, a `file://` URL, or a local folder (e.g. the `weights/` folder of a checkout).

    Offline: `KERAS_VAE_OFFLINE=1` (or `offline=True`) never touches the network: a cached,
    verified file is used, a local folder or `file://` base is still read, and anything else
    fails at once with a message that says how to get the file.

Integrity
    `get_file` downloads straight to its target name and, when the hash of a fresh download
    does not match, raises but leaves the bad file in the cache. Here every download goes to a
    unique temporary `*.part-*` name, is checked against the registry's sha256, and only then
    is renamed (atomically) to its cache name; on any failure (HTTP error, truncation, wrong
    hash, Ctrl-C) the temporary file is removed, and the error (`DownloadError` or
    `IntegrityError`) names the model, the URL and the expected sha256. A cached file that
    fails its hash (e.g. written by an older tool and cut short) is deleted and fetched again.

Reproducing a model
    `keras-vae zoo build NAME --data PATH` trains the registry's recipe with a fixed seed and
    deterministic ops, early-stops on the validation split, measures the test -ELBO and the
    importance-weighted test NLL (`keras_vae.evaluation`), writes `weights/NAME.weights.h5`
    and prints the registry entry (sha256, size, epochs, wall time, the numbers).

Data sets
    - "binarized_mnist": the statically binarized MNIST of Larochelle & Murray (an .npz with
      uint8 0/1 arrays train/valid/test of shape (N, 784): 50k/10k/10k).
    - "digits": scikit-learn's bundled 8x8 digits (1797 images), x = load_digits().data / 16
      binarized at 0.5 (x > 0.5); split by index i: test if i % 10 == 0 (180), valid if
      i % 10 == 5 (180), train otherwise (1437). See `load_data`.
"""

import builtins
import contextlib
import difflib
import glob
import io
import json
import math
import os
import pprint
import sys
import time
import urllib.error
import urllib.parse
import uuid
from pathlib import Path

import numpy as np

from keras_vae import __version__
from keras_vae.exporting import file_sha256

__all__ = [
    "REGISTRY",
    "DEFAULT_BASE_URL",
    "DownloadError",
    "IntegrityError",
    "list",
    "info",
    "load",
    "download",
    "load_data",
    "build",
]

DEFAULT_BASE_URL = "https://github.com/keras-vae/keras-vae/raw/v{version}/weights/"
URL_ENV = "KERAS_VAE_WEIGHTS_URL"
OFFLINE_ENV = "KERAS_VAE_OFFLINE"
CACHE_SUBDIR = os.path.join("models", "keras_vae")
MAX_FILE_BYTES = 5 * 2 ** 20
DATASETS = ("binarized_mnist", "digits")
ARCHITECTURES = ("kingma_welling", "mlp", "conv", "pixel_cnn")
# Constructor arguments a user may change at load time: they do not change the weights.
LOAD_OVERRIDES = ("num_samples", "seed", "beta", "name")

WEIGHTS_LICENSE = "Apache-2.0"
DATA_LICENSES = {
    "binarized_mnist": "CC BY-SA 3.0 (MNIST; binarized by Larochelle & Murray)",
    "digits": "CC BY 4.0 (UCI handwritten digits, bundled with scikit-learn)",
}


class DownloadError(FileNotFoundError):
    """A weight file could not be fetched (HTTP error, no connection, offline and not cached)."""


class IntegrityError(ValueError):
    """A fetched or cached weight file does not have the registry's sha256 (or was cut short)."""


# --------------------------------------------------------------------------------- registry
# Each entry: the recipe (`architecture` + `config` for the VAE constructor, `dataset`, `train`
# hyperparameters) that `build` trains, and what the build measured and wrote. Entries with
# "sha256": None have a recipe but no released weights yet.
REGISTRY = {}


def _recipe(name, description, architecture, config, dataset, train):
    REGISTRY[name] = {
        "description": description,
        "architecture": architecture,
        "config": config,
        "dataset": dataset,
        "train": train,
        "file": f"{name}.weights.h5",
        "license": WEIGHTS_LICENSE,
        "data_license": DATA_LICENSES[dataset],
        "sha256": None,
    }


_DIGITS_TRAIN = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 50,
                 "max_epochs": 400, "patience": 30, "seed": 0,
                 "neg_elbo_samples": 1000, "nll_samples": 5000}
# Binarized MNIST: Adam 1e-3 halved whenever the validation -ELBO stalls for 5 epochs, early
# stopping after 20; ~2.5 s per Kingma-Welling epoch on 2 idle CPU cores. The NLL is measured
# on the whole test split (k=5000: 6.6-7.2 minutes for the MLPs).
_MNIST_TRAIN = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 100,
                "max_epochs": 300, "patience": 20, "reduce_lr_patience": 5,
                "reduce_lr_factor": 0.5, "min_learning_rate": 1e-5, "seed": 0,
                "neg_elbo_samples": 10, "nll_samples": 5000}

_recipe("kw_digits_z2", "Kingma-Welling MLP (64-200-2, tanh, Bernoulli) on binarized digits",
        "kingma_welling", {"input_dim": 64, "latent_dim": 2, "hidden_units": 200},
        "digits", _DIGITS_TRAIN)
_recipe("mlp_digits_z8", "Deeper MLP (64-256-128-8, relu, Bernoulli) on binarized digits",
        "mlp", {"input_shape": [64], "latent_dim": 8, "hidden_units": [256, 128],
                "activation": "relu"},
        "digits", _DIGITS_TRAIN)
_recipe("conv_digits_z4", "Convolutional VAE (8x8x1, conv 16-32, dense 64, 4 latents) on "
        "binarized digits", "conv",
        {"input_shape": [8, 8, 1], "latent_dim": 4, "filters": [16, 32], "dense_units": 64},
        "digits", _DIGITS_TRAIN)
_recipe("kw_mnist_z2", "Kingma-Welling MLP (784-500-2, tanh, Bernoulli) on binarized MNIST",
        "kingma_welling", {"input_dim": 784, "latent_dim": 2, "hidden_units": 500},
        "binarized_mnist", _MNIST_TRAIN)
_recipe("kw_mnist_z20", "Kingma-Welling MLP (784-500-20, tanh, Bernoulli) on binarized MNIST",
        "kingma_welling", {"input_dim": 784, "latent_dim": 20, "hidden_units": 500},
        "binarized_mnist", _MNIST_TRAIN)
_recipe("mlp_mnist_z20", "Deeper MLP (784-512-256-20, relu, Bernoulli) on binarized MNIST",
        "mlp", {"input_shape": [784], "latent_dim": 20, "hidden_units": [512, 256],
                "activation": "relu"},
        "binarized_mnist", _MNIST_TRAIN)
_recipe("conv_mnist_z16", "Convolutional VAE (28x28x1, conv 16-32, dense 128, 16 latents) on "
        "binarized MNIST", "conv",
        {"input_shape": [28, 28, 1], "latent_dim": 16, "filters": [16, 32], "dense_units": 128},
        "binarized_mnist", {**_MNIST_TRAIN, "neg_elbo_samples": 2})
# The one-stochastic-layer MLP of the IWAE paper (Burda et al. 2015), trained on its
# importance-weighted bound with k = 50 and Polyak-averaged weights (early stopping and the
# schedule watch the validation bound). 0.85 s per epoch on one H200 (JAX backend); 42 s on 2
# idle CPU cores (TensorFlow; mlp_mnist_z20: 3.6 s), so ~3.5 hours for its 300 epochs there.
_recipe("iwae_mnist_z50", "IWAE-paper MLP (784-200-200-50, tanh, Bernoulli), trained on the "
        "importance-weighted bound (k=50), on binarized MNIST", "mlp",
        {"input_shape": [784], "latent_dim": 50, "hidden_units": [200, 200],
         "activation": "tanh", "objective": "iwae", "num_samples": 50},
        "binarized_mnist", {**_MNIST_TRAIN, "ema_momentum": 0.999})

# A small PixelVAE: the conv encoder and an autoregressive decoder (networks.PixelCNNDecoder)
# whose logits see the pixels before each one; trained on the ELBO with the KL weight ramped
# up over 10 epochs: without it the decoder ignored z (KL 0.1-0.2 nats after 2 epochs).
# ~85 s per epoch on 2 CPU cores (JAX backend).
_recipe("pixelcnn_mnist_z32", "PixelVAE (conv encoder 32-64, dense 128, 32 latents; PixelCNN "
        "decoder, 32 filters, 4 masked layers) on binarized MNIST", "pixel_cnn",
        {"input_shape": [28, 28, 1], "latent_dim": 32},
        "binarized_mnist", {**_MNIST_TRAIN, "kl_warmup_epochs": 10})

# Released weights: what `keras-vae zoo build` measured and wrote (pasted from its output).
_RELEASED = {
    "kw_digits_z2": {
        "sha256": "5f1863b443fbcf3c891942af993538300e32e6b1f3ff2b5dc10ae293fd4e0737",
        "size_bytes": 143016,
        "parameters": 27268,
        "training": {
            "command": "keras-vae zoo build kw_digits_z2",
            "epochs": 335,
            "best_epoch": 305,
            "stopped_by": "early_stopping",
            "max_epochs": 400,
            "patience": 30,
            "train_wall_time_s": 56.3,
            "eval_wall_time_s": 5.3,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 19.979,
            "test_neg_elbo_stderr": 0.291,
            "test_reconstruction": 17.018,
            "test_kl": 2.961,
            "neg_elbo_samples": 1000,
            "valid_neg_elbo": 20.53,
            "test_examples": 180,
            "test_nll": 19.477,
            "test_nll_stderr": 0.271,
            "nll_samples": 5000,
            "nll_examples": 180
        }
    },
    "mlp_digits_z8": {
        "sha256": "32b4af269416a06142ea8291c88828901815cb8cb108c438888ff08d23a651cd",
        "size_bytes": 447472,
        "parameters": 102224,
        "training": {
            "command": "keras-vae zoo build mlp_digits_z8",
            "epochs": 130,
            "best_epoch": 100,
            "stopped_by": "early_stopping",
            "max_epochs": 400,
            "patience": 30,
            "train_wall_time_s": 40.4,
            "eval_wall_time_s": 20.6,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 17.837,
            "test_neg_elbo_stderr": 0.289,
            "test_reconstruction": 11.572,
            "test_kl": 6.265,
            "neg_elbo_samples": 1000,
            "valid_neg_elbo": 18.418,
            "test_examples": 180,
            "test_nll": 16.654,
            "test_nll_stderr": 0.273,
            "nll_samples": 5000,
            "nll_examples": 180
        }
    },
    "conv_digits_z4": {
        "sha256": "2b29c76bb4913c2c73d8d6d64f5aa79358ddd69af26e4bb17afb1286df9e6e26",
        "size_bytes": 195208,
        "parameters": 36233,
        "training": {
            "command": "keras-vae zoo build conv_digits_z4",
            "epochs": 162,
            "best_epoch": 132,
            "stopped_by": "early_stopping",
            "max_epochs": 400,
            "patience": 30,
            "train_wall_time_s": 151.0,
            "eval_wall_time_s": 295.7,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 17.784,
            "test_neg_elbo_stderr": 0.293,
            "test_reconstruction": 12.531,
            "test_kl": 5.253,
            "neg_elbo_samples": 1000,
            "valid_neg_elbo": 18.721,
            "test_examples": 180,
            "test_nll": 16.95,
            "test_nll_stderr": 0.279,
            "nll_samples": 5000,
            "nll_examples": 180
        }
    },
    "kw_mnist_z2": {
        "sha256": "1d9f8e91971a26159699034844a293082fefa1bc4005289ab92c093dafcaaace",
        "size_bytes": 3187672,
        "parameters": 788788,
        "training": {
            "command": "keras-vae zoo build kw_mnist_z2 --data /work/shared/datasets/binarized_mnist.npz",
            "epochs": 121,
            "best_epoch": 101,
            "stopped_by": "early_stopping",
            "max_epochs": 300,
            "patience": 20,
            "final_learning_rate": 9.999999747378752e-06,
            "train_wall_time_s": 245.5,
            "eval_wall_time_s": 200.9,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 150.282,
            "test_neg_elbo_stderr": 0.522,
            "test_reconstruction": 143.863,
            "test_kl": 6.418,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 151.088,
            "test_examples": 10000,
            "test_nll": 145.752,
            "test_nll_stderr": 0.492,
            "nll_samples": 5000,
            "nll_examples": 10000
        }
    },
    "kw_mnist_z20": {
        "sha256": "3842f381e6efadc0c6be372320b674ecd56b692e8739fa0e76237631f7584e55",
        "size_bytes": 3297720,
        "parameters": 815824,
        "training": {
            "command": "keras-vae zoo build kw_mnist_z20 --data /work/shared/datasets/binarized_mnist.npz",
            "epochs": 131,
            "best_epoch": 111,
            "stopped_by": "early_stopping",
            "max_epochs": 300,
            "patience": 20,
            "train_wall_time_s": 308.3,
            "eval_wall_time_s": 393.6,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 97.939,
            "test_neg_elbo_stderr": 0.254,
            "test_reconstruction": 70.185,
            "test_kl": 27.754,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 98.885,
            "test_examples": 10000,
            "test_nll": 92.579,
            "test_nll_stderr": 0.239,
            "nll_samples": 5000,
            "nll_examples": 10000
        }
    },
    "mlp_mnist_z20": {
        "sha256": "11c89eb44baff2d295bcfba3273ccc2fbe0a326c0e40375c60f337302ea485db",
        "size_bytes": 4370488,
        "parameters": 1082680,
        "training": {
            "command": "keras-vae zoo build mlp_mnist_z20 --data /work/shared/datasets/binarized_mnist.npz",
            "epochs": 114,
            "best_epoch": 94,
            "stopped_by": "early_stopping",
            "max_epochs": 300,
            "patience": 20,
            "train_wall_time_s": 381.1,
            "eval_wall_time_s": 431.2,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 96.063,
            "test_neg_elbo_stderr": 0.268,
            "test_reconstruction": 71.128,
            "test_kl": 24.934,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 96.72,
            "test_examples": 10000,
            "test_nll": 90.151,
            "test_nll_stderr": 0.247,
            "nll_samples": 5000,
            "nll_examples": 10000
        }
    },
    "conv_mnist_z16": {
        "sha256": "756e949d2ee17be53af6710916aa13f098db9cedaf93f1fd06f73e0ab37d9d7a",
        "size_bytes": 1764104,
        "parameters": 428225,
        "training": {
            "command": "keras-vae zoo build conv_mnist_z16 --data /work/shared/datasets/binarized_mnist.npz --time-limit 1500.0 --nll-examples 1000",
            "epochs": 174,
            "best_epoch": 154,
            "stopped_by": "early_stopping",
            "max_epochs": 300,
            "patience": 20,
            "final_learning_rate": 9.999999747378752e-06,
            "train_wall_time_s": 1363.7,
            "eval_wall_time_s": 836.4,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 95.606,
            "test_neg_elbo_stderr": 0.274,
            "test_reconstruction": 72.755,
            "test_kl": 22.852,
            "neg_elbo_samples": 2,
            "valid_neg_elbo": 96.388,
            "test_examples": 10000,
            "nll_examples_neg_elbo": 95.721,
            "test_nll": 90.094,
            "test_nll_stderr": 0.798,
            "nll_samples": 5000,
            "nll_examples": 1000
        }
    },
    "iwae_mnist_z50": {
        "sha256": "89c8eec5a465cf8c5c93f9ae655b95ae54dae723269f6b2054fb274c366410ac",
        "size_bytes": 1739504,
        "parameters": 425284,
        "training": {
            "command": "keras-vae zoo build iwae_mnist_z50 --data binarized_mnist.npz --time-limit 270.0",
            "note": "built by benchmarks/zoo_candidates.py (its run 2, as candidate mlp_mnist_z50_iwae_tanh: the same recipe) beside one other candidate on the same GPU; the time limit did not bind",
            "epochs": 300,
            "best_epoch": 298,
            "stopped_by": "max_epochs",
            "max_epochs": 300,
            "patience": 20,
            "final_learning_rate": 9.999999747378752e-06,
            "train_wall_time_s": 256.3,
            "eval_wall_time_s": 17.6,
            "software": "keras 3.15.1, jax backend, keras-vae 0.1.0",
            "hardware": "NVIDIA H200, jax backend"
        },
        "results": {
            "test_neg_elbo": 100.216,
            "test_neg_elbo_stderr": 0.262,
            "test_reconstruction": 79.088,
            "test_kl": 21.128,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 100.993,
            "test_examples": 10000,
            "test_nll": 87.537,
            "test_nll_stderr": 0.233,
            "nll_samples": 5000,
            "nll_examples": 10000
        }
    },
    "pixelcnn_mnist_z32": {
        "sha256": "fba3c065268104521b83dae6741be973d83300ee2891096d9bad3cef1d929679",
        "size_bytes": 4385328,
        "parameters": 1072081,
        "training": {
            "command": "keras-vae zoo build pixelcnn_mnist_z32 --data /work/shared/datasets/binarized_mnist.npz --time-limit 3600.0 --nll-examples 1000",
            "note": "run with KERAS_BACKEND=jax on 2 CPU cores (tests and a CI run shared them during parts of the build); the time limit bound",
            "epochs": 44,
            "best_epoch": 44,
            "stopped_by": "time_limit",
            "max_epochs": 300,
            "patience": 20,
            "final_learning_rate": 0.0010000000474974513,
            "train_wall_time_s": 3669.8,
            "eval_wall_time_s": 1425.5,
            "software": "keras 3.15.1, jax backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 84.052,
            "test_neg_elbo_stderr": 0.204,
            "test_reconstruction": 75.13,
            "test_kl": 8.921,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 84.467,
            "test_examples": 10000,
            "nll_examples_neg_elbo": 83.993,
            "test_nll": 82.416,
            "test_nll_stderr": 0.634,
            "nll_samples": 5000,
            "nll_examples": 1000
        }
    }
}

for _name, _measured in _RELEASED.items():
    REGISTRY[_name].update(_measured)


# --------------------------------------------------------------------------------- lookup
def _entry(name, released=True):
    if not isinstance(name, str) or name not in REGISTRY:
        close = difflib.get_close_matches(str(name), REGISTRY, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown zoo model {name!r}.{hint} Available: "
                         f"{', '.join(released_names()) or '(none released yet)'} "
                         "(see `keras-vae zoo list`).")
    entry = REGISTRY[name]
    if released and not entry.get("sha256"):
        raise ValueError(f"Zoo model {name!r} has a recipe but no released weights yet; build "
                         f"them with `keras-vae zoo build {name} --data PATH`.")
    return entry


def released_names():
    """Names of the models that have released weights, in registry order."""
    return [name for name, entry in REGISTRY.items() if entry.get("sha256")]


def list(include_unreleased=False):  # noqa: A001 - the API the issue asks for: zoo.list()
    """The zoo's models and their measured quality, one dict per model.

    Args:
        include_unreleased: also list recipes whose weights are not built yet (their measured
            fields are None).

    Returns:
        A Python list of dicts with keys "name", "description", "architecture", "dataset",
        "latent_dim", "parameters" (trainable weights), "test_nll" and "test_neg_elbo" (nats
        per test example), "nll_samples" (k of the importance-weighted NLL), "epochs",
        "size_bytes" (of the weight file), "license" (of the weights) and "data_license".
    """
    rows = []
    for name, entry in REGISTRY.items():
        if not entry.get("sha256") and not include_unreleased:
            continue
        results = entry.get("results", {})
        rows.append({
            "name": name,
            "description": entry["description"],
            "architecture": entry["architecture"],
            "dataset": entry["dataset"],
            "latent_dim": entry["config"]["latent_dim"],
            "parameters": entry.get("parameters"),
            "test_nll": results.get("test_nll"),
            "test_neg_elbo": results.get("test_neg_elbo"),
            "nll_samples": results.get("nll_samples"),
            "epochs": entry.get("training", {}).get("epochs"),
            "size_bytes": entry.get("size_bytes"),
            "license": entry.get("license"),
            "data_license": entry.get("data_license"),
        })
    return rows


def info(name):
    """The full registry entry of a model (a deep copy), plus where its file is and would come
    from.

    Returns:
        dict: the registry entry with "name", "url" (where `load` would fetch it now),
        "cache_path" (its place in the Keras cache) and "cached" (bool: present and verified).
    """
    entry = json.loads(json.dumps(_entry(name)))
    path = _cache_path(entry, None)
    entry.update({"name": name, "url": _url(entry, None), "cache_path": path,
                  "cached": os.path.exists(path) and file_sha256(path) == entry["sha256"]})
    return entry


# --------------------------------------------------------------------------------- download
def _offline(offline):
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _base_url(base_url):
    """The base URL from the argument, $KERAS_VAE_WEIGHTS_URL or the default, as a URL ending
    in '/'; local folders become file:// URLs."""
    base = base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL.format(version=__version__)
    base = str(base)
    scheme = urllib.parse.urlsplit(base).scheme
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter: a local folder
        folder = Path(base).expanduser().resolve()
        if not folder.is_dir():
            raise DownloadError(f"The weights base {base!r} (from "
                                f"{'base_url' if base_url else URL_ENV}) is neither a URL nor "
                                "an existing folder.")
        base = folder.as_uri()
    return base if base.endswith("/") else base + "/"


def _url(entry, base_url):
    return urllib.parse.urljoin(_base_url(base_url), entry["file"])


def _cache_dir(cache_dir):
    """The cache root get_file will use: cache_dir, else $KERAS_HOME (read now), else
    ~/.keras; like get_file, /tmp/.keras when that is not writable."""
    if cache_dir is None:
        cache_dir = os.environ.get("KERAS_HOME") or os.path.join(
            os.path.expanduser("~"), ".keras")
    cache_dir = os.path.expanduser(str(cache_dir))
    os.makedirs(cache_dir, exist_ok=True)
    if not os.access(cache_dir, os.W_OK):
        cache_dir = os.path.join("/tmp", ".keras")
    return cache_dir


def _cache_name(entry):
    stem = entry["file"][: -len(".weights.h5")]
    return f"{stem}-{entry['sha256'][:12]}.weights.h5"


def _cache_path(entry, cache_dir):
    return os.path.join(_cache_dir(cache_dir), CACHE_SUBDIR, _cache_name(entry))


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _remove_stale_parts(target, max_age_s=3600.0):
    """Deletes temporary files of earlier downloads of `target` that were killed (SIGKILL,
    power loss) and are older than `max_age_s`; running downloads are younger."""
    now = time.time()
    for part in glob.glob(glob.escape(target) + ".part-*"):
        try:
            if now - os.path.getmtime(part) > max_age_s:
                os.remove(part)
        except OSError:
            pass


def _root_cause(err):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (urllib.error.ContentTooShortError, urllib.error.HTTPError)):
            return err
        err = err.__cause__ or err.__context__
    return None


def download(name, base_url=None, offline=None, cache_dir=None, verbose=True):
    """Makes sure the verified weight file of a zoo model is in the Keras cache.

    Args:
        name: a zoo model name (see `list()`).
        base_url: where the files are: an http(s) URL, a `file://` URL or a local folder.
            None: `$KERAS_VAE_WEIGHTS_URL`, else `DEFAULT_BASE_URL` at this version's tag.
        offline: True never uses the network (local and `file://` sources still work); None
            reads `$KERAS_VAE_OFFLINE` (1/true/yes turn it on).
        cache_dir: the cache root; None: `$KERAS_HOME`, else `~/.keras`. Files go to
            `<cache_dir>/models/keras_vae/<name>-<sha256[:12]>.weights.h5`.
        verbose: print where the file comes from and a progress bar while downloading.

    Returns:
        str: path of the verified weight file in the cache.

    Raises:
        ValueError: unknown model, or no released weights.
        DownloadError: (a FileNotFoundError) the file is not cached and cannot be fetched:
            offline mode, HTTP error such as 404, no connection.
        IntegrityError: (a ValueError) the fetched file's sha256 differs from the registry's,
            or the download was cut short. Nothing is left in the cache.
    """
    import keras

    entry = _entry(name)
    expected = entry["sha256"]
    target = _cache_path(entry, cache_dir)
    if os.path.exists(target):
        if file_sha256(target) == expected:
            return target
        if verbose:
            print(f"keras-vae: the cached {target} does not have the expected sha256 "
                  f"{expected}; deleting it and fetching {name!r} again.", file=sys.stderr)
        _remove(target)
    url = _url(entry, base_url)
    local = urllib.parse.urlsplit(url).scheme == "file"
    if _offline(offline) and not local:
        raise DownloadError(
            f"Zoo model {name!r} is not in the cache ({target}) and offline mode is on "
            f"({OFFLINE_ENV}=1 or offline=True), so it is not downloaded from {url}. Run "
            f"`keras-vae zoo download {name}` once with network access, point {URL_ENV} at a "
            "local folder holding the weight files, or turn offline mode off.")

    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_parts(target)
    part_name = f"{os.path.basename(target)}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    part = os.path.join(folder, part_name)
    what = f"zoo model {name!r} from {url}"
    try:
        if verbose:
            print(f"keras-vae: fetching {what} (sha256 {expected}).", file=sys.stderr)
        try:
            # get_file prints a progress bar and checks the hash; it raises ValueError on a
            # mismatch (leaving the file: removed below) and a bare Exception on URL errors.
            # Its messages and progress bar go to stdout: send them to stderr (or nowhere), so
            # stdout keeps only results (`keras-vae zoo download` prints paths there).
            with contextlib.redirect_stdout(sys.stderr if verbose else io.StringIO()):
                got = keras.utils.get_file(fname=part_name, origin=url, file_hash=expected,
                                           hash_algorithm="sha256",
                                           cache_dir=_cache_dir(cache_dir),
                                           cache_subdir=CACHE_SUBDIR)
        except ValueError as err:
            actual = file_sha256(part) if os.path.exists(part) else "(no file)"
            size = os.path.getsize(part) if os.path.exists(part) else 0
            raise IntegrityError(
                f"The weight file of {what} is corrupt or incomplete: its sha256 is {actual} "
                f"({size} bytes) but the registry expects {expected} ({entry['size_bytes']} "
                "bytes). Nothing was kept in the cache; try again, or check the mirror set by "
                f"{URL_ENV}.") from err
        except Exception as err:  # get_file wraps URL errors in a plain Exception
            cause = _root_cause(err)
            if isinstance(cause, urllib.error.ContentTooShortError):
                raise IntegrityError(
                    f"The download of {what} was cut short ({cause.reason}); expected sha256 "
                    f"{expected} ({entry['size_bytes']} bytes). Nothing was kept in the "
                    "cache; try again.") from err
            if isinstance(cause, urllib.error.HTTPError):
                detail = f"HTTP {cause.code} {cause.reason}"
            else:
                detail = str(err)
            raise DownloadError(
                f"Could not fetch {what}: {detail}. Check the network, or set {URL_ENV} to a "
                "mirror or to a local folder with the weight files (expected sha256 "
                f"{expected}).") from err
        os.replace(got, target)
    finally:
        _remove(part)
    return target


# --------------------------------------------------------------------------------- load
def _construct(entry, **overrides):
    from keras_vae.model import VAE

    architecture = entry["architecture"]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r} in the registry; expected one "
                         f"of {ARCHITECTURES}.")
    config = dict(entry["config"])
    for key in ("input_shape", "hidden_units", "filters"):
        if isinstance(config.get(key), builtins.list):
            config[key] = tuple(config[key])
    return getattr(VAE, architecture)(**config, **overrides)


def _parameters(vae):
    return int(sum(math.prod(w.shape) for w in vae.trainable_weights))


def load(name, base_url=None, offline=None, cache_dir=None, compile=True, verbose=True,
         **overrides):
    """A pretrained VAE from the zoo, with its verified weights (downloaded once, then cached).

    Args:
        name: a model name from `list()`, e.g. "kw_mnist_z20".
        base_url, offline, cache_dir, verbose: where the weight file comes from; see
            `download`.
        compile: compile with the recipe's optimizer (Adam), so `evaluate` and fine-tuning with
            `fit` work at once.
        **overrides: constructor arguments that do not change the weights: num_samples, seed,
            beta, name.

    Returns:
        `keras_vae.VAE` with the registry's architecture and released weights. Its input shape
        is the registry's `config` (e.g. (784,) for MLPs, (28, 28, 1) for conv models), data in
        [0, 1].

    Raises:
        ValueError, DownloadError, IntegrityError: see `download`; ValueError also for an
        override outside the allowed ones.
    """
    entry = _entry(name)
    bad = sorted(set(overrides) - set(LOAD_OVERRIDES))
    if bad:
        raise ValueError(f"load({name!r}) cannot change {', '.join(bad)}: the weights fix the "
                         f"architecture. Allowed overrides: {', '.join(LOAD_OVERRIDES)}.")
    path = download(name, base_url=base_url, offline=offline, cache_dir=cache_dir,
                    verbose=verbose)
    overrides.setdefault("name", name)
    vae = _construct(entry, **overrides)
    try:
        vae.load_weights(path)
    except Exception as err:
        raise ValueError(f"The weight file {path} of zoo model {name!r} does not fit the "
                         f"registry's architecture {entry['architecture']} {entry['config']}: "
                         f"{err}") from err
    if compile:
        import keras

        vae.compile(optimizer=keras.optimizers.Adam(entry["train"]["learning_rate"]))
    return vae


# --------------------------------------------------------------------------------- data
def load_data(dataset, data=None):
    """The train/valid/test splits a zoo recipe uses, as float32 arrays in {0, 1}.

    Args:
        dataset: "binarized_mnist" or "digits".
        data: binarized_mnist: path of the .npz (arrays train/valid/test, uint8 0/1, (N, 784)).
            digits: None or "digits" (scikit-learn's bundled copy is used).

    Returns:
        (train, valid, test): binarized_mnist (50000, 784), (10000, 784), (10000, 784);
        digits (1437, 64), (180, 64), (180, 64): load_digits().data / 16 > 0.5, split by index
        i (test: i % 10 == 0, valid: i % 10 == 5, train: the rest), order kept.
    """
    if dataset == "digits":
        if data not in (None, "digits"):
            raise ValueError(f"The digits recipes use scikit-learn's bundled digits; got "
                             f"--data {data!r}. Leave --data out (or pass 'digits').")
        from sklearn.datasets import load_digits

        x = (load_digits().data / 16.0 > 0.5).astype("float32")
        index = np.arange(len(x)) % 10
        return x[(index != 0) & (index != 5)], x[index == 5], x[index == 0]
    if dataset == "binarized_mnist":
        if data is None:
            raise ValueError("binarized_mnist needs --data PATH: an .npz with uint8 0/1 arrays "
                             "'train', 'valid', 'test' of shape (N, 784).")
        path = Path(data).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No binarized MNIST file at {path}: expected an .npz with "
                                    "arrays 'train', 'valid', 'test' of shape (N, 784).")
        with np.load(path) as npz:
            missing = [k for k in ("train", "valid", "test") if k not in npz.files]
            if missing:
                raise ValueError(f"{path} lacks the arrays {missing} (it has {npz.files}); "
                                 "expected train/valid/test.")
            splits = [np.asarray(npz[k]) for k in ("train", "valid", "test")]
        for key, arr in zip(("train", "valid", "test"), splits):
            if arr.ndim != 2 or arr.shape[1] != 784:
                raise ValueError(f"{path}: '{key}' has shape {arr.shape}, expected (N, 784).")
            if not np.isin(arr, (0, 1)).all():
                raise ValueError(f"{path}: '{key}' is not binary (values other than 0 and 1); "
                                 "the zoo recipes use statically binarized MNIST.")
        return tuple(arr.astype("float32") for arr in splits)
    raise ValueError(f"Unknown dataset {dataset!r}: expected one of {DATASETS}.")


# --------------------------------------------------------------------------------- build
def _time_limit_callback(seconds):
    """A Keras callback that stops training at the end of the epoch in which `seconds` of
    training ran out (None: never); its `hit` says whether it did."""
    import keras

    class TimeLimit(keras.callbacks.Callback):
        hit = False

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if seconds and time.perf_counter() - self.start > seconds:
                self.hit = True
                self.model.stop_training = True

    return TimeLimit()


def hardware():
    """The accelerator Keras computes on (its name), or the CPU's core count."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.device_kind}, jax backend"
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"CPU, {os.cpu_count()} cores"


def _nll_subset(num_test, nll_examples):
    """Indices of the test examples the NLL is measured on: all of them, or `nll_examples`
    evenly spaced ones (every (num_test // n)-th, starting with the first), so the subset is
    spread over the whole test split like the full one (MNIST's first 1000 test images alone
    are about 10 nats harder than the rest)."""
    if nll_examples is None or int(nll_examples) >= num_test:
        return np.arange(num_test)
    n = int(nll_examples)
    if n < 1:
        raise ValueError(f"--nll-examples must be >= 1, got {nll_examples!r}.")
    return np.arange(0, num_test, num_test // n)[:n]


def build(name, data=None, out="weights", overwrite=False, max_epochs=None, patience=None,
          time_limit=None, nll_samples=None, nll_examples=None, verbose="auto"):
    """Trains a zoo recipe reproducibly, measures it, writes its weight file.

    Seeds everything with the recipe's seed and turns on TensorFlow's deterministic ops for the
    build (restoring the process's setting afterwards), so the same command on the same software
    and hardware writes the same file. Training minimizes the VAE's objective (-ELBO, or the
    IWAE bound for a config with objective "iwae" or "iwae_dreg") with Adam, lowers the
    learning rate when the monitored validation number stalls if the recipe says so (keys
    reduce_lr_patience, reduce_lr_factor, min_learning_rate; the entry records the final rate)
    and stops early on it (restoring the best epoch's weights). That number is
    `model.monitored_metric` of the model's objective: "val_neg_elbo", or "val_loss" (the
    validation bound) for IWAE recipes. With `kl_warmup_epochs` the KL weight ramps from 0 to 1
    over those epochs (`KLWarmup`) and early stopping watches only the epochs after. With
    `ema_momentum` Adam keeps a moving average of the
    weights (Polyak averaging), which is what is validated, restored and saved. The test
    numbers use `keras_vae.evaluation` (ELBO with several posterior samples per example,
    importance-weighted NLL with k samples); the entry records the software and hardware.

    Args:
        name: a registry name (released or not).
        data: the data set file (binarized_mnist .npz); None for digits.
        out: folder for `<name>.weights.h5`.
        overwrite: replace an existing weight file (otherwise FileExistsError).
        max_epochs, patience: override the recipe's limits (recorded in the entry).
        time_limit: seconds of training after which it stops at the end of the epoch.
        nll_samples: k for the test NLL (default the recipe's, 5000; 0 skips the NLL).
        nll_examples: measure the NLL on n evenly spaced test examples only (every
            (N // n)-th; recorded, with the -ELBO of the same examples).
        verbose: 0, 1 (progress bars), 2 (a line per epoch) or "auto" (1 on a terminal).

    Returns:
        dict: the registry entry (recipe and measured fields: sha256, size_bytes, parameters,
        training, results), JSON-serializable.
    """
    with _deterministic_ops():
        return _build(name, data=data, out=out, overwrite=overwrite, max_epochs=max_epochs,
                      patience=patience, time_limit=time_limit, nll_samples=nll_samples,
                      nll_examples=nll_examples, verbose=verbose)


@contextlib.contextmanager
def _deterministic_ops():
    """TensorFlow's deterministic ops for the block (so a build writes the same bits twice),
    then the setting the process had before: left on, it would also turn off XLA and force
    deterministic kernels in whatever the caller trains next."""
    import keras

    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    was_on = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_config.disable_op_determinism()


def _build(name, data, out, overwrite, max_epochs, patience, time_limit, nll_samples,
           nll_examples, verbose):
    """`build` under deterministic ops (see there)."""
    import keras

    entry = _entry(name, released=False)
    recipe = dict(entry["train"])
    if max_epochs is not None:
        recipe["max_epochs"] = int(max_epochs)
    if patience is not None:
        recipe["patience"] = int(patience)
    if nll_samples is not None:
        recipe["nll_samples"] = int(nll_samples)
    if nll_examples is not None:
        recipe["nll_examples"] = int(nll_examples)
    if recipe.get("nll_examples") is not None and recipe["nll_examples"] < 1:
        raise ValueError(f"--nll-examples must be >= 1, got {recipe['nll_examples']}.")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    target = Path(out) / entry["file"]
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it.")

    train, valid, test = load_data(entry["dataset"], data)
    from keras_vae import evaluation  # imported here: only build needs it
    shape = tuple(entry["config"].get("input_shape", [entry["config"].get("input_dim")]))
    train, valid, test = (x.reshape((-1,) + shape) for x in (train, valid, test))

    keras.utils.set_random_seed(recipe["seed"])
    vae = _construct(entry, seed=recipe["seed"], name=name)
    ema = recipe.get("ema_momentum")
    vae.compile(optimizer=keras.optimizers.Adam(recipe["learning_rate"], use_ema=bool(ema),
                                                ema_momentum=ema or 0.99))
    from keras_vae.model import monitored_metric

    monitor = monitored_metric(vae.objective)
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, mode="min",
                                            patience=recipe["patience"],
                                            restore_best_weights=True,
                                            start_from_epoch=recipe.get("kl_warmup_epochs", 0))
    limit = _time_limit_callback(time_limit)
    callbacks = [stopper, limit]
    if ema:
        # Polyak averaging: validate on the moving average of the weights, and keep it as the
        # model at each epoch's end so early stopping stores and restores averaged weights.
        # It must come before the stopper, whose on_epoch_end reads the weights.
        callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if recipe.get("kl_warmup_epochs"):
        # beta ramps from 0 to 1: a decoder that can model x alone (autoregressive) otherwise
        # learns to ignore z in the first epochs (the KL stays ~0, "posterior collapse").
        from keras_vae.training import KLWarmup

        callbacks.append(KLWarmup(recipe["kl_warmup_epochs"]))
    if recipe.get("reduce_lr_patience"):
        # Lower the learning rate when the validation -ELBO stalls. On kw_mnist_z20 this gave
        # a test -ELBO of 97.9 instead of 100.0 (same recipe otherwise; early stopping after
        # 131 vs 113 epochs).
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode="min", factor=recipe.get("reduce_lr_factor", 0.5),
            patience=recipe["reduce_lr_patience"],
            min_lr=recipe.get("min_learning_rate", 1e-5)))
    start = time.perf_counter()
    history = vae.fit(train, epochs=recipe["max_epochs"], batch_size=recipe["batch_size"],
                      validation_data=valid, callbacks=callbacks, verbose=verbose,
                      shuffle=True)
    train_seconds = time.perf_counter() - start
    epochs = len(history.history["val_neg_elbo"])
    # EarlyStopping(restore_best_weights=True) restores the best epoch's weights at the end of
    # training however it ended (early stop, max_epochs or the time limit).
    # (none yet when training ended within the KL warm-up, which early stopping skips: the
    # last epoch's weights are kept)
    best_epoch = int(stopper.best_epoch) + 1 if stopper.best_weights is not None else epochs
    if stopper.stopped_epoch:
        stopped_by = "early_stopping"
    elif limit.hit:
        stopped_by = "time_limit"
    else:
        stopped_by = "max_epochs"

    start = time.perf_counter()
    parts = evaluation.elbo(vae, test, num_samples=recipe["neg_elbo_samples"], seed=0, verbose=0)
    val_parts = evaluation.elbo(vae, valid, num_samples=recipe["neg_elbo_samples"], seed=0,
                                verbose=0)
    results = {
        "test_neg_elbo": round(float(-parts.elbo.mean()), 3),
        "test_neg_elbo_stderr": round(float(parts.elbo.std() / math.sqrt(len(test))), 3),
        "test_reconstruction": round(float(parts.reconstruction.mean()), 3),
        "test_kl": round(float(parts.kl.mean()), 3),
        "neg_elbo_samples": recipe["neg_elbo_samples"],
        "valid_neg_elbo": round(float(-val_parts.elbo.mean()), 3),
        "test_examples": int(len(test)),
    }
    k = recipe["nll_samples"]
    if k:
        subset = _nll_subset(len(test), recipe.get("nll_examples"))
        x_nll = test[subset]
        log_px = evaluation.log_likelihood(vae, x_nll, num_samples=k, seed=0,
                                           verbose=1 if verbose else 0)
        if len(x_nll) < len(test):  # -ELBO on the same examples, comparable with the NLL
            results["nll_examples_neg_elbo"] = round(float(-parts.elbo[subset].mean()), 3)
        results.update({
            "test_nll": round(float(-log_px.mean()), 3),
            "test_nll_stderr": round(float(log_px.std() / math.sqrt(len(x_nll))), 3),
            "nll_samples": k,
            "nll_examples": int(len(x_nll)),
        })
    else:
        results.update({"test_nll": None, "nll_samples": 0})
    eval_seconds = time.perf_counter() - start

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name[: -len(".weights.h5")] + ".tmp.weights.h5")
    # save_weights of a compiled model also writes the optimizer's state (~2x the weights):
    # copy the weights into a fresh, uncompiled model and save that.
    release = _construct(entry, name=name)
    release.set_weights(vae.get_weights())
    release.save_weights(str(tmp))
    os.replace(tmp, target)
    size = target.stat().st_size
    if size > MAX_FILE_BYTES:
        print(f"keras-vae: warning: {target} is {size / 2 ** 20:.2f} MiB, over the zoo's "
              f"{MAX_FILE_BYTES / 2 ** 20:.0f} MiB limit.", file=sys.stderr)

    command = f"keras-vae zoo build {name}"
    if entry["dataset"] != "digits":
        command += f" --data {data}"
    for flag, value in (("--max-epochs", max_epochs), ("--patience", patience),
                        ("--time-limit", time_limit), ("--nll-samples", nll_samples),
                        ("--nll-examples", nll_examples)):
        if value is not None:
            command += f" {flag} {value}"
    measured = {
        "sha256": file_sha256(target),
        "size_bytes": size,
        "parameters": _parameters(vae),
        "training": {
            "command": command,
            "epochs": epochs,
            "best_epoch": best_epoch,
            "stopped_by": stopped_by,
            "max_epochs": recipe["max_epochs"],
            "patience": recipe["patience"],
            **({"final_learning_rate": float(keras.ops.convert_to_numpy(
                vae.optimizer.learning_rate))} if recipe.get("reduce_lr_patience") else {}),
            "train_wall_time_s": round(train_seconds, 1),
            "eval_wall_time_s": round(eval_seconds, 1),
            "software": f"keras {keras.__version__}, {keras.backend.backend()} backend, "
                        f"keras-vae {__version__}",
            "hardware": hardware(),
        },
        "results": results,
    }
    return {**json.loads(json.dumps(entry)), **measured}


# --------------------------------------------------------------------------------- CLI
def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def table(markdown=False):
    """The zoo table as text: markdown (for the README) or aligned columns.

    Columns: name, architecture, dataset, latent (K), parameters, test -ELBO and test NLL (nats
    per example, lower is better), NLL k (importance samples), NLL examples (n evenly spaced
    test examples) and the -ELBO of those same examples, epochs trained, file size (MiB),
    license of the weights.
    """
    headers = ["name", "architecture", "dataset", "latent", "parameters", "test -ELBO",
               "test NLL", "NLL k", "NLL examples", "-ELBO of those", "epochs", "size",
               "license"]
    rows = []
    for row in list():
        entry = REGISTRY[row["name"]]
        results = entry["results"]
        rows.append([row["name"], row["architecture"], row["dataset"], str(row["latent_dim"]),
                     f"{row['parameters']:,}", _fmt(row["test_neg_elbo"]), _fmt(row["test_nll"]),
                     str(row["nll_samples"]),
                     f"{results.get('nll_examples', 0)} of {results['test_examples']}",
                     _fmt(results.get("nll_examples_neg_elbo", results["test_neg_elbo"])),
                     str(row["epochs"]), f"{row['size_bytes'] / 2 ** 20:.2f} MiB",
                     row["license"]])
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _cmd_list(args):
    if args.json:
        print(json.dumps(list(include_unreleased=args.all), indent=2))
    else:
        print(table(markdown=args.markdown))
        if not args.markdown:
            print("\nNLL and -ELBO in nats per test example (lower is better); the NLL uses k "
                  "importance samples on the listed test examples, compare it with the -ELBO "
                  "of those.")
    return 0


def _cmd_info(args):
    print(json.dumps(info(args.name), indent=2))
    return 0


def _cmd_download(args):
    names = args.names or released_names()
    for name in names:
        path = download(name, base_url=args.base_url, offline=args.offline or None)
        print(f"{name}\t{path}")
    return 0


def _cmd_build(args):
    entry = build(args.name, data=args.data, out=args.out, overwrite=args.overwrite,
                  max_epochs=args.max_epochs, patience=args.patience,
                  time_limit=args.time_limit, nll_samples=args.nll_samples,
                  nll_examples=args.nll_examples)
    print(f"Wrote {Path(args.out) / entry['file']}. Registry entry (paste into "
          "keras_vae/zoo.py _RELEASED):", file=sys.stderr)
    measured = {k: entry[k] for k in ("sha256", "size_bytes", "parameters", "training",
                                      "results")}
    print(pprint.pformat({args.name: measured}, sort_dicts=False, width=100))
    return 0


def add_commands(subparsers):
    """Adds `zoo list|info|download|build` to the `keras-vae` command line."""
    zoo = subparsers.add_parser("zoo", help="pretrained models: list, info, download, build",
                                description="The model zoo: pretrained VAEs with verified "
                                "downloads (see keras_vae.zoo).")
    sub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zoo.set_defaults(func=lambda args: (zoo.print_help(), 2)[1])

    p = sub.add_parser("list", help="the table of models and their measured quality")
    p.add_argument("--markdown", action="store_true", help="a markdown table (README)")
    p.add_argument("--json", action="store_true", help="JSON rows as zoo.list() returns them")
    p.add_argument("--all", action="store_true", help="with --json: recipes not yet built too")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="the registry entry of one model, and its cache status")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("download", help="fetch and verify weight files into the Keras cache")
    p.add_argument("names", nargs="*", metavar="NAME", help="models (default: all released)")
    p.add_argument("--base-url", default=None,
                   help=f"URL, file:// URL or folder of the weight files (default ${URL_ENV}, "
                        "else the release tag on GitHub)")
    p.add_argument("--offline", action="store_true",
                   help=f"never use the network (like {OFFLINE_ENV}=1)")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("build", help="train a recipe reproducibly, measure it, write its file",
                       description="Trains the registry's recipe NAME (fixed seed, "
                       "deterministic ops, early stopping on the validation split), measures "
                       "test -ELBO and importance-weighted test NLL, writes OUT/NAME.weights.h5 "
                       "and prints the registry entry.")
    p.add_argument("name")
    p.add_argument("--data", default=None,
                   help="binarized MNIST .npz (train/valid/test); digits recipes need none")
    p.add_argument("--out", default="weights", help="folder for the weight file (weights)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing weight file")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds of training after which to stop at the end of an epoch")
    p.add_argument("--nll-samples", type=int, default=None,
                   help="k of the importance-weighted test NLL (recipe default 5000; 0 skips)")
    p.add_argument("--nll-examples", type=int, default=None,
                   help="measure the NLL on N evenly spaced test examples only (every "
                        "(test size // N)-th), to fit a time budget")
    p.set_defaults(func=_cmd_build)

"""Building a zoo model's architecture and loading its verified weights."""

import math

from keras_vae.training.config import build_model
from keras_vae.zoo.downloader import download
from keras_vae.zoo.recipes import recipe_from_entry
from keras_vae.zoo.registry import ARCHITECTURES, get_entry

# Constructor arguments a user may change at load time: they do not change the weights.
LOAD_OVERRIDES = ("num_samples", "seed", "beta", "name")


# --------------------------------------------------------------------------------- load
def construct(entry, **overrides):
    """The uncompiled VAE of a registry entry (fresh weights), built from its `Recipe` by
    `keras_vae.training.build_model`; `overrides` replace constructor arguments."""
    architecture = entry["architecture"]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r} in the registry; expected one "
                         f"of {ARCHITECTURES}.")
    overrides.setdefault("seed", None)  # the recipe's seed is the build's, not the model's
    return build_model(recipe_from_entry(entry, resolve_data=False), compile=False,
                       **overrides)


def count_parameters(vae):
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
    entry = get_entry(name)
    bad = sorted(set(overrides) - set(LOAD_OVERRIDES))
    if bad:
        raise ValueError(f"load({name!r}) cannot change {', '.join(bad)}: the weights fix the "
                         f"architecture. Allowed overrides: {', '.join(LOAD_OVERRIDES)}.")
    path = download(name, base_url=base_url, offline=offline, cache_dir=cache_dir,
                    verbose=verbose)
    overrides.setdefault("name", name)
    vae = construct(entry, **overrides)
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


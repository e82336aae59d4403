"""A zoo registry entry as a training `Recipe`: what `keras-vae zoo build` trains."""

import math

from keras_vae.datasets.splits import source_of
from keras_vae.training.recipe import Recipe, canonical_model

# Registry `config` keys the Recipe holds itself; the rest are constructor options.
_RECIPE_KEYS = ("latent_dim", "likelihood", "posterior", "objective", "num_samples", "beta")
# Registry `train` keys that are measurement settings of the build, not training options.
MEASUREMENT_KEYS = ("neg_elbo_samples", "nll_samples", "nll_examples")


def entry_shapes(entry):
    """(input_shape, image_shape) of a registry entry's model, from its `config` alone."""
    config = entry["config"]
    shape = [int(d) for d in config.get("input_shape", [config.get("input_dim")])]
    if len(shape) == 3:
        return shape, shape
    side = math.isqrt(shape[0])
    return shape, ([side, side, 1] if side * side == shape[0] else None)


def recipe_from_entry(entry, data=None, resolve_data=True):
    """The `Recipe` of a registry entry (architecture, config, dataset, train).

    The architecture's sizes become `hidden_units` (`filters` of conv models); its other
    constructor arguments (activation, dense_units, ...) `model_options`. Digits recipes read
    scikit-learn's digits binarized at 0.5; binarized_mnist recipes the checked .npz `data`.
    Builds are deterministic (`deterministic=True`).

    Args:
        entry: a `keras_vae.zoo.REGISTRY` value.
        data: the dataset file (binarized_mnist); None for digits.
        resolve_data: False leaves the data unchecked (for building the model only).
    """
    config = dict(entry["config"])
    train = dict(entry["train"])
    if resolve_data:
        dataset, binarize = source_of(entry["dataset"], data)
    else:
        dataset, binarize = entry["dataset"], None
    hidden = config.pop("hidden_units", None)
    if hidden is None:
        hidden = config.pop("filters", None)
    else:
        config.pop("filters", None)
    if isinstance(hidden, int):
        hidden = [hidden]
    config.pop("input_shape", None)
    config.pop("input_dim", None)
    recipe_options = {k: config.pop(k) for k in _RECIPE_KEYS if k in config}
    input_shape, image_shape = entry_shapes(entry)
    optimizer = train.pop("optimizer", "adam")
    if optimizer != "adam":
        raise ValueError(f"Unknown optimizer {optimizer!r} in a zoo recipe: only adam.")
    options = {k: v for k, v in train.items() if k not in MEASUREMENT_KEYS}
    return Recipe.from_dict(dict(
        dataset=dataset, binarize=binarize, scale="auto",
        model=canonical_model(entry["architecture"]),
        hidden_units=None if hidden is None else list(hidden), model_options=config,
        input_shape=input_shape, image_shape=image_shape, deterministic=True,
        **recipe_options, **options))

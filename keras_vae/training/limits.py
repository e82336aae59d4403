"""Upper bounds on the size options of a run, checked before any data or model is built.

A typo such as `--latent-dim 1000000` or `--epochs 100000000000` would otherwise allocate
gigabytes or run for ever. Each limit is far above what the models and datasets of this
project need; `--allow-large` (`make_config(..., allow_large=True)`) lifts them all.
"""

#: option -> the largest value accepted without --allow-large
LIMITS = {
    "epochs": 100_000,
    "latent_dim": 4_096,
    "hidden_units": 16_384,  # each layer's units (filters for conv models)
    "batch_size": 65_536,
    "num_samples": 10_000,
    "kl_warmup": 100_000,
    "patience": 100_000,  # --early-stopping
}
_FLAGS = {"patience": "--early-stopping"}  # options whose flag has another name
#: the most hidden layers (or conv blocks) accepted without --allow-large
MAX_HIDDEN_LAYERS = 16


def _flag(name):
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def check_limits(config):
    """Raises a ValueError naming the option, its limit and --allow-large when a size option of
    a run configuration is above `LIMITS`; nothing when config["allow_large"] is true."""
    if config.get("allow_large"):
        return
    for name, limit in LIMITS.items():
        values = config.get(name)
        if values is None:
            continue
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if isinstance(value, (int, float)) and value > limit:
                raise ValueError(
                    f"{_flag(name)} {value} is above the limit of {limit}; pass --allow-large "
                    "(allow_large=True) if you really mean it.")
    hidden = config.get("hidden_units")
    if hidden is not None and len(hidden) > MAX_HIDDEN_LAYERS:
        raise ValueError(f"--hidden-units has {len(hidden)} layers, above the limit of "
                         f"{MAX_HIDDEN_LAYERS}; pass --allow-large (allow_large=True) if you "
                         "really mean it.")

"""A run's configuration: the options, their checks, the data options and the model they build."""

import keras

from keras_vae import datasets
from keras_vae.distribute import MIXED_PRECISION_POLICIES as MIXED_PRECISION
from keras_vae.distribute import STRATEGIES
from keras_vae.hierarchical import HierarchicalVAE
from keras_vae.model import OBJECTIVES, VAE, monitored_metric
from keras_vae.priors import PRIORS
from keras_vae.training.limits import check_limits
from keras_vae.training.recipe import (
    BINARIZE,
    DEFAULT_HIDDEN,
    IMAGE_MODELS,
    MODELS,
    RUN_OPTIONS,
    Recipe,
    canonical_model,
    upgrade_config,
)


def option_value(config, name):
    """config[name], also for a run config written before the option existed or under another
    spelling (`Recipe.from_dict`): what that run means by it."""
    if name in config:
        return config[name]
    return upgrade_config(config).get(name)


def monitor(config):
    """What checkpoints and early stopping of a run watch (`model.monitored_metric`)."""
    return monitored_metric(option_value(config, "objective"))


# ============================================================================ configuration
def _positive(name, value, kind=int, allow_zero=False):
    ok = value is not None and (value >= 0 if allow_zero else value > 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok or (
            kind is int and int(value) != value):
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"--{name.replace('_', '-')} must be {what} "
                         f"{'>= 0' if allow_zero else '> 0'}, got {value!r}.")


def check_config(config):
    """Raises a ValueError naming the option when a run configuration is invalid."""
    config = upgrade_config(config)
    if config["model"] not in MODELS:
        raise ValueError(f"Unknown --model {config['model']!r}: expected one of {MODELS}.")
    for name in ("latent_dim", "epochs", "batch_size", "num_samples"):
        _positive(name, config[name])
    if option_value(config, "objective") not in OBJECTIVES:
        raise ValueError(f"Unknown --objective {config['objective']!r}: expected one of "
                         f"{OBJECTIVES}.")
    if config["prior"] not in PRIORS:
        raise ValueError(f"Unknown --prior {config['prior']!r}: expected one of {PRIORS}.")
    if config["prior_components"] is not None:
        if config["prior"] == "standard":
            raise ValueError("--prior-components applies to --prior vamp or mog only.")
        _positive("prior_components", config["prior_components"])
    _positive("free_bits", config["free_bits"], float, allow_zero=True)
    if config["free_bits"] and option_value(config, "objective") != "elbo":
        raise ValueError("--free-bits floors the ELBO's KL term: use it with --objective elbo.")
    if config["prior"] == "vamp" and config["posterior"] != "diagonal":
        raise ValueError("--prior vamp needs --posterior diagonal (it mixes the encoder's "
                         "posteriors); use --prior mog with a full posterior.")
    _positive("lr", config["learning_rate"], float)
    _positive("beta", config["beta"], float, allow_zero=True)
    _positive("kl_warmup", config["kl_warmup"], int, allow_zero=True)
    if config["patience"] is not None:
        _positive("early_stopping", config["patience"])
    if config["binarize"] not in BINARIZE:
        raise ValueError(f"Unknown --binarize {config['binarize']!r}: expected one of "
                         f"{('none',) + BINARIZE[1:]}.")
    if config["ema_momentum"] is not None and not 0 < config["ema_momentum"] < 1:
        raise ValueError(f"--ema-momentum must be between 0 and 1, got "
                         f"{config['ema_momentum']!r}.")
    if config["reduce_lr_patience"] is not None:
        _positive("reduce_lr_patience", config["reduce_lr_patience"])
        if not 0 < config["reduce_lr_factor"] < 1:
            raise ValueError(f"--reduce-lr-factor must be between 0 and 1, got "
                             f"{config['reduce_lr_factor']!r}.")
        _positive("min_lr", config["min_learning_rate"], float, allow_zero=True)
    if config["time_limit"] is not None:
        _positive("time_limit", config["time_limit"], float)
    if config["hidden_units"] is not None:
        if not config["hidden_units"] or any(
                not isinstance(u, int) or u < 1 for u in config["hidden_units"]):
            raise ValueError("--hidden-units must be positive integers separated by commas, "
                             f"e.g. 512,256; got {config['hidden_units']!r}.")
    if config["model"] == "kingma-welling" and config["hidden_units"] is not None \
            and len(config["hidden_units"]) != 1:
        raise ValueError("--model kingma-welling has exactly one hidden layer; give one "
                         "number to --hidden-units or use --model mlp.")
    if config.get("strategy", "default") not in STRATEGIES:
        raise ValueError(f"Unknown --strategy {config['strategy']!r}: expected one of {STRATEGIES}.")
    if config.get("mixed_precision") not in MIXED_PRECISION:
        raise ValueError(f"Unknown --mixed-precision {config['mixed_precision']!r}: expected "
                         f"one of {MIXED_PRECISION[1:]}.")
    if config["likelihood"] == "bernoulli" and config["scale"] is None:
        raise ValueError("The Bernoulli likelihood needs data in [0, 1]: do not combine "
                         "--scale none with --likelihood bernoulli.")
    check_limits(config)  # sizes, before anything is built


def data_options(config):
    return dict(flatten=config["model"] not in IMAGE_MODELS, scale=config["scale"],
                data_dir=config["data_dir"])


def _architecture(config, **overrides):
    """The uncompiled VAE of a recipe (dict or Recipe), fresh weights; `overrides` go to the
    constructor (e.g. name, or a load-time seed)."""
    config = upgrade_config(config.to_dict() if isinstance(config, Recipe) else config)
    model = canonical_model(config["model"])
    hidden = tuple(config["hidden_units"] or DEFAULT_HIDDEN[model])
    common = dict(latent_dim=config["latent_dim"], likelihood=config["likelihood"],
                  posterior=config["posterior"], num_samples=config["num_samples"],
                  beta=config["beta"], seed=config["seed"],
                  objective=option_value(config, "objective"), prior=config["prior"],
                  prior_components=config["prior_components"],
                  free_bits=float(config["free_bits"]))
    common.update(config["model_options"] or {})
    common.update(overrides)
    input_shape = tuple(config["input_shape"])
    if common.get("latent_dims") is not None:  # two stochastic layers: HierarchicalVAE
        return _two_layer(model, input_shape, hidden, common)
    if model == "kingma-welling":
        if len(hidden) != 1:
            raise ValueError("--model kingma-welling has exactly one hidden layer; give one "
                             "number to --hidden-units or use --model mlp.")
        return VAE.kingma_welling(input_dim=input_shape[0], hidden_units=hidden[0], **common)
    if model == "mlp":
        return VAE.mlp(input_shape=input_shape, hidden_units=hidden, **common)
    if len(input_shape) != 3:
        raise ValueError(f"--model {model} needs image data, but "
                         f"{config['dataset']} examples have shape {input_shape}.")
    if model == "conv":
        return VAE.conv(input_shape=input_shape, filters=hidden, **common)
    if model == "pixel-cnn":  # the encoder's filters; the decoder's are model_options
        return VAE.pixel_cnn(input_shape=input_shape, filters=hidden, **common)
    raise ValueError(f"Unknown --model {model!r}: expected one of {MODELS}.")


def _two_layer(model, input_shape, hidden, common):
    """The HierarchicalVAE of a recipe whose model_options hold latent_dims = [K1, K2] (K1 is
    also its latent_dim): `HierarchicalVAE.mlp` or `.conv` with the recipe's hidden units."""
    common = dict(common)
    latent_dims = tuple(common.pop("latent_dims"))
    if common.pop("latent_dim") != latent_dims[0]:
        raise ValueError(f"latent_dim must equal the first of latent_dims {list(latent_dims)} "
                         "(the size of z1).")
    if model == "mlp":
        return HierarchicalVAE.mlp(input_shape=input_shape, latent_dims=latent_dims,
                                   hidden_units=hidden, **common)
    if model == "conv" and len(input_shape) == 3:
        return HierarchicalVAE.conv(input_shape=input_shape, latent_dims=latent_dims,
                                    filters=hidden, **common)
    raise ValueError(f"--latent-dims builds a two-layer model from --model mlp or conv (image "
                     f"data), not {model} on examples shaped {input_shape}.")


def build_model(config, compile=True, **overrides):
    """The VAE a recipe describes (fresh weights), compiled as it trains.

    The one model builder: `keras-vae train`, `zoo build` and `zoo.load` build through it.
    Everything model-related happens here, so a distribution strategy can wrap this one call:
    `with strategy.scope(): vae = build_model(config)`.

    Args:
        config: a `Recipe`, or its dict (a run's config.json, older spellings too) with the
            data shapes filled in (input_shape).
        compile: compile with Adam(learning_rate), with a moving average of the weights when
            the recipe has ema_momentum.
        **overrides: constructor arguments that replace the recipe's (e.g. name).

    Returns:
        A `VAE`.
    """
    vae = _architecture(config, **overrides)
    if compile:
        config = upgrade_config(config.to_dict() if isinstance(config, Recipe) else config)
        ema = config["ema_momentum"]
        optimizer = keras.optimizers.Adam(
            learning_rate=config["learning_rate"],
            **({"use_ema": True, "ema_momentum": ema} if ema else {}))
        # KLWarmup sets beta in a per-batch callback hook, which Keras calls once per compiled
        # execution: one step per execution keeps the ramp exact, batch by batch.
        vae.compile(optimizer=optimizer,
                    **({"steps_per_execution": 1} if config.get("kl_warmup") else {}))
    return vae


def make_config(dataset="digits", model="kingma-welling", latent_dim=2, epochs=50,
                batch_size=100, lr=None, beta=1.0, kl_warmup=0, num_samples=1,
                posterior="diagonal", likelihood="bernoulli", hidden_units=None, binarize=None,
                scale="auto", seed=0, early_stopping=None, data_dir=None, strategy="default",
                mixed_precision=None, objective="elbo", allow_large=False,
                **options):
    """A complete, checked run configuration (the dict of a `Recipe`) with the data shapes
    filled in.

    `dataset` is a known name or a path (made absolute). `lr` and `early_stopping` are the
    older names of `learning_rate` and `patience`; any other `Recipe` option can be given by
    name (`options`), or pass `recipe=Recipe(...)` alone. Adds `input_shape` (what the model
    takes) and `image_shape` (how examples are drawn, None for non-image data). Sizes above
    `limits.LIMITS` are refused unless `allow_large`.
    """
    recipe = options.pop("recipe", None)
    if recipe is None:
        if lr is not None:
            options["learning_rate"] = lr
        if early_stopping is not None:
            options["patience"] = early_stopping
        recipe = Recipe.from_dict(dict(
            dataset=dataset, data_dir=data_dir, model=model, latent_dim=latent_dim,
            hidden_units=hidden_units, likelihood=likelihood, posterior=posterior,
            num_samples=num_samples, beta=beta, kl_warmup=kl_warmup, epochs=epochs,
            batch_size=batch_size, seed=seed, binarize=binarize, scale=scale,
            strategy=strategy, mixed_precision=mixed_precision, objective=objective,
            **options))
    config = recipe.to_dict()
    config["allow_large"] = bool(allow_large)
    config["beta"] = float(config["beta"])
    config["learning_rate"] = float(config["learning_rate"])
    kind, key = datasets.describe_source(config["dataset"])
    config["dataset"] = key
    check_config(config)
    options = data_options(config)
    data_dir = config["data_dir"]
    if config["input_shape"] is None:
        config["input_shape"] = list(datasets.example_shape(key, options["flatten"], data_dir,
                                                            scale=config["scale"]))
    if config["image_shape"] is None:
        try:
            config["image_shape"] = list(datasets.example_shape(key, False, data_dir,
                                                                scale=config["scale"]))
        except ValueError:
            config["image_shape"] = None
    from keras_vae.version import __version__
    config["keras_vae_version"] = __version__
    return config


def evaluation_binarization(config):
    """How validation and test data are binarized: as in training, but with one fixed draw
    ("static") where training drew afresh, so evaluation is repeatable."""
    binarize = config["binarize"]
    return "static" if binarize == "dynamic" else binarize


def load_split(config, split, batch_size=None, limit=None, numpy=False):
    """The data of a run: `split` preprocessed as in training. Validation and test data get a
    static binarization whenever training binarized at random, so evaluation is repeatable.

    Returns:
        A batched tf.data.Dataset of x, or with `numpy=True` the `(x, labels)` arrays.
    """
    binarize = evaluation_binarization(config)
    options = data_options(config)
    seed = config["seed"] + 1  # not the training draw's seed
    if numpy:
        return datasets.load_numpy(config["dataset"], split, binarize=binarize, seed=seed,
                                   limit=limit, **options)
    return datasets.load(config["dataset"], split, batch_size=batch_size or config["batch_size"],
                         binarize=binarize, seed=seed, limit=limit, **options)

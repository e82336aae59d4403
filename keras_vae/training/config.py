"""A run's configuration: the options, their checks, the data options and the model they build."""

import keras

from keras_vae import datasets
from keras_vae.model import OBJECTIVES, VAE, monitored_metric
from keras_vae.training.limits import check_limits

MODELS = ("kingma-welling", "mlp", "conv", "pixel-cnn")
DEFAULT_HIDDEN = {"kingma-welling": (500,), "mlp": (512, 256), "conv": (32, 64),
                  "pixel-cnn": (32, 64)}
IMAGE_MODELS = ("conv", "pixel-cnn")  # take (H, W, C) examples, the others flat vectors
STRATEGIES = ("default", "mirrored", "multiworker")
MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")

# Options that define a run: a rerun with any of them changed is a different run.
RUN_OPTIONS = ("dataset", "data_dir", "model", "latent_dim", "hidden_units", "likelihood",
               "posterior", "num_samples", "beta", "kl_warmup", "epochs", "batch_size", "lr",
               "seed", "binarize", "scale", "early_stopping", "mixed_precision", "objective")
# Options added after runs were already written: what such a run's config means without them.
_OPTION_DEFAULTS = {"objective": "elbo"}


def option_value(config, name):
    """config[name], or what a run config written before the option existed means by it."""
    return config.get(name, _OPTION_DEFAULTS.get(name))


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
    if config["model"] not in MODELS:
        raise ValueError(f"Unknown --model {config['model']!r}: expected one of {MODELS}.")
    for name in ("latent_dim", "epochs", "batch_size", "num_samples"):
        _positive(name, config[name])
    if option_value(config, "objective") not in OBJECTIVES:
        raise ValueError(f"Unknown --objective {config['objective']!r}: expected one of "
                         f"{OBJECTIVES}.")
    _positive("lr", config["lr"], float)
    _positive("beta", config["beta"], float, allow_zero=True)
    _positive("kl_warmup", config["kl_warmup"], int, allow_zero=True)
    if config["early_stopping"] is not None:
        _positive("early_stopping", config["early_stopping"])
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


def build_model(config):
    """The compiled VAE a run configuration describes (fresh weights).

    Everything model-related happens here, so a distribution strategy can wrap this one call:
    `with strategy.scope(): vae = build_model(config)`.

    Args:
        config: dict with at least model, input_shape, latent_dim, hidden_units, likelihood,
            posterior, num_samples, beta, seed, lr (see `RUN_OPTIONS`).

    Returns:
        A `VAE` compiled with Adam(lr).
    """
    hidden = tuple(config["hidden_units"] or DEFAULT_HIDDEN[config["model"]])
    common = dict(latent_dim=config["latent_dim"], likelihood=config["likelihood"],
                  posterior=config["posterior"], num_samples=config["num_samples"],
                  beta=config["beta"], seed=config["seed"],
                  objective=option_value(config, "objective"))
    input_shape = tuple(config["input_shape"])
    if config["model"] == "kingma-welling":
        if len(hidden) != 1:
            raise ValueError("--model kingma-welling has exactly one hidden layer; give one "
                             "number to --hidden-units or use --model mlp.")
        vae = VAE.kingma_welling(input_dim=input_shape[0], hidden_units=hidden[0], **common)
    elif config["model"] == "mlp":
        vae = VAE.mlp(input_shape=input_shape, hidden_units=hidden, **common)
    else:
        if len(input_shape) != 3:
            raise ValueError(f"--model {config['model']} needs image data, but "
                             f"{config['dataset']} examples have shape {input_shape}.")
        if config["model"] == "conv":
            vae = VAE.conv(input_shape=input_shape, filters=hidden, **common)
        else:  # the encoder's filters; the autoregressive decoder keeps its defaults
            vae = VAE.pixel_cnn(input_shape=input_shape, filters=hidden, **common)
    # KLWarmup sets beta in a per-batch callback hook, which Keras calls once per compiled
    # execution: one step per execution keeps the ramp exact, batch by batch.
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate=config["lr"]),
                **({"steps_per_execution": 1} if config.get("kl_warmup") else {}))
    return vae


def make_config(dataset, model="kingma-welling", latent_dim=2, epochs=50, batch_size=100,
                lr=1e-3, beta=1.0, kl_warmup=0, num_samples=1, posterior="diagonal",
                likelihood="bernoulli", hidden_units=None, binarize=None, scale="auto", seed=0,
                early_stopping=None, data_dir=None, strategy="default", mixed_precision=None,
                objective="elbo", allow_large=False):
    """A complete, checked run configuration (dict) with the data shapes filled in.

    `dataset` is a known name or a path (made absolute). Adds `input_shape` (what the model
    takes) and `image_shape` (how examples are drawn, None for non-image data). Sizes above
    `limits.LIMITS` are refused unless `allow_large`.
    """
    kind, key = datasets.describe_source(dataset)
    config = dict(dataset=key, data_dir=data_dir, model=model, latent_dim=latent_dim,
                  hidden_units=None if hidden_units is None else list(hidden_units),
                  likelihood=likelihood, posterior=posterior, num_samples=num_samples,
                  beta=float(beta), kl_warmup=kl_warmup, epochs=epochs, batch_size=batch_size,
                  lr=float(lr), seed=seed, binarize=binarize, scale=scale,
                  early_stopping=early_stopping, strategy=strategy,
                  mixed_precision=mixed_precision, objective=objective,
                  allow_large=bool(allow_large))
    check_config(config)
    options = data_options(config)
    config["input_shape"] = list(datasets.example_shape(key, options["flatten"], data_dir,
                                                        scale=config["scale"]))
    try:
        config["image_shape"] = list(datasets.example_shape(key, False, data_dir,
                                                            scale=config["scale"]))
    except ValueError:
        config["image_shape"] = None
    from keras_vae import __version__
    config["keras_vae_version"] = __version__
    return config


def load_split(config, split, batch_size=None, limit=None, numpy=False):
    """The data of a run: `split` preprocessed as in training. Validation and test data get a
    static binarization whenever training binarized, so evaluation is repeatable.

    Returns:
        A batched tf.data.Dataset of x, or with `numpy=True` the `(x, labels)` arrays.
    """
    binarize = None if config["binarize"] is None else "static"
    options = data_options(config)
    seed = config["seed"] + 1  # not the training draw's seed
    if numpy:
        return datasets.load_numpy(config["dataset"], split, binarize=binarize, seed=seed,
                                   limit=limit, **options)
    return datasets.load(config["dataset"], split, batch_size=batch_size or config["batch_size"],
                         binarize=binarize, seed=seed, limit=limit, **options)

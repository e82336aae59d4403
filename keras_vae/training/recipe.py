"""`Recipe`: the one description of a training run.

A recipe names the data (source, binarization, scale), the model (architecture, its sizes and
options, likelihood, posterior, objective, samples, beta), the optimizer and its schedule, the
KL warm-up, Polyak averaging (EMA), early stopping, the limits (epochs, time), the batch size,
the seed and how the computation is placed (strategy, mixed precision, deterministic ops).

`keras-vae train`, `keras-vae zoo build` and the Python API train a recipe into a run
directory with `keras_vae.training.train`; the run's `config.json` is `Recipe.to_dict()` plus
the data shapes. `Recipe.from_dict` also reads the config.json of runs written before the
recipe existed (keys `lr`, `early_stopping`, `max_epochs`; model names with underscores).

This module imports nothing heavy: it is plain data.
"""

import dataclasses
from dataclasses import dataclass, field

from keras_vae.datasets import BINARIZE

#: Architectures, as `--model` spells them (the VAE constructor is the name with "_" for "-").
MODELS = ("kingma-welling", "mlp", "conv", "pixel-cnn")
#: Hidden layer sizes (filters for conv and pixel-cnn) when a recipe gives none.
DEFAULT_HIDDEN = {"kingma-welling": (500,), "mlp": (512, 256), "conv": (32, 64),
                  "pixel-cnn": (32, 64)}
IMAGE_MODELS = ("conv", "pixel-cnn")  # take (H, W, C) examples, the others flat vectors

#: Other spellings `from_dict` accepts for a key (older run directories, zoo recipes).
KEY_ALIASES = {"lr": "learning_rate", "early_stopping": "patience", "max_epochs": "epochs",
               "kl_warmup_epochs": "kl_warmup"}


def canonical_model(name):
    """The one spelling of an architecture name: "kingma_welling" -> "kingma-welling"."""
    return name.replace("_", "-") if isinstance(name, str) else name


@dataclass
class Recipe:
    """Everything a training run needs, with one spelling per option.

    Data: `dataset` (a name from `keras_vae.datasets.known_names()` or a file path),
    `data_dir` (TFDS), `binarize` (see BINARIZE), `scale` ("auto", a divisor, or None).
    Model: `model` (see MODELS), `latent_dim`, `hidden_units` (None: DEFAULT_HIDDEN; the
    filters of conv models), `model_options` (further constructor arguments, e.g. activation,
    dense_units), `likelihood`, `posterior`, `objective`, `num_samples`, `beta`, `prior`
    ("standard", "vamp" or "mog": see `keras_vae.priors`), `prior_components` (None: the
    prior's default), `free_bits` (nats per latent dimension; 0 for none).
    Optimization: Adam with `learning_rate`; `reduce_lr_patience` (None: constant rate;
    else multiply it by `reduce_lr_factor`, down to `min_learning_rate`, whenever the monitored
    validation number stalls that many epochs), `kl_warmup` (epochs of the beta ramp, skipped
    by early stopping and by the choice of the best epoch), `ema_momentum` (None, or keep a
    moving average of the weights, which is what is validated and kept), `patience` (None: no
    early stopping), `epochs` (the most epochs), `time_limit` (seconds of training after which
    it stops at the end of an epoch; not part of what makes two runs the same), `batch_size`
    (global), `seed`. Placement: `strategy`, `mixed_precision`, `deterministic` (TensorFlow's
    deterministic ops: the same bits on the same software and hardware).
    Derived from the data (filled by `training.make_config`): `input_shape`, `image_shape`.
    """

    dataset: str = "digits"
    data_dir: str = None
    binarize: str = None
    scale: object = "auto"
    model: str = "kingma-welling"
    latent_dim: int = 2
    hidden_units: list = None
    model_options: dict = field(default_factory=dict)
    likelihood: str = "bernoulli"
    posterior: str = "diagonal"
    objective: str = "elbo"
    num_samples: int = 1
    beta: float = 1.0
    prior: str = "standard"
    prior_components: int = None
    free_bits: float = 0.0
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    reduce_lr_patience: int = None
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    kl_warmup: int = 0
    ema_momentum: float = None
    patience: int = None
    epochs: int = 50
    time_limit: float = None
    batch_size: int = 100
    seed: int = 0
    strategy: str = "default"
    mixed_precision: str = None
    deterministic: bool = False
    input_shape: list = None
    image_shape: list = None

    def to_dict(self):
        """A JSON-ready dict (what config.json holds)."""
        out = dataclasses.asdict(self)
        if out["hidden_units"] is not None:
            out["hidden_units"] = list(out["hidden_units"])
        for key in ("input_shape", "image_shape"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data):
        """The recipe a dict describes; older spellings (KEY_ALIASES, "kingma_welling") are
        read as today's, keys that are not options (e.g. keras_vae_version) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in data.items():
            key = KEY_ALIASES.get(key, key)
            if key in names:
                values[key] = value
        if "model" in values:
            values["model"] = canonical_model(values["model"])
        if values.get("model_options") is None:
            values.pop("model_options", None)
        return cls(**values)

    def replace(self, **changes):
        """A copy with `changes` (option names as in the dataclass or KEY_ALIASES)."""
        return Recipe.from_dict({**self.to_dict(), **changes})


#: Options that define a run: a rerun with any of them changed is a different run.
RUN_OPTIONS = tuple(f.name for f in dataclasses.fields(Recipe)
                    if f.name not in ("time_limit", "input_shape", "image_shape"))


def upgrade_config(config):
    """A run configuration written by any version, in today's spelling (a dict: the recipe's
    options plus the keys that are not options, e.g. keras_vae_version, kept as they were)."""
    recipe = Recipe.from_dict(config).to_dict()
    extra = {k: v for k, v in config.items()
             if KEY_ALIASES.get(k, k) not in recipe}
    return {**extra, **recipe}

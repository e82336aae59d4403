"""The training workflow: run directories, callbacks, and the `train`, `evaluate`, `sample` and
`reconstruct` commands of `keras-vae`.

    keras-vae train --dataset digits --model kingma-welling --latent-dim 2 --run-dir runs/digits
    keras-vae evaluate runs/digits
    keras-vae sample runs/digits -n 64 --out grid.png
    keras-vae reconstruct runs/digits --out recon.png

A run directory holds everything about one training run:

    config.json        the options, enough to rebuild the data and the model (`build_model`)
    history.csv        one row of metrics per epoch (training and `val_` validation)
    backup/            Keras BackupAndRestore state while training runs: a rerun of the same
                       command resumes after the last finished epoch
    checkpoints/       best.weights.h5, the weights with the lowest validation -ELBO so far
    logs/              TensorBoard event files (`tensorboard --logdir RUN_DIR/logs`)
    model.keras        the trained VAE (best validation weights), `keras.saving.load_model`
    *.png              curves, reconstructions, samples, latent means, manifold (K=2)
    summary.json       test metrics; its presence marks the run as finished
    evaluation.json    written by `keras-vae evaluate`

A finished run, or a directory holding a run with other options, is never overwritten unless
`--overwrite` is given.
"""

import csv
import json
import math
import os
import shutil
import sys
import time
import warnings

import numpy as np

import keras

from keras_vae import datasets, distribute, plots
from keras_vae.model import OBJECTIVES, VAE, monitored_metric

MODELS = ("kingma-welling", "mlp", "conv", "pixel-cnn")
DEFAULT_HIDDEN = {"kingma-welling": (500,), "mlp": (512, 256), "conv": (32, 64),
                  "pixel-cnn": (32, 64)}
IMAGE_MODELS = ("conv", "pixel-cnn")  # take (H, W, C) examples, the others flat vectors
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
BACKUP_DIR = "backup"
STRATEGIES = ("default", "mirrored", "multiworker")
MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")

# Options that define a run: a rerun with any of them changed is a different run.
RUN_OPTIONS = ("dataset", "data_dir", "model", "latent_dim", "hidden_units", "likelihood",
               "posterior", "num_samples", "beta", "kl_warmup", "epochs", "batch_size", "lr",
               "seed", "binarize", "scale", "early_stopping", "mixed_precision", "objective")
# Options added after runs were already written: what such a run's config means without them.
_OPTION_DEFAULTS = {"objective": "elbo"}


def _option(config, name):
    """config[name], or what a run config written before the option existed means by it."""
    return config.get(name, _OPTION_DEFAULTS.get(name))


def monitor(config):
    """What checkpoints and early stopping of a run watch (`model.monitored_metric`)."""
    return monitored_metric(_option(config, "objective"))


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite and training was stopped."""


# ============================================================================ callbacks
class KLWarmup(keras.callbacks.Callback):
    """Ramps `vae.beta` linearly from 0 to `vae.beta_target` over the first `epochs` epochs.

    At batch b of epoch e (0-based), with S batches per epoch, beta = target * min(1, (e + b/S)
    / epochs); it stays at the target afterwards. The value in use at the end of each epoch is
    added to the logs as "beta" (so it lands in history.csv).

    Keras calls the per-batch hook once per compiled execution, so beta changes every
    `steps_per_execution` batches (`VAE.compile` defaults to 20); compile with
    `steps_per_execution=1` for a batch-by-batch ramp (`keras-vae train --kl-warmup` does).
    A warning says so when an epoch is not much longer than one execution.

    Args:
        epochs: length of the ramp in epochs (> 0).
    """

    def __init__(self, epochs):
        super().__init__()
        if not epochs > 0:
            raise ValueError(f"KLWarmup needs epochs > 0, got {epochs!r}.")
        self.epochs = float(epochs)
        self._epoch = 0

    def beta_at(self, epoch, batch=0, steps=None):
        """The KL weight at `batch` of `epoch` (both 0-based) with `steps` batches per epoch."""
        progress = epoch + (batch / steps if steps else 0.0)
        return float(self.model.beta_target) * min(1.0, progress / self.epochs)

    def on_train_begin(self, logs=None):
        per_execution = int(getattr(self.model, "steps_per_execution", 1) or 1)
        steps = self.params.get("steps")
        if per_execution > 1 and (not steps or steps < 10 * per_execution):
            warnings.warn(
                f"KLWarmup updates beta once per compiled execution of {per_execution} steps "
                f"({steps} steps per epoch), so the ramp is coarse; compile with "
                "steps_per_execution=1 for a batch-by-batch warm-up.", stacklevel=2)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.model.beta.assign(self.beta_at(self._epoch, batch, self.params.get("steps")))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["beta"] = float(keras.ops.convert_to_numpy(self.model.beta))


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Keras's TerminateOnNaN that also records where the loss stopped being finite, as
    `stopped_at = (epoch, batch)` (0-based), or None."""

    def on_train_begin(self, logs=None):
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.stopped_at is None:
            self.stopped_at = (self._epoch, batch)
        super().on_batch_end(batch, logs)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that continues counting across a resumed run.

    Args:
        previous: the monitored values of the epochs finished before the resume (from
            history.csv), replayed into `best` and `wait` when training begins.
        **kwargs: as `keras.callbacks.EarlyStopping`.
    """

    def __init__(self, previous=(), **kwargs):
        super().__init__(**kwargs)
        self.previous = [float(v) for v in previous]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for epoch, value in enumerate(self.previous):
            if epoch < self.start_from_epoch or not math.isfinite(value):
                continue
            if self.best is None or value < self.best - abs(self.min_delta):
                self.best, self.best_epoch, self.wait = value, epoch, 0
            else:
                self.wait += 1


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
    if _option(config, "objective") not in OBJECTIVES:
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


def _data_options(config):
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
                  objective=_option(config, "objective"))
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
                objective="elbo"):
    """A complete, checked run configuration (dict) with the data shapes filled in.

    `dataset` is a known name or a path (made absolute). Adds `input_shape` (what the model
    takes) and `image_shape` (how examples are drawn, None for non-image data).
    """
    kind, key = datasets.describe_source(dataset)
    config = dict(dataset=key, data_dir=data_dir, model=model, latent_dim=latent_dim,
                  hidden_units=None if hidden_units is None else list(hidden_units),
                  likelihood=likelihood, posterior=posterior, num_samples=num_samples,
                  beta=float(beta), kl_warmup=kl_warmup, epochs=epochs, batch_size=batch_size,
                  lr=float(lr), seed=seed, binarize=binarize, scale=scale,
                  early_stopping=early_stopping, strategy=strategy,
                  mixed_precision=mixed_precision, objective=objective)
    check_config(config)
    options = _data_options(config)
    config["input_shape"] = list(datasets.example_shape(key, options["flatten"], data_dir))
    try:
        config["image_shape"] = list(datasets.example_shape(key, False, data_dir))
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
    options = _data_options(config)
    seed = config["seed"] + 1  # not the training draw's seed
    if numpy:
        return datasets.load_numpy(config["dataset"], split, binarize=binarize, seed=seed,
                                   limit=limit, **options)
    return datasets.load(config["dataset"], split, batch_size=batch_size or config["batch_size"],
                         binarize=binarize, seed=seed, limit=limit, **options)


# ============================================================================ run directory
def read_json(path):
    """The JSON object stored at `path`."""
    with open(path) as handle:
        return json.load(handle)


def write_json(path, data):
    """Writes `data` as JSON to `path` atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def read_history(run_dir):
    """history.csv as a dict of column name -> list of floats ("epoch" as ints); {} if none."""
    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: [int(r[key]) if key == "epoch" else float(r[key]) for r in rows]
            for key in rows[0]}


def _truncate_history(run_dir, epochs_done):
    """Keeps the rows of the first `epochs_done` epochs (a kill can leave a row too many)."""
    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.exists(path):
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, [r for r in reader if int(r["epoch"]) < epochs_done]
    if fields is None:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _backup_epoch(run_dir):
    path = os.path.join(run_dir, BACKUP_DIR, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    try:
        return int(read_json(path)["epoch"])
    except (ValueError, KeyError, OSError):
        return 0


def prepare_run_dir(run_dir, config, overwrite=False):
    """Creates, resumes or (with `overwrite`) replaces a run directory.

    Returns:
        "new" (fresh directory with config.json written) or "resume" (same options, not
        finished).

    Raises:
        FileExistsError: the run is finished, or holds different options, or the directory is
            not a keras-vae run; the message names the way out.
    """
    config_path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        if not os.path.exists(config_path):
            raise FileExistsError(
                f"{run_dir} exists and is not a keras-vae run directory (no {CONFIG_FILE}); "
                "choose another --run-dir. (--overwrite never deletes such a directory.)")
        if overwrite:
            shutil.rmtree(run_dir)
        else:
            old = read_json(config_path)
            changed = [k for k in RUN_OPTIONS if _option(old, k) != config.get(k)]
            if changed:
                details = ", ".join(f"{k}: {_option(old, k)!r} -> "
                                    f"{config.get(k)!r}" for k in changed)
                raise FileExistsError(
                    f"{run_dir} holds a run with other options ({details}). Choose another "
                    "--run-dir, or pass --overwrite to delete that run and start again.")
            if os.path.exists(os.path.join(run_dir, SUMMARY_FILE)):
                raise FileExistsError(
                    f"{run_dir} holds a finished run (see {SUMMARY_FILE}); pass --overwrite to "
                    "train it again from scratch, or choose another --run-dir.")
            return "resume"
    elif os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise FileExistsError(f"--run-dir {run_dir} is a file, not a directory.")
    os.makedirs(run_dir, exist_ok=True)
    write_json(config_path, config)
    return "new"


# ============================================================================ training
def _callbacks(config, run_dir, history, backup_root=None):
    watched = monitor(config)
    previous = history.get(watched, [])
    best = min((v for v in previous if math.isfinite(v)), default=None)
    callbacks = []
    if config["kl_warmup"]:
        callbacks.append(KLWarmup(config["kl_warmup"]))
    stop_on_nan = StopOnNaN()
    callbacks.append(stop_on_nan)
    # CSVLogger before BackupAndRestore: once an epoch's backup exists, its row is written.
    callbacks.append(keras.callbacks.CSVLogger(os.path.join(run_dir, HISTORY_FILE), append=True))
    callbacks.append(keras.callbacks.ModelCheckpoint(
        os.path.join(run_dir, BEST_WEIGHTS), monitor=watched, mode="min", save_best_only=True,
        save_weights_only=True, initial_value_threshold=best))
    if config["early_stopping"]:
        callbacks.append(ResumableEarlyStopping(
            previous, monitor=watched, mode="min", patience=config["early_stopping"],
            start_from_epoch=config["kl_warmup"], verbose=1))
    callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"),
                                                 write_graph=False, profile_batch=0))
    if config.get("strategy") == "multiworker":  # the chief writes, every worker restores
        callbacks.append(distribute.BackupAndRestore(os.path.join(backup_root, BACKUP_DIR),
                                                     delete_checkpoint=False))
    else:
        callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(run_dir, BACKUP_DIR),
                                                          double_checkpoint=True,
                                                          delete_checkpoint=False))
    return callbacks, stop_on_nan


def train(config, run_dir, overwrite=False, verbose=1):
    """Trains (or resumes) the run `config` describes in `run_dir`, then evaluates it on the test
    split and draws its pictures.

    Args:
        config: from `make_config`.
        run_dir: the run directory (see the module docstring).
        overwrite: replace an existing run in `run_dir` (only if it is a keras-vae run).
        verbose: Keras verbosity (1: progress bar).

    Returns:
        The summary dict written to summary.json: test metrics (nats per example), epochs
        trained, whether it resumed or stopped early, wall time in seconds.

    Raises:
        FileExistsError: see `prepare_run_dir`. TrainingDiverged: the loss became NaN/inf.
    """
    started = time.time()
    # Strategy first: a multi-worker cluster must form before other TensorFlow work.
    strategy = distribute.get_strategy(config.get("strategy", "default"))
    backup_root = run_dir
    if not distribute.is_chief(strategy):  # other workers keep their files apart
        task_type, task_id, _ = distribute._task(strategy)
        run_dir = os.path.join(run_dir, f"{task_type}-{task_id}")
    previous_policy = keras.mixed_precision.dtype_policy().name
    distribute.set_mixed_precision(config.get("mixed_precision"))
    try:
        return _train(config, run_dir, overwrite, verbose, strategy, backup_root, started)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def _train(config, run_dir, overwrite, verbose, strategy, backup_root, started):
    state = prepare_run_dir(run_dir, config, overwrite)
    keras.utils.set_random_seed(config["seed"])
    model_path = os.path.join(run_dir, MODEL_FILE)
    resumed_from = 0
    if os.path.exists(model_path):  # killed after training, before the summary
        print(f"{run_dir}: training had finished; loading {MODEL_FILE} to finish the run.")
        vae = keras.saving.load_model(model_path)
        stopped_early = False
    else:
        resumed_from = _backup_epoch(run_dir) if state == "resume" else 0
        _truncate_history(run_dir, resumed_from)
        if resumed_from:
            print(f"Resuming {run_dir} after epoch {resumed_from} of {config['epochs']} "
                  f"(state from {os.path.join(run_dir, BACKUP_DIR)}).")
        train_ds = datasets.load(config["dataset"], "train", batch_size=config["batch_size"],
                                 shuffle=True, binarize=config["binarize"], seed=config["seed"],
                                 **_data_options(config))
        valid_ds = load_split(config, "valid")
        with strategy.scope():
            vae = build_model(config)
        callbacks, stop_on_nan = _callbacks(config, run_dir, read_history(run_dir), backup_root)
        vae.fit(train_ds, epochs=config["epochs"], validation_data=valid_ds,
                callbacks=callbacks, verbose=verbose, shuffle=False)  # shuffled by tf.data
        if stop_on_nan.stopped_at is not None:
            epoch, batch = stop_on_nan.stopped_at
            raise TrainingDiverged(
                f"the loss became NaN or infinite at epoch {epoch + 1}, batch {batch + 1}; "
                f"training stopped. Lower --lr (now {config['lr']:g}) or check the data, then "
                "rerun with --overwrite.")
        history = read_history(run_dir)
        stopped_early = len(history.get("epoch", [])) < config["epochs"]
        best_path = os.path.join(run_dir, BEST_WEIGHTS)
        if os.path.exists(best_path):
            vae.load_weights(best_path)
        vae.beta.assign(vae.beta_target)  # the saved model's loss is the configured one
        distribute.save_model(vae, model_path, strategy)  # only the chief writes elsewhere
        shutil.rmtree(os.path.join(run_dir, BACKUP_DIR), ignore_errors=True)

    metrics = evaluate_model(vae, config, "test")
    watched = monitor(config)
    pictures = draw_pictures(vae, config, run_dir)
    history = read_history(run_dir)
    summary = dict(test=metrics, epochs_trained=len(history.get("epoch", [])),
                   resumed_from_epoch=resumed_from, stopped_early=stopped_early,
                   best_epoch=(int(np.nanargmin(history[watched])) + 1
                               if history.get(watched) else None),
                   pictures=pictures, seconds=round(time.time() - started, 1))
    write_json(os.path.join(run_dir, SUMMARY_FILE), summary)
    return summary


def evaluate_model(vae, config, split="test"):
    """-ELBO and its terms on a split: dict with neg_elbo, reconstruction, kl (nats per example,
    one Monte Carlo draw of z per example unless num_samples > 1), loss, num_examples."""
    ds = load_split(config, split, batch_size=500)
    vae.reset_metrics()
    result = vae.evaluate(ds, return_dict=True, verbose=0)
    num = sum(int(b.shape[0]) for b in ds)
    out = {k: float(result[k]) for k in ("neg_elbo", "reconstruction", "kl", "loss")}
    out["num_examples"] = num
    out["split"] = split
    return out


def draw_pictures(vae, config, run_dir, n_images=16):
    """Writes the run's PNGs into `run_dir` and returns their file names."""
    written = []
    history = read_history(run_dir)
    if history:
        plots.save_training_curves(history, os.path.join(run_dir, "curves.png"))
        written.append("curves.png")
    x, labels = load_split(config, "test", limit=2000, numpy=True)
    z_mean = vae.encode(x)[0]
    plots.save_latent_scatter(z_mean, labels, os.path.join(run_dir, "latent.png"))
    written.append("latent.png")
    image_shape = config["image_shape"]
    if image_shape is not None:
        originals = x[:n_images]
        recon = vae.reconstruct(originals)
        plots.save_reconstructions(plots.as_images(originals, image_shape),
                                   plots.as_images(recon, image_shape),
                                   os.path.join(run_dir, "reconstructions.png"))
        samples = vae.sample(64, seed=config["seed"])
        plots.save_image_grid(plots.as_images(samples, image_shape),
                              os.path.join(run_dir, "samples.png"), ncols=8)
        written += ["reconstructions.png", "samples.png"]
        if vae.latent_dim == 2:
            plots.save_latent_manifold(vae.decode, image_shape,
                                       os.path.join(run_dir, "manifold.png"))
            written.append("manifold.png")
    return written


def load_run(run_dir):
    """(vae, config) of a trained run directory."""
    config_path = os.path.join(run_dir, CONFIG_FILE)
    model_path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{run_dir} is not a keras-vae run directory: no {CONFIG_FILE}.")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{run_dir} has no {MODEL_FILE} yet: its training has not "
                                "finished. Rerun the same `keras-vae train` command to resume.")
    return keras.saving.load_model(model_path), read_json(config_path)


# ============================================================================ commands
def _hidden_units(text):
    try:
        return [int(u) for u in text.split(",")]
    except ValueError:
        raise ValueError(f"--hidden-units must be integers separated by commas, e.g. 512,256; "
                         f"got {text!r}.") from None


def _scale(text):
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"--scale must be auto, none or a positive number, got {text!r}.")
    return value


def _check_out(path, overwrite, suffixes=(".png",)):
    if not path.lower().endswith(suffixes):
        raise ValueError(f"--out {path}: expected a file name ending in {' or '.join(suffixes)}.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The folder of --out {path} does not exist: {parent}")


def run_train(args):
    config = make_config(
        args.dataset, model=args.model, latent_dim=args.latent_dim, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, beta=args.beta, kl_warmup=args.kl_warmup,
        num_samples=args.num_samples, posterior=args.posterior, likelihood=args.likelihood,
        objective=args.objective,
        hidden_units=None if args.hidden_units is None else _hidden_units(args.hidden_units),
        binarize=None if args.binarize == "none" else args.binarize, scale=_scale(args.scale),
        seed=args.seed, early_stopping=args.early_stopping, data_dir=args.data_dir,
        strategy=args.strategy, mixed_precision=args.mixed_precision)
    run_dir = args.run_dir or os.path.join(
        "runs", f"{os.path.basename(config['dataset']).split('.')[0].replace('/', '-')}-"
                f"{config['model']}-k{config['latent_dim']}")
    try:
        summary = train(config, run_dir, overwrite=args.overwrite)
    except TrainingDiverged as err:
        print(f"keras-vae train: error: {err}", file=sys.stderr)
        return 1
    test = summary["test"]
    print(f"Run directory: {run_dir} (pictures: {', '.join(summary['pictures'])})")
    print(f"test -ELBO: {test['neg_elbo']:.3f} nats per example (reconstruction "
          f"{test['reconstruction']:.3f}, KL {test['kl']:.3f}; {test['num_examples']} examples, "
          f"{summary['epochs_trained']} epochs)")
    return 0


def run_evaluate(args):
    if args.nll_samples < 0:
        raise ValueError(f"--nll-samples must be >= 0 (0 skips the NLL), got {args.nll_samples}.")
    vae, config = load_run(args.run_dir)
    metrics = evaluate_model(vae, config, args.split)
    if args.nll_samples:
        from keras_vae import evaluation

        x, _ = load_split(config, args.split, numpy=True)
        log_px = evaluation.log_likelihood(vae, x, num_samples=args.nll_samples, seed=args.seed)
        metrics.update(evaluation.nll_summary(log_px, int(np.prod(x.shape[1:]))),
                       nll_samples=args.nll_samples, seed=args.seed)
    name = "evaluation.json" if args.split == "test" else f"evaluation-{args.split}.json"
    write_json(os.path.join(args.run_dir, name), metrics)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _image_shape(config):
    if config["image_shape"] is None:
        raise ValueError(f"The data of this run ({config['dataset']}, examples shaped "
                         f"{tuple(config['input_shape'])}) are not images; write --out FILE.npy.")
    return config["image_shape"]


def run_sample(args):
    _check_out(args.out, args.overwrite, (".png", ".npy"))
    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}.")
    vae, config = load_run(args.run_dir)
    samples = vae.sample(args.n, seed=args.seed)
    if args.out.lower().endswith(".npy"):
        np.save(args.out, samples)
    else:
        plots.save_image_grid(plots.as_images(samples, _image_shape(config)), args.out)
    print(f"Wrote {args.n} samples from the prior to {args.out}")
    return 0


def run_reconstruct(args):
    _check_out(args.out, args.overwrite)
    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}.")
    vae, config = load_run(args.run_dir)
    image_shape = _image_shape(config)
    x, _ = load_split(config, args.split, limit=args.n, numpy=True)
    plots.save_reconstructions(plots.as_images(x, image_shape),
                               plots.as_images(vae.reconstruct(x), image_shape), args.out)
    print(f"Wrote {len(x)} {args.split} images (top) and their reconstructions (bottom) "
          f"to {args.out}")
    return 0


def add_commands(subparsers):
    """Adds train, evaluate, sample and reconstruct to the `keras-vae` parser."""
    p = subparsers.add_parser(
        "train", help="train a VAE into a run directory",
        description="Train a VAE, evaluate it on the test split and draw its pictures. Rerun "
                    "the same command to resume an interrupted run.")
    p.add_argument("--dataset", default="digits",
                   help=f"{', '.join(datasets.known_names())}, or a .npz / IDX file or folder "
                        "(default: digits, bundled, offline)")
    p.add_argument("--model", choices=MODELS, default="kingma-welling")
    p.add_argument("--latent-dim", type=int, default=2, help="K, the size of z (default 2)")
    p.add_argument("--hidden-units", default=None,
                   help="comma-separated hidden layer sizes (filters for conv); default "
                        + "; ".join(f"{m}: {','.join(map(str, h))}"
                                    for m, h in DEFAULT_HIDDEN.items()))
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (1: the ELBO)")
    p.add_argument("--kl-warmup", type=int, default=0, metavar="EPOCHS",
                   help="ramp beta from 0 to --beta over this many epochs")
    p.add_argument("--num-samples", type=int, default=1, metavar="L",
                   help="Monte Carlo samples of z per example")
    p.add_argument("--objective", choices=OBJECTIVES, default="elbo",
                   help="train on the ELBO, or on the importance-weighted bound (Burda et al.) "
                        "with k = --num-samples; iwae_dreg: that bound with doubly "
                        "reparameterized encoder gradients (Tucker et al.)")
    p.add_argument("--posterior", choices=("diagonal", "full"), default="diagonal")
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli")
    p.add_argument("--binarize", choices=("none", "static", "dynamic"), default="none",
                   help="Bernoulli draws of the pixels: once (static) or every epoch (dynamic)")
    p.add_argument("--scale", default="auto",
                   help="divide pixels by this number; auto: by the source's maximum; none")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better validation -ELBO")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="tf.distribute strategy: mirrored (this machine's devices) or "
                        "multiworker (reads TF_CONFIG; run the same command on every worker "
                        "with a shared --run-dir). --batch-size is the global batch.")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISION[1:], default=None,
                   help="compute the networks in 16 bits; KL and likelihood stay float32")
    p.add_argument("--data-dir", default=None, help="TFDS data directory")
    p.add_argument("--run-dir", default=None,
                   help="where the run is written (default runs/DATASET-MODEL-kK)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run in --run-dir")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("evaluate", help="-ELBO, reconstruction and KL of a trained run",
                              description="Print (and save to RUN_DIR/evaluation.json) -ELBO, "
                                          "reconstruction error and KL in nats per example, "
                                          "and with --nll-samples the importance-weighted "
                                          "NLL and bits per dimension.")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=datasets.SPLITS, default="test")
    p.add_argument("--nll-samples", type=int, default=0, metavar="K",
                   help="also estimate -ln p(x) by importance sampling with K samples per "
                        "example (5000 is the literature's standard; 0: skip)")
    p.add_argument("--seed", type=int, default=0, help="seed of the NLL estimate")
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser("sample", help="draw samples from the prior as a PNG grid")
    p.add_argument("run_dir")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--out", required=True, help="output .png (a grid) or .npy (the array)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_sample)

    p = subparsers.add_parser("reconstruct", help="images above their reconstructions, as PNG")
    p.add_argument("run_dir")
    p.add_argument("-n", type=int, default=16, help="number of images")
    p.add_argument("--split", choices=datasets.SPLITS, default="test")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_reconstruct)

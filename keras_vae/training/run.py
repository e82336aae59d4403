"""Training a run configuration into a run directory, then evaluating it and drawing its
pictures."""

import contextlib
import math
import os
import shutil
import time

import keras

from keras_vae import compat, datasets, distribute, plots
from keras_vae.callbacks import (
    BestCheckpoint,
    CollapseDiagnostics,
    HistoryLogger,
    KLWarmup,
    ResumableEarlyStopping,
    StopOnNaN,
    TimeLimit,
)
from keras_vae.training.config import (
    build_model,
    data_options,
    load_split,
    make_config,
    monitor,
)
from keras_vae.training.recipe import Recipe, upgrade_config
from keras_vae.training.runs import (
    BACKUP_DIR,
    BEST_WEIGHTS,
    HISTORY_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    backup_epoch,
    finished_model,
    prepare_run_dir,
    read_history,
    run_lock,
    truncate_history,
    write_json,
)


# Validation examples of the per-epoch posterior-collapse diagnostics (CollapseDiagnostics)
COLLAPSE_SAMPLE = 500


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite and training was stopped."""


# ============================================================================ training
def _callbacks(config, run_dir, history, backup_root=None):
    """The callbacks of a run, in the order Keras must call them, and the ones `_train` reads
    afterwards: (callbacks, stop_on_nan, early_stopping or None, time_limit)."""
    watched = monitor(config)
    warmup = config["kl_warmup"] or 0
    previous = history.get(watched, [])
    best = min((v for i, v in enumerate(previous) if math.isfinite(v) and i >= warmup),
               default=None)
    callbacks = []
    if warmup:
        callbacks.append(KLWarmup(warmup))
    stop_on_nan = StopOnNaN()
    callbacks.append(stop_on_nan)
    # CSVLogger before BackupAndRestore: once an epoch's backup exists, its row is written.
    callbacks.append(HistoryLogger(os.path.join(run_dir, HISTORY_FILE)))  # atomic rewrites
    if config.get("strategy") == "multiworker":  # the chief writes, every worker restores
        backup = distribute.BackupAndRestore(os.path.join(backup_root, BACKUP_DIR),
                                             delete_checkpoint=False)
    else:
        backup = keras.callbacks.BackupAndRestore(os.path.join(run_dir, BACKUP_DIR),
                                                  double_checkpoint=True,
                                                  delete_checkpoint=False)
    if config["ema_momentum"]:
        # Polyak averaging: validate on the moving average of the weights and keep it as the
        # model at each epoch's end, so the checkpoint and early stopping see averaged
        # weights. The backup comes first: it stores the raw weights (and the average in the
        # optimizer), which is what a resumed run continues from.
        callbacks += [backup, keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]
    callbacks.append(BestCheckpoint(
        os.path.join(run_dir, BEST_WEIGHTS), start_from_epoch=warmup, monitor=watched,
        mode="min", save_best_only=True, save_weights_only=True, initial_value_threshold=best))
    stopper = None
    if config["patience"]:
        stopper = ResumableEarlyStopping(previous, monitor=watched, mode="min",
                                         patience=config["patience"], start_from_epoch=warmup,
                                         verbose=1)
        callbacks.append(stopper)
    if config["reduce_lr_patience"]:
        # Lower the learning rate when the monitored validation number stalls (the rate itself
        # is in the optimizer's state, so a resumed run keeps it).
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=watched, mode="min", factor=config["reduce_lr_factor"],
            patience=config["reduce_lr_patience"], min_lr=config["min_learning_rate"]))
    time_limit = TimeLimit(config.get("time_limit"))
    callbacks.append(time_limit)
    callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"),
                                                 write_graph=False, profile_batch=0))
    # Posterior-collapse numbers of a fixed validation sample, beside TensorBoard's curves
    # (logs/collapse); after HistoryLogger, so history.csv keeps its columns.
    sample, _ = load_split(config, "valid", limit=COLLAPSE_SAMPLE, numpy=True)
    if len(sample) >= 2:
        callbacks.append(CollapseDiagnostics(sample, os.path.join(run_dir, "logs", "collapse"),
                                             seed=config["seed"]))
    if not config["ema_momentum"]:
        callbacks.append(backup)
    return callbacks, stop_on_nan, stopper, time_limit


def best_epoch(history, watched, warmup=0):
    """The epoch (from 1) whose weights a run keeps: the lowest `watched` value after the
    warm-up, or the last epoch when training ended inside it; None without history."""
    values = history.get(watched) or []
    if not values:
        return None
    after = [(v, i) for i, v in enumerate(values) if i >= warmup and math.isfinite(v)]
    return min(after)[1] + 1 if after else len(values)


def train(config, run_dir, overwrite=False, verbose=1):
    """Trains (or resumes) a recipe in `run_dir`, then evaluates it on the test split and draws
    its pictures. The one training path: `keras-vae train`, `keras-vae zoo build` and the
    Python API come here.

    Args:
        config: a `Recipe`, or the dict of `make_config` (a run's config.json, older
            spellings too).
        run_dir: the run directory (see the package docstring).
        overwrite: replace an existing run in `run_dir` (only if it is a keras-vae run).
        verbose: Keras verbosity (1: progress bar, 2: one line per epoch).

    Returns:
        The summary dict written to summary.json: test metrics (nats per example), epochs
        trained, best epoch, what stopped training ("early_stopping", "time_limit",
        "max_epochs"), the final learning rate, whether it resumed, wall times in seconds.

    Raises:
        FileExistsError: see `prepare_run_dir`. TrainingDiverged: the loss became NaN/inf.
    """
    if isinstance(config, Recipe) or "input_shape" not in config or \
            config.get("input_shape") is None:
        config = make_config(recipe=config if isinstance(config, Recipe)
                             else Recipe.from_dict(config))
    else:
        config = upgrade_config(config)
    started = time.time()
    # Strategy first: a multi-worker cluster must form before other TensorFlow work.
    strategy = distribute.get_strategy(config.get("strategy", "default"))
    backup_root = run_dir
    if not distribute.is_chief(strategy):  # other workers keep their files apart
        task_type, task_id, _ = distribute.task_of(strategy)
        run_dir = os.path.join(run_dir, f"{task_type}-{task_id}")
    previous_policy = keras.mixed_precision.dtype_policy().name
    distribute.set_mixed_precision(config.get("mixed_precision"))
    determinism = compat.deterministic_ops() if config.get("deterministic") else \
        contextlib.nullcontext()
    try:
        with run_lock(run_dir), determinism:  # one writer per run directory
            return _train(config, run_dir, overwrite, verbose, strategy, backup_root, started)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def _train(config, run_dir, overwrite, verbose, strategy, backup_root, started):
    state = prepare_run_dir(run_dir, config, overwrite)
    keras.utils.set_random_seed(config["seed"])
    model_path = os.path.join(run_dir, MODEL_FILE)
    resumed_from = 0
    train_seconds = 0.0
    vae = finished_model(run_dir, config)  # killed after training: loaded, or repaired
    if vae is not None:
        stopped_by = None
        optimizer = getattr(vae, "optimizer", None)
        final_learning_rate = (None if optimizer is None else
                               float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    else:
        resumed_from = backup_epoch(run_dir) if state == "resume" else 0
        truncate_history(run_dir, resumed_from)
        if resumed_from:
            print(f"Resuming {run_dir} after epoch {resumed_from} of {config['epochs']} "
                  f"(state from {os.path.join(run_dir, BACKUP_DIR)}).")
        train_ds = datasets.load(config["dataset"], "train", batch_size=config["batch_size"],
                                 shuffle=True, binarize=config["binarize"], seed=config["seed"],
                                 **data_options(config))
        valid_ds = load_split(config, "valid")
        with strategy.scope():
            vae = build_model(config)
        callbacks, stop_on_nan, stopper, limit = _callbacks(
            config, run_dir, read_history(run_dir), backup_root)
        fit_started = time.perf_counter()
        vae.fit(train_ds, epochs=config["epochs"], validation_data=valid_ds,
                callbacks=callbacks, verbose=verbose, shuffle=False)  # shuffled by tf.data
        train_seconds = time.perf_counter() - fit_started
        # before the best epoch's checkpoint (which holds the optimizer's state) is loaded
        final_learning_rate = float(keras.ops.convert_to_numpy(vae.optimizer.learning_rate))
        if stop_on_nan.stopped_at is not None:
            epoch, batch = stop_on_nan.stopped_at
            raise TrainingDiverged(
                f"the loss became NaN or infinite at epoch {epoch + 1}, batch {batch + 1}; "
                f"training stopped. Lower --lr (now {config['learning_rate']:g}) or check the "
                "data, then rerun with --overwrite.")
        history = read_history(run_dir)
        if stopper is not None and stopper.stopped_epoch:
            stopped_by = "early_stopping"
        elif limit.hit:
            stopped_by = "time_limit"
        elif len(history.get("epoch", [])) < config["epochs"]:
            stopped_by = "early_stopping"  # stopped in an earlier, resumed part of the run
        else:
            stopped_by = "max_epochs"
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
                   resumed_from_epoch=resumed_from, stopped_early=stopped_by not in
                   (None, "max_epochs"), stopped_by=stopped_by,
                   best_epoch=best_epoch(history, watched, config["kl_warmup"] or 0),
                   final_learning_rate=final_learning_rate,
                   pictures=pictures, train_seconds=round(train_seconds, 1),
                   seconds=round(time.time() - started, 1))
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

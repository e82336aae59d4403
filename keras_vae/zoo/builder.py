"""`keras-vae zoo build`: training a recipe reproducibly and measuring it."""

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from keras_vae import __version__
from keras_vae.files import file_sha256
from keras_vae.zoo.loader import construct, count_parameters
from keras_vae.zoo.registry import DATASETS, get_entry

MAX_FILE_BYTES = 5 * 2 ** 20


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

    entry = get_entry(name, released=False)
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
    vae = construct(entry, seed=recipe["seed"], name=name)
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
        from keras_vae.callbacks import KLWarmup

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
    release = construct(entry, name=name)
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
        "parameters": count_parameters(vae),
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

"""`keras-vae zoo build`: training a recipe reproducibly and measuring it."""

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from keras_vae import compat
from keras_vae.datasets.splits import load_splits
from keras_vae.files import file_sha256
from keras_vae.training.config import load_split
from keras_vae.version import __version__
from keras_vae.zoo.loader import construct, count_parameters
from keras_vae.zoo.recipes import recipe_from_entry
from keras_vae.zoo.registry import get_entry

MAX_FILE_BYTES = 5 * 2 ** 20


# --------------------------------------------------------------------------------- data
def load_data(dataset, data=None):
    """The train/valid/test arrays of a zoo dataset: `keras_vae.datasets.splits.load_splits`
    (kept under its old name)."""
    return load_splits(dataset, data)


# --------------------------------------------------------------------------------- build
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
          time_limit=None, nll_samples=None, nll_examples=None, verbose="auto", run_dir=None):
    """Trains a zoo recipe reproducibly, measures it, writes its weight file.

    The recipe (`keras_vae.zoo.recipes.recipe_from_entry`) is trained by
    `keras_vae.training.train`, the one training path, into a run directory (TensorBoard logs,
    history, pictures; a killed build resumes when run again with the same run directory).
    Everything is seeded with the recipe's seed and TensorFlow's deterministic ops are on for
    the build (the process's setting is restored afterwards), so the same command on the same
    software and hardware writes the same file. Training minimizes the VAE's objective (-ELBO,
    or the IWAE bound for a config with objective "iwae" or "iwae_dreg") with Adam, lowers the
    learning rate when the monitored validation number stalls if the recipe says so (keys
    reduce_lr_patience, reduce_lr_factor, min_learning_rate; the entry records the final rate)
    and stops early on it, keeping the best epoch's weights. That number is
    `model.monitored_metric` of the model's objective: "val_neg_elbo", or "val_loss" (the
    validation bound) for IWAE recipes. With `kl_warmup_epochs` the KL weight ramps from 0 to 1
    over those epochs (`KLWarmup`) and early stopping and the best epoch count only the epochs
    after (a build ending inside the warm-up keeps its last epoch). With `ema_momentum` Adam
    keeps a moving average of the weights (Polyak averaging), which is what is validated,
    kept and saved. The test numbers use `keras_vae.evaluation` (ELBO with several posterior
    samples per example, importance-weighted NLL with k samples); the entry records the
    software and hardware.

    Args:
        name: a registry name (released or not).
        data: the data set file (binarized_mnist .npz); None for digits.
        out: folder for `<name>.weights.h5`.
        overwrite: replace an existing weight file (otherwise FileExistsError), and a finished
            run in `run_dir`.
        max_epochs, patience: override the recipe's limits (recorded in the entry).
        time_limit: seconds of training after which it stops at the end of the epoch.
        nll_samples: k for the test NLL (default the recipe's, 5000; 0 skips the NLL).
        nll_examples: measure the NLL on n evenly spaced test examples only (every
            (N // n)-th; recorded, with the -ELBO of the same examples).
        verbose: 0, 1 (progress bars), 2 (a line per epoch) or "auto" (1 on a terminal).
        run_dir: the run directory to train in (`keras-vae zoo build` uses runs/zoo/NAME);
            None: a temporary one, deleted afterwards.

    Returns:
        dict: the registry entry (recipe and measured fields: sha256, size_bytes, parameters,
        training, results), JSON-serializable.
    """
    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix=f"zoo-build-{name}-") as tmp:
            return build(name, data=data, out=out, overwrite=overwrite, max_epochs=max_epochs,
                         patience=patience, time_limit=time_limit, nll_samples=nll_samples,
                         nll_examples=nll_examples, verbose=verbose,
                         run_dir=os.path.join(tmp, "run"))
    import keras

    from keras_vae.training import load_run, train

    entry = get_entry(name, released=False)
    settings = dict(entry["train"])
    if max_epochs is not None:
        settings["max_epochs"] = int(max_epochs)
    if patience is not None:
        settings["patience"] = int(patience)
    if nll_samples is not None:
        settings["nll_samples"] = int(nll_samples)
    if nll_examples is not None:
        settings["nll_examples"] = int(nll_examples)
    if settings.get("nll_examples") is not None and settings["nll_examples"] < 1:
        raise ValueError(f"--nll-examples must be >= 1, got {settings['nll_examples']}.")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    target = Path(out) / entry["file"]
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it.")

    recipe = recipe_from_entry({**entry, "train": settings}, data)
    if time_limit is not None:
        recipe = recipe.replace(time_limit=float(time_limit))
    summary = train(recipe, str(run_dir), overwrite=overwrite, verbose=verbose)
    vae, config = load_run(str(run_dir))
    valid, test = (load_split(config, split, numpy=True)[0] for split in ("valid", "test"))

    start = time.perf_counter()
    with compat.deterministic_ops():
        results = _measure(vae, valid, test, settings, verbose)
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
        command += f" --data {Path(data).name}"  # the file's name, not where it lay
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
            "epochs": summary["epochs_trained"],
            "best_epoch": summary["best_epoch"],
            "stopped_by": summary["stopped_by"] or "max_epochs",
            "max_epochs": settings["max_epochs"],
            "patience": settings["patience"],
            **({"final_learning_rate": summary["final_learning_rate"]}
               if settings.get("reduce_lr_patience") else {}),
            "train_wall_time_s": summary["train_seconds"],
            "eval_wall_time_s": round(eval_seconds, 1),
            "software": f"keras {keras.__version__}, {keras.backend.backend()} backend, "
                        f"keras-vae {__version__}",
            "hardware": hardware(),
        },
        "results": results,
    }
    return {**json.loads(json.dumps(entry)), **measured}


def _measure(vae, valid, test, settings, verbose):
    """The entry's `results`: test -ELBO (several posterior samples per example), its terms,
    the validation -ELBO and the importance-weighted test NLL (on a subset if asked)."""
    from keras_vae import evaluation

    parts = evaluation.elbo(vae, test, num_samples=settings["neg_elbo_samples"], seed=0,
                            verbose=0)
    val_parts = evaluation.elbo(vae, valid, num_samples=settings["neg_elbo_samples"], seed=0,
                                verbose=0)
    results = {
        "test_neg_elbo": round(float(-parts.elbo.mean()), 3),
        "test_neg_elbo_stderr": round(float(parts.elbo.std() / math.sqrt(len(test))), 3),
        "test_reconstruction": round(float(parts.reconstruction.mean()), 3),
        "test_kl": round(float(parts.kl.mean()), 3),
        "neg_elbo_samples": settings["neg_elbo_samples"],
        "valid_neg_elbo": round(float(-val_parts.elbo.mean()), 3),
        "test_examples": int(len(test)),
    }
    k = settings["nll_samples"]
    if k:
        subset = _nll_subset(len(test), settings.get("nll_examples"))
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
    return results

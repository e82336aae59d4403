"""The `train`, `evaluate`, `sample` and `reconstruct` commands of `keras-vae`."""

import json
import os
import sys

import numpy as np

from keras_vae import likelihoods, plots
from keras_vae.files import atomic_path
from keras_vae.training import tabular
from keras_vae.training.config import load_split, make_config
from keras_vae.training.run import TrainingDiverged, evaluate_model, train
from keras_vae.training.runs import load_run, write_json


# ============================================================================ commands
def _hidden_units(text):
    try:
        return [int(u) for u in text.split(",")]
    except ValueError:
        raise ValueError(f"--hidden-units must be integers separated by commas, e.g. 512,256; "
                         f"got {text!r}.") from None


def _latent_dims(args):
    """--latent-dims K1,K2: (latent_dim, model_options) of a two-layer model, else
    (--latent-dim or 2, {})."""
    latent_dim = 2 if args.latent_dim is None else args.latent_dim
    text = getattr(args, "latent_dims", None)
    if text is None:
        return latent_dim, {}
    try:
        dims = [int(k) for k in text.split(",")]
    except ValueError:
        dims = []
    if len(dims) != 2 or min(dims) < 1:
        raise ValueError(f"--latent-dims must be two positive integers K1,K2 (the sizes of z1 "
                         f"and z2), e.g. 32,16; got {text!r}.")
    if args.latent_dim is not None and args.latent_dim != dims[0]:
        raise ValueError(f"--latent-dim {args.latent_dim} disagrees with --latent-dims {text} "
                         "(whose first number is the size of z1); give --latent-dims alone.")
    if args.model not in ("mlp", "conv"):
        raise ValueError(f"--latent-dims builds a two-layer model from --model mlp or conv, "
                         f"not {args.model}.")
    return dims[0], {"latent_dims": dims}


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


# `train` options that only a table (training.tabular) reads, with their unset values
_TABLE_ONLY = {"columns": None, "label_column": None, "impute": None, "contamination": None}


def run_train(args):
    if tabular.is_table(args.dataset):
        return tabular.train_table(args)
    for name, unset in _TABLE_ONLY.items():
        if getattr(args, name, unset) != unset:
            raise ValueError(f"--{name.replace('_', '-')} applies to tables (CSV, TSV, Parquet, "
                             f".npz with X) only; {args.dataset} is not one.")
    likelihood = args.likelihood or "bernoulli"
    if likelihood in likelihoods.TWO_PARAMETER:
        raise ValueError(f"--likelihood {likelihood} is for tables only; images take bernoulli "
                         "or gaussian.")
    latent_dim, model_options = _latent_dims(args)
    config = make_config(
        args.dataset, model=args.model, latent_dim=latent_dim, model_options=model_options,
        epochs=50 if args.epochs is None else args.epochs,
        batch_size=args.batch_size, lr=args.lr, beta=args.beta, kl_warmup=args.kl_warmup,
        num_samples=args.num_samples, posterior=args.posterior, likelihood=likelihood,
        objective=args.objective, prior=getattr(args, "prior", "standard"),
        prior_components=getattr(args, "prior_components", None),
        free_bits=getattr(args, "free_bits", 0.0),
        hidden_units=None if args.hidden_units is None else _hidden_units(args.hidden_units),
        binarize=None if args.binarize == "none" else args.binarize, scale=_scale(args.scale),
        seed=args.seed, early_stopping=args.early_stopping, data_dir=args.data_dir,
        strategy=args.strategy, mixed_precision=args.mixed_precision,
        ema_momentum=args.ema_momentum, reduce_lr_patience=args.reduce_lr_patience,
        reduce_lr_factor=args.reduce_lr_factor, min_learning_rate=args.min_lr,
        time_limit=args.time_limit, deterministic=args.deterministic,
        allow_large=args.allow_large)
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
    examples = getattr(args, "diagnostics_examples", 0)
    if examples < 0 or examples == 1:
        raise ValueError(f"--diagnostics-examples must be 0 (skip) or >= 2 (a variance over "
                         f"examples), got {examples}.")
    vae, config = load_run(args.run_dir)
    metrics = evaluate_model(vae, config, args.split)
    if args.nll_samples:
        from keras_vae import evaluation

        x, _ = load_split(config, args.split, numpy=True)
        log_px = evaluation.log_likelihood(vae, x, num_samples=args.nll_samples, seed=args.seed)
        metrics.update(evaluation.nll_summary(log_px, int(np.prod(x.shape[1:]))),
                       nll_samples=args.nll_samples, seed=args.seed)
    if examples:
        from keras_vae import evaluation

        x, _ = load_split(config, args.split, limit=examples, numpy=True)
        metrics["collapse"] = evaluation.collapse_report(vae, x, seed=args.seed)
        print(evaluation.format_collapse_report(metrics["collapse"]), file=sys.stderr)
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
        with atomic_path(args.out) as tmp:  # a temporary name, then os.replace
            np.save(tmp, samples)
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

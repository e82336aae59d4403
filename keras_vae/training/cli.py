"""The `train`, `evaluate`, `sample` and `reconstruct` commands of `keras-vae`."""

import json
import os
import sys

import numpy as np

from keras_vae import datasets, plots
from keras_vae.files import atomic_path
from keras_vae.model import OBJECTIVES
from keras_vae.training.config import (
    DEFAULT_HIDDEN,
    MIXED_PRECISION,
    MODELS,
    STRATEGIES,
    load_split,
    make_config,
)
from keras_vae.training.run import TrainingDiverged, evaluate_model, train
from keras_vae.training.runs import load_run, write_json


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
        strategy=args.strategy, mixed_precision=args.mixed_precision,
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
    p.add_argument("--allow-large", action="store_true",
                   help="accept sizes above the sanity limits (e.g. --latent-dim above 4096, "
                        "--epochs above 100000)")
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

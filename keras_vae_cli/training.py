"""Arguments of `keras-vae train`, `evaluate`, `sample` and `reconstruct` (their handlers:
keras_vae/training/cli.py)."""

from keras_vae_cli.constants import (
    BINARIZE,
    DATASET_NAMES,
    DEFAULT_CONTAMINATION,
    DEFAULT_HIDDEN,
    DETECTOR_SCORES,
    MIXED_PRECISION,
    MODELS,
    OBJECTIVES,
    PRIORS,
    SPLITS,
    STRATEGIES,
    TABLE_LIKELIHOODS,
)


def contamination(text):
    """--contamination: a share of rows in (0, 0.5]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 0.5:
        raise ValueError(f"--contamination must be a number in (0, 0.5], got {text}.")
    return value


def add_commands(subparsers):
    """Adds train, evaluate, sample and reconstruct to the `keras-vae` parser."""
    p = subparsers.add_parser(
        "train", help="train a VAE into a run directory",
        description="Train a VAE, evaluate it on the test split and draw its pictures. Rerun "
                    "the same command to resume an interrupted run.")
    p.add_argument("--dataset", default="digits",
                   help=f"{', '.join(DATASET_NAMES)}, or a .npz / IDX file or folder "
                        "(default: digits, bundled, offline)")
    p.add_argument("--model", choices=MODELS, default="kingma-welling")
    p.add_argument("--latent-dim", type=int, default=None,
                   help="K, the size of z (default 2; tables: from the column count)")
    p.add_argument("--latent-dims", default=None, metavar="K1,K2",
                   help="two stochastic layers (keras_vae.HierarchicalVAE, --model mlp or "
                        "conv): the sizes of z1 and z2, e.g. 32,16; replaces --latent-dim")
    p.add_argument("--hidden-units", default=None,
                   help="comma-separated hidden layer sizes (filters for conv); default "
                        + "; ".join(f"{m}: {','.join(map(str, h))}"
                                    for m, h in DEFAULT_HIDDEN.items()))
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs (default 50; tables: at most 300, with early stopping)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--reduce-lr-patience", type=int, default=None, metavar="EPOCHS",
                   help="multiply the learning rate by --reduce-lr-factor whenever the "
                        "validation -ELBO has not improved for this many epochs")
    p.add_argument("--reduce-lr-factor", type=float, default=0.5)
    p.add_argument("--min-lr", type=float, default=1e-5,
                   help="the learning rate is never reduced below this")
    p.add_argument("--ema-momentum", type=float, default=None, metavar="MOMENTUM",
                   help="keep a moving average of the weights (e.g. 0.999): validated, "
                        "checkpointed and saved instead of the raw weights")
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
    p.add_argument("--prior", choices=PRIORS, default="standard",
                   help="p(z): standard N(0, I); vamp: the VampPrior (Tomczak & Welling), a "
                        "mixture of the posteriors of learned pseudo-inputs; mog: a learned "
                        "mixture of Gaussians")
    p.add_argument("--prior-components", type=int, default=None, metavar="C",
                   help="components of a vamp or mog prior (default: vamp 500, mog 10)")
    p.add_argument("--free-bits", type=float, default=0.0, metavar="NATS",
                   help="free bits: floor each latent dimension's batch-mean KL at NATS in "
                        "the training loss (a learned prior: the whole KL at K * NATS)")
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian") + TABLE_LIKELIHOODS,
                   default=None,
                   help="bernoulli or gaussian for images (default bernoulli); student_t "
                        "(default), gaussian_hetero or laplace for tables")
    p.add_argument("--binarize", choices=("none",) + BINARIZE[1:], default="none",
                   help="Bernoulli draws of the pixels: once (static) or every epoch "
                        "(dynamic); or threshold: 1 where the pixel is above 0.5")
    p.add_argument("--scale", default="auto",
                   help="divide pixels by this number; auto: by the source's maximum; none")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better validation -ELBO")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop at the end of the epoch in which this much training time ran out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true",
                   help="TensorFlow's deterministic ops: the same weights on every rerun "
                        "(as `zoo build` trains)")
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
    group = p.add_argument_group(
        "tables", "a CSV/TSV/Parquet file or an .npz with X (and y) as --dataset trains an "
                  "anomaly detector (keras_vae.VAEDetector) instead")
    group.add_argument("--columns", default=None,
                       help="comma-separated feature columns (names or 0-based indices; "
                            "default: all but the label)")
    group.add_argument("--label-column", default=None,
                       help="a column of labels (1 = anomaly): never a feature; only the "
                            "summary's AUROC reads it")
    group.add_argument("--header", choices=("auto", "yes", "no"), default="auto",
                       help="whether the first row of a CSV names the columns")
    group.add_argument("--impute", choices=("median", "mean"), default=None,
                       help="fill missing values with the column's median or mean "
                            "(default: refuse them)")
    group.add_argument("--contamination", type=contamination, default=None,
                       help="share of training rows flagged: sets the stored threshold "
                            f"(default {DEFAULT_CONTAMINATION})")
    group.add_argument("--score", choices=DETECTOR_SCORES, default="elbo",
                       help="-ELBO or importance-weighted -ln p(x)")
    group.add_argument("--n-models", type=int, default=1,
                       help="VAEs (seeds) whose scores are averaged")
    group.add_argument("--max-seconds", type=float, default=60.0,
                       help="time limit of each model's training")
    p.set_defaults(func="keras_vae.training.cli:run_train")

    p = subparsers.add_parser("evaluate", help="-ELBO, reconstruction and KL of a trained run",
                              description="Print (and save to RUN_DIR/evaluation.json) -ELBO, "
                                          "reconstruction error and KL in nats per example, "
                                          "posterior-collapse diagnostics, and with "
                                          "--nll-samples the importance-weighted NLL and "
                                          "bits per dimension.")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--nll-samples", type=int, default=0, metavar="K",
                   help="also estimate -ln p(x) by importance sampling with K samples per "
                        "example (5000 is the literature's standard; 0: skip)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the NLL and mutual-information estimates")
    p.add_argument("--diagnostics-examples", type=int, default=1000, metavar="N",
                   help="posterior-collapse diagnostics (KL per latent dimension, active "
                        "units, mutual information I(x; z)) on the first N examples of the "
                        "split: a table on stderr, the numbers under \"collapse\" in the "
                        "JSON (0: skip)")
    p.set_defaults(func="keras_vae.training.cli:run_evaluate")

    p = subparsers.add_parser("sample", help="draw samples from the prior as a PNG grid")
    p.add_argument("run_dir")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--out", required=True, help="output .png (a grid) or .npy (the array)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func="keras_vae.training.cli:run_sample")

    p = subparsers.add_parser("reconstruct", help="images above their reconstructions, as PNG")
    p.add_argument("run_dir")
    p.add_argument("-n", type=int, default=16, help="number of images")
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func="keras_vae.training.cli:run_reconstruct")

    p = subparsers.add_parser(
        "score", help="anomaly scores and flags of table rows",
        description="Score every row of a table with a run trained on a table; writes a CSV "
                    "with row, score (higher = more anomalous, nats) and flag (score above "
                    "the run's threshold).")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="the table to score (same columns)")
    p.add_argument("--out", required=True, help="output .csv")
    p.add_argument("--contamination", type=contamination, default=None,
                   help="flag this share of the training rows instead of the stored "
                        "threshold's")
    p.add_argument("--threshold", type=float, default=None,
                   help="flag rows whose score is above this instead of the stored threshold")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func="keras_vae.training.tabular:run_score")

"""`keras-vae train` on a table and the `keras-vae score` command: anomaly detection on rows.

    keras-vae train --dataset data.csv --label-column label --run-dir runs/table
    keras-vae score runs/table --data new.csv --out scores.csv

`train` with a CSV/TSV/Parquet file, or an `.npz` holding `X` (and `y`), fits a
`keras_vae.VAEDetector` on every row (a label column is read for the summary only, never as a
feature) and writes the run directory:

    config.json      the options and the feature columns
    detector.json    the detector's parameters, its training scores and `anomaly_threshold`,
                     the score above which a row is flagged (what an exporter embeds)
    model.keras      the VAE (raw rows in: its encoder standardizes, its decoder returns
                     raw-unit locations and scales); model-<i>.keras for further seeds
    history.csv      the training curves of the first model
    summary.json     rows, threshold, flagged share, seconds; with labels AUROC and AUPRC
                     of the training rows' scores

`score` writes one CSV row per input row, in order: `row` (from 1), `score` (higher = more
anomalous, nats) and `flag` (1 where score > the threshold; `--contamination` refits the
threshold to that share of the training rows).
"""

import csv
import json
import os
import shutil
import sys
import time

import numpy as np

from keras_vae import likelihoods
from keras_vae.datasets import tabular
from keras_vae.detector import DETECTOR_FILE, SCORES, VAEDetector

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
DEFAULT_CONTAMINATION = 0.05


def is_table(dataset):
    """Whether `keras-vae train --dataset` names a table file."""
    return isinstance(dataset, str) and tabular.is_table_path(dataset)


def _write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def _header(text):
    return {"auto": "auto", "yes": True, "no": False}[text]


def read_rows(path, config, what="--data"):
    """The feature rows of `path` for a run's `config` (same columns, same reader options)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} not found.")
    names = tabular.column_names(path, header=config["header"])
    label = config["label_column"] if config["label_column"] in names else None
    table = tabular.read_table(path, columns=config["columns"], label_column=label,
                               header=config["header"], impute=config["impute"],
                               allow_constant=True)
    return table


def train_table(args):
    """`keras-vae train` for a table (see the module docstring); returns the exit status."""
    started = time.time()
    run_dir = args.run_dir or os.path.join(
        "runs", os.path.splitext(os.path.basename(args.dataset))[0] + "-detector")
    likelihood = args.likelihood or "student_t"
    if likelihood not in likelihoods.TWO_PARAMETER:
        raise ValueError(f"--likelihood {likelihood} is for images; a table takes one of "
                         f"{', '.join(likelihoods.TWO_PARAMETER)} (default student_t).")
    contamination = DEFAULT_CONTAMINATION if args.contamination is None else args.contamination
    columns = None if args.columns is None else [c for c in args.columns.split(",") if c]
    header = _header(args.header)
    table = tabular.read_table(args.dataset, columns=columns, label_column=args.label_column,
                               header=header, impute=args.impute)
    if os.path.exists(run_dir) and os.listdir(run_dir):
        if not args.overwrite:
            raise FileExistsError(f"{run_dir} exists and is not empty; choose another "
                                  "--run-dir or pass --overwrite to replace a keras-vae run.")
        if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
            raise FileExistsError(f"{run_dir} is not a keras-vae run directory (no "
                                  f"{CONFIG_FILE}); --overwrite never deletes such a folder.")
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    from keras_vae import __version__
    config = dict(dataset=os.path.abspath(args.dataset), kind="table", columns=table.columns,
                  label_column=table.label_column, header=header, impute=args.impute,
                  likelihood=likelihood, contamination=contamination, score=args.score,
                  n_models=args.n_models, seed=args.seed, max_epochs=args.epochs,
                  max_seconds=args.max_seconds, lr=args.lr,
                  latent_dim=args.latent_dim, keras_vae_version=__version__)
    _write_json(os.path.join(run_dir, CONFIG_FILE), config)
    detector = VAEDetector(
        contamination=contamination, likelihood=likelihood, seed=args.seed,
        n_models=args.n_models, score=args.score, max_seconds=args.max_seconds, lr=args.lr,
        latent_dim=args.latent_dim,
        **({} if args.epochs is None else {"max_epochs": args.epochs}),
        verbose=2 if args.verbose else 0)
    detector.fit(table.x)
    detector.save_into(run_dir)
    with open(os.path.join(run_dir, "history.csv.tmp"), "w", newline="") as handle:
        history = detector.history_[0]
        writer = csv.writer(handle)
        writer.writerow(["epoch", *history])
        for epoch, values in enumerate(zip(*history.values())):
            writer.writerow([epoch, *values])
    os.replace(os.path.join(run_dir, "history.csv.tmp"), os.path.join(run_dir, "history.csv"))
    scores = detector.decision_scores_
    summary = dict(rows=int(len(scores)), features=len(table.columns),
                   anomaly_threshold=detector.threshold_, contamination=contamination,
                   flagged=int(detector.labels_.sum()),
                   epochs_trained=[len(h.get("loss", [])) for h in detector.history_],
                   seconds=round(time.time() - started, 1))
    if table.y is not None and len(np.unique(table.y)) == 2:
        from sklearn.metrics import average_precision_score, roc_auc_score
        y = (table.y == table.y.max()).astype(int)
        summary.update(train_auroc=float(roc_auc_score(y, scores)),
                       train_auprc=float(average_precision_score(y, scores)))
    _write_json(os.path.join(run_dir, SUMMARY_FILE), summary)
    print(f"Run directory: {run_dir}")
    print(f"{summary['rows']} rows, {summary['features']} features; threshold "
          f"{detector.threshold_:.4g} flags {summary['flagged']} training rows "
          f"(contamination {contamination:g})"
          + (f"; AUROC on the training rows {summary['train_auroc']:.3f}"
             if "train_auroc" in summary else ""))
    return 0


def run_score(args):
    """`keras-vae score RUN_DIR --data FILE --out FILE.csv`."""
    if not args.out.lower().endswith(".csv"):
        raise ValueError(f"--out {args.out}: expected a file name ending in .csv.")
    if os.path.exists(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it.")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The folder of --out {args.out} does not exist: {parent}")
    config_path = os.path.join(args.run_dir, CONFIG_FILE)
    if not os.path.exists(os.path.join(args.run_dir, DETECTOR_FILE)):
        raise FileNotFoundError(f"{args.run_dir} holds no trained table detector (no "
                                f"{DETECTOR_FILE}); train one with keras-vae train "
                                "--dataset TABLE.csv --run-dir RUN_DIR.")
    with open(config_path) as handle:
        config = json.load(handle)
    detector = VAEDetector.load(args.run_dir)
    if args.contamination is not None:
        detector.set_contamination(args.contamination)
    table = read_rows(args.data, config)
    scores = detector.decision_function(table.x)
    flags = (scores > detector.threshold_).astype(int)
    tmp = args.out + ".tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "score", "flag"])
        for i, (s, f) in enumerate(zip(scores, flags)):
            writer.writerow([i + 1, f"{s:.6g}", int(f)])
    os.replace(tmp, args.out)
    print(f"Scored {len(scores)} rows of {args.data}: {int(flags.sum())} flagged (score > "
          f"{detector.threshold_:.4g}); wrote {args.out}")
    return 0


def _train_dispatch(image_train):
    """The `train` command's function: tables here, everything else as before (with the
    image defaults for the options this module leaves unset)."""
    def run(args):
        if is_table(args.dataset):
            return train_table(args)
        table_only = {"columns": None, "label_column": None, "impute": None,
                      "contamination": None}
        for name, empty in table_only.items():
            if getattr(args, name) != empty:
                raise ValueError(f"--{name.replace('_', '-')} applies to tables (CSV, TSV, "
                                 f"Parquet, .npz with X) only; {args.dataset} is not one.")
        if args.likelihood is None:
            args.likelihood = "bernoulli"
        elif args.likelihood in likelihoods.TWO_PARAMETER:
            raise ValueError(f"--likelihood {args.likelihood} is for tables only.")
        if args.epochs is None:
            args.epochs = 50
        return image_train(args)
    return run


def _contamination(text):
    value = float(text)
    if not 0.0 < value <= 0.5:
        raise ValueError(f"--contamination must be in (0, 0.5], got {text}.")
    return value


def add_commands(subparsers):
    """Adds `score`, and the table options of `train` (after keras_vae.training's commands)."""
    train = subparsers.choices.get("train")
    if train is not None:
        group = train.add_argument_group(
            "tables", "a CSV/TSV/Parquet file or an .npz with X (and y) as --dataset trains "
                      "an anomaly detector (keras_vae.VAEDetector) instead")
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
        group.add_argument("--contamination", type=float, default=None,
                           help=f"share of training rows flagged: sets the stored threshold "
                                f"(default {DEFAULT_CONTAMINATION})")
        group.add_argument("--score", choices=SCORES, default="elbo",
                           help="-ELBO or importance-weighted -ln p(x)")
        group.add_argument("--n-models", type=int, default=1,
                           help="VAEs (seeds) whose scores are averaged")
        group.add_argument("--max-seconds", type=float, default=120.0,
                           help="time limit of each model's training")
        group.add_argument("--verbose", action="store_true", help="one line per epoch")
        for action in train._actions:
            if action.dest == "likelihood":
                action.choices = tuple(action.choices) + likelihoods.TWO_PARAMETER
                action.default = None
                action.help = ("bernoulli or gaussian for images (default bernoulli); "
                               "student_t (default), gaussian_hetero or laplace for tables")
            if action.dest == "epochs":
                action.default = None
                action.help = "epochs (default 50; tables: at most 300, early stopping)"
            if action.dest == "latent_dim":
                latent_action = action
        latent_action.help = "K, the size of z (default 2; tables: from the column count)"
        train.set_defaults(func=_train_dispatch(train.get_default("func")))
        _table_latent_default(train, latent_action)

    p = subparsers.add_parser(
        "score", help="anomaly scores and flags of table rows",
        description="Score every row of a table with a run trained on a table; writes a CSV "
                    "with row, score (higher = more anomalous, nats) and flag (score above "
                    "the run's threshold).")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="the table to score (same columns)")
    p.add_argument("--out", required=True, help="output .csv")
    p.add_argument("--contamination", type=_contamination, default=None,
                   help="flag this share of the training rows instead of the stored "
                        "threshold's")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_score)


def _table_latent_default(train, latent_action):
    """--latent-dim: None means 2 for images and the detector's default for tables."""
    latent_action.default = None
    previous = train.get_default("func")

    def run(args):
        if args.latent_dim is None and not is_table(args.dataset):
            args.latent_dim = 2
        return previous(args)
    train.set_defaults(func=run)

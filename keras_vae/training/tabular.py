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
threshold to that share of the training rows, `--threshold` sets it). `keras-vae export
RUN_DIR` carries the threshold into the bundle, whose `vae_runtime.py score --data FILE --out
FILE.csv` writes the same CSV without TensorFlow.
"""

import csv
import json
import os
import time

import numpy as np

from keras_vae import likelihoods
from keras_vae.datasets import tabular
from keras_vae.detector import DEFAULT_LIKELIHOOD, DETECTOR_FILE, VAEDetector
from keras_vae.training import runs

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
DEFAULT_CONTAMINATION = 0.05


def is_table(dataset):
    """Whether `keras-vae train --dataset` names a table file."""
    return isinstance(dataset, str) and tabular.is_table_path(dataset)


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
    likelihood = args.likelihood or DEFAULT_LIKELIHOOD
    if likelihood not in likelihoods.TWO_PARAMETER:
        raise ValueError(f"--likelihood {likelihood} is for images; a table takes one of "
                         f"{', '.join(likelihoods.TWO_PARAMETER)} (default "
                         f"{DEFAULT_LIKELIHOOD}).")
    contamination = DEFAULT_CONTAMINATION if args.contamination is None else args.contamination
    columns = None if args.columns is None else [c for c in args.columns.split(",") if c]
    header = _header(args.header)
    table = tabular.read_table(args.dataset, columns=columns, label_column=args.label_column,
                               header=header, impute=args.impute)
    runs.claim_run_dir(run_dir, args.overwrite)  # a new run, or a keras-vae run replaced
    from keras_vae.version import __version__
    config = dict(dataset=os.path.abspath(args.dataset), kind="table", columns=table.columns,
                  label_column=table.label_column, header=header, impute=args.impute,
                  likelihood=likelihood, contamination=contamination, score=args.score,
                  n_models=args.n_models, seed=args.seed, max_epochs=args.epochs,
                  max_seconds=args.max_seconds, lr=args.lr,
                  latent_dim=args.latent_dim, keras_vae_version=__version__)
    runs.write_json(os.path.join(run_dir, CONFIG_FILE), config)
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
    runs.write_json(os.path.join(run_dir, SUMMARY_FILE), summary)
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
    threshold = getattr(args, "threshold", None)
    if threshold is not None and args.contamination is not None:
        raise ValueError("--threshold and --contamination both set the threshold; pass one "
                         "of them.")
    detector = VAEDetector.load(args.run_dir)
    if args.contamination is not None:
        detector.set_contamination(args.contamination)
    if threshold is not None:
        detector.threshold_ = float(threshold)
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

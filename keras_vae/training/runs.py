"""Run directories: config.json, history.csv, checkpoints, backups, the trained model."""

import csv
import json
import os
import shutil

import keras

from keras_vae.training.config import RUN_OPTIONS, option_value
from keras_vae.training.recipe import upgrade_config

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
BACKUP_DIR = "backup"


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


def truncate_history(run_dir, epochs_done):
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


def backup_epoch(run_dir):
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
            changed = [k for k in RUN_OPTIONS if option_value(old, k) != config.get(k)]
            if changed:
                details = ", ".join(f"{k}: {option_value(old, k)!r} -> "
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


def load_run(run_dir):
    """(vae, config) of a trained run directory."""
    config_path = os.path.join(run_dir, CONFIG_FILE)
    model_path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{run_dir} is not a keras-vae run directory: no {CONFIG_FILE}.")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{run_dir} has no {MODEL_FILE} yet: its training has not "
                                "finished. Rerun the same `keras-vae train` command to resume.")
    return keras.saving.load_model(model_path), upgrade_config(read_json(config_path))

"""Run directories: config.json, history.csv, checkpoints, backups, the trained model."""

import contextlib
import json
import os
import re
import shutil
import zipfile

import keras

from keras_vae.callbacks.history_logger import read_rows, write_rows
from keras_vae.files import (
    DirectoryLock,
    LockedError,
    atomic_path,
    atomic_save_model,
    atomic_write_json,
    is_temp_name,
    remove_temp_files,
)
from keras_vae.training.config import RUN_OPTIONS, build_model, option_value
from keras_vae.training.recipe import upgrade_config

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
BACKUP_DIR = "backup"
# keras-vae's mark on a run directory: only a folder holding it (or an older run, recognized by
# its config.json and layout, see `run_dir_kind`) is ever resumed or deleted by --overwrite.
RUN_MARKER = ".keras-vae-run"
RUN_FORMAT = 1
PICTURES = ("curves.png", "latent.png", "reconstructions.png", "samples.png", "manifold.png")
# Everything keras-vae writes into a run directory; --overwrite deletes these and nothing else.
RUN_ENTRIES = (RUN_MARKER, DirectoryLock.LOCK_NAME, CONFIG_FILE, SUMMARY_FILE, MODEL_FILE,
               HISTORY_FILE, BACKUP_DIR, "checkpoints", "logs", "evaluation.json",
               "detector.json") + PICTURES
_RUN_ENTRY_PATTERNS = (re.compile(r"evaluation-[a-z]+\.json"),  # other splits
                       re.compile(r"(worker|chief|ps|evaluator)-\d+"),  # multi-worker files
                       re.compile(r"model-\d+\.keras"))  # a table detector's further seeds


class RunDirError(ValueError):
    """The run directory cannot be used (not writable, damaged beyond repair); the message
    says what to do."""


# ============================================================================ run directory
def read_json(path):
    """The JSON object stored at `path`."""
    with open(path) as handle:
        return json.load(handle)


def write_json(path, data):
    """Writes `data` as JSON to `path` atomically (a temporary file, then a rename)."""
    atomic_write_json(path, data)


def _history_rows(run_dir):
    """(header, rows) of history.csv without the rows a crash left torn (`read_rows`)."""
    return read_rows(os.path.join(run_dir, HISTORY_FILE))


def read_history(run_dir):
    """history.csv as a dict of column name -> list of floats ("epoch" as ints); {} if none.
    Rows a crash left torn are skipped (see `_history_rows`)."""
    header, rows = _history_rows(run_dir)
    if not rows:
        return {}
    return {key: [r[key] for r in rows] for key in header}


def write_history(run_dir, header, rows):
    """Writes history.csv atomically: `header` (column names) and `rows` (dicts)."""
    write_rows(os.path.join(run_dir, HISTORY_FILE), header, rows)


def truncate_history(run_dir, epochs_done):
    """Keeps the rows of the first `epochs_done` epochs (a kill can leave a row too many), one
    row per epoch, in order; rewritten atomically."""
    header, rows = _history_rows(run_dir)
    if not header:
        return
    kept = {}
    for row in rows:
        if row["epoch"] < epochs_done:
            kept[row["epoch"]] = row  # the last row written for an epoch wins
    write_history(run_dir, header, [kept[e] for e in sorted(kept)])


# Keras's BackupAndRestore files (keras.callbacks.BackupAndRestore, double_checkpoint=True):
# the weights and metadata of the last finished epoch, and the pair before it (".bkp").
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"


def _h5_problem(path):
    try:
        import h5py

        with h5py.File(path, "r"):
            return None
    except Exception as err:  # noqa: BLE001 - any failure to open means Keras cannot load it
        return f"{type(err).__name__}: {err}"


def _metadata_epoch(path):
    """(epoch, None) from a BackupAndRestore metadata file, or (None, what is wrong)."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as err:
        return None, f"not JSON: {err}"
    epoch = data.get("epoch") if isinstance(data, dict) else None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return None, f"no valid 'epoch' in {str(data)[:60]!r}"
    return epoch, None


def _copy_atomic(source, target):
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def backup_epoch(run_dir):
    """The number of epochs the backup in RUN_DIR/backup holds: the epoch Keras's
    BackupAndRestore will resume after, read from the files it restores from.

    Keras loads latest.weights.h5 and takes the epoch from training_metadata.json; when the
    weights cannot be read it falls back to the previous pair (".bkp"). A pair that Keras
    could not restore consistently (metadata that is not JSON or has no epoch, unreadable
    weights) is replaced by the previous pair when that one is intact, so the resume starts one
    epoch earlier; otherwise a `RunDirError` says how to proceed. 0 when there is no backup.
    """
    backup = os.path.join(run_dir, BACKUP_DIR)
    weights = os.path.join(backup, BACKUP_WEIGHTS)
    metadata = os.path.join(backup, BACKUP_METADATA)
    if not os.path.exists(weights) and not os.path.exists(metadata):
        return 0
    problem = _h5_problem(weights) if os.path.exists(weights) else "missing"
    if problem is None:
        if not os.path.exists(metadata):
            return 0  # Keras restores the weights and starts counting at epoch 0
        epoch, problem = _metadata_epoch(metadata)
        if problem is None:
            return epoch
        what = f"{metadata} is damaged ({problem})"
    else:
        what = f"{weights} cannot be read ({problem})"
    prev_weights, prev_metadata = weights + ".bkp", metadata + ".bkp"
    prev_epoch, prev_problem = _metadata_epoch(prev_metadata)
    if (prev_problem is None and os.path.exists(prev_weights)
            and _h5_problem(prev_weights) is None):
        _copy_atomic(prev_weights, weights)
        _copy_atomic(prev_metadata, metadata)
        print(f"{what}; resuming from the backup before it (epoch {prev_epoch}).")
        return prev_epoch
    raise RunDirError(
        f"{what} and there is no intact earlier backup, so the epoch to resume after is "
        f"unknown. Delete {backup} to restart training from epoch 1, or pass --overwrite to "
        "start the run again.")


def _foreign_entries(run_dir):
    """The entries of `run_dir` that keras-vae does not write (sorted)."""
    return sorted(n for n in os.listdir(run_dir)
                  if n not in RUN_ENTRIES and not is_temp_name(n)
                  and not any(p.fullmatch(n) for p in _RUN_ENTRY_PATTERNS))


def _old_run_config(run_dir):
    """config.json of a run written before run directories were marked, or None."""
    try:
        config = read_json(os.path.join(run_dir, CONFIG_FILE))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "keras_vae_version" not in config or any(
            key not in config for key in ("dataset", "model", "latent_dim", "input_shape")):
        return None
    return config


def run_dir_kind(run_dir):
    """What `run_dir` is: "missing", "file", "empty", "run" (it holds keras-vae's marker),
    "old-run" (a run written before the marker existed: a keras-vae config.json, with its
    keras_vae_version, beside only files a run has) or "foreign" (anything else)."""
    if not os.path.exists(run_dir):
        return "missing"
    if not os.path.isdir(run_dir):
        return "file"
    names = [n for n in os.listdir(run_dir) if n != DirectoryLock.LOCK_NAME]
    if not names:
        return "empty"
    if os.path.isfile(os.path.join(run_dir, RUN_MARKER)):
        return "run"
    if _old_run_config(run_dir) is not None and not _foreign_entries(run_dir):
        return "old-run"
    return "foreign"


def _refuse_foreign(run_dir, kind):
    if kind == "file":
        raise FileExistsError(f"--run-dir {run_dir} is a file, not a directory.")
    if kind == "foreign":
        why = (f"its {CONFIG_FILE} is not a keras-vae run's, or it holds other files"
               if os.path.exists(os.path.join(run_dir, CONFIG_FILE)) else f"no {CONFIG_FILE}")
        raise FileExistsError(
            f"{run_dir} exists and is not a keras-vae run directory ({why}; no {RUN_MARKER} "
            "marker); choose another --run-dir. (--overwrite never deletes such a directory.)")


def _write_marker(run_dir):
    from keras_vae.version import __version__

    write_json(os.path.join(run_dir, RUN_MARKER),
               {"format": RUN_FORMAT, "keras_vae_version": __version__})


def _clear_run(run_dir):
    """Deletes the run's own files (RUN_ENTRIES and the patterns), never anything else, and not
    the lock of the process doing it."""
    for name in os.listdir(run_dir):
        if name == DirectoryLock.LOCK_NAME or name in _foreign_entries(run_dir):
            continue
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def claim_run_dir(run_dir, overwrite=False):
    """Makes `run_dir` an empty, marked run directory for a run that does not resume (a table
    detector's): a missing or empty folder is created; a keras-vae run is cleared only with
    `overwrite`, and only of its own files; anything else is refused (FileExistsError)."""
    kind = run_dir_kind(run_dir)
    _refuse_foreign(run_dir, kind)
    if kind in ("run", "old-run"):
        if not overwrite:
            raise FileExistsError(f"{run_dir} holds a keras-vae run; choose another --run-dir, "
                                  "or pass --overwrite to replace it.")
        extra = _foreign_entries(run_dir)
        if extra:
            raise FileExistsError(
                f"{run_dir} holds files keras-vae did not write ({', '.join(extra[:5])}); "
                "--overwrite deletes only a run's own files: move those out first, or choose "
                "another --run-dir.")
        _clear_run(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
        _write_marker(run_dir)
    except (PermissionError, NotADirectoryError) as err:
        raise RunDirError(f"cannot write to --run-dir {run_dir} ({err.strerror or err}); choose "
                          "a folder you can write to.") from None


@contextlib.contextmanager
def run_lock(run_dir):
    """Holds the run directory's exclusive lock (`keras_vae.files.DirectoryLock`, the file
    .keras-vae.lock with the holder's pid, host and start time) while the block runs: a second
    process training into the same directory gets a one-line `LockedError` naming the holder.
    A folder that is not a run directory is refused before anything is written into it; the
    leftovers of writes a crash cut short are removed once the lock is held."""
    kind = run_dir_kind(run_dir)
    _refuse_foreign(run_dir, kind)
    try:
        os.makedirs(run_dir, exist_ok=True)
        lock = DirectoryLock(run_dir, "run directory").acquire()
    except LockedError:
        raise
    except OSError as err:
        raise RunDirError(f"cannot write to --run-dir {run_dir} ({err.strerror or err}); choose "
                          "a folder you can write to.") from None
    try:
        for folder in (run_dir, os.path.join(run_dir, "checkpoints"),
                       os.path.join(run_dir, BACKUP_DIR)):
            remove_temp_files(folder)
        yield lock
    finally:
        lock.release()


def prepare_run_dir(run_dir, config, overwrite=False):
    """Creates, resumes or (with `overwrite`) replaces a run directory.

    A run directory carries keras-vae's marker file (RUN_MARKER), written when it is created;
    a run written before the marker existed is recognized by its config.json and layout (and
    marked when it resumes). `overwrite` deletes only a run's own files: a folder that is not
    a run, or a run holding files keras-vae did not write, is refused.

    Returns:
        "new" (fresh directory with config.json written) or "resume" (same options, not
        finished).

    Raises:
        FileExistsError: the run is finished, or holds different options, or the directory is
            not a keras-vae run; the message names the way out. RunDirError: the directory
            cannot be written.
    """
    config_path = os.path.join(run_dir, CONFIG_FILE)
    kind = run_dir_kind(run_dir)
    _refuse_foreign(run_dir, kind)
    try:
        if kind in ("run", "old-run"):
            if overwrite:
                extra = _foreign_entries(run_dir)
                if extra:
                    raise FileExistsError(
                        f"{run_dir} holds files keras-vae did not write ({', '.join(extra[:5])}"
                        f"{', ...' if len(extra) > 5 else ''}); --overwrite deletes only a "
                        "run's own files: move those out first, or choose another --run-dir.")
                _clear_run(run_dir)
            elif os.path.exists(config_path):
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
                        f"{run_dir} holds a finished run (see {SUMMARY_FILE}); pass --overwrite "
                        "to train it again from scratch, or choose another --run-dir.")
                if kind == "old-run":
                    _write_marker(run_dir)
                return "resume"
        os.makedirs(run_dir, exist_ok=True)
        _write_marker(run_dir)  # first: a directory with a config.json is always marked
        write_json(config_path, config)
    except (PermissionError, NotADirectoryError, IsADirectoryError) as err:
        raise RunDirError(f"cannot write to --run-dir {run_dir} ({err.strerror or err}); choose "
                          "a folder you can write to.") from None
    return "new"


def model_file_problem(path):
    """What is wrong with a .keras file (a save cut short: 0 bytes, truncated, a damaged
    archive), or None when it is a complete archive. Does not load it."""
    try:
        size = os.path.getsize(path)
    except OSError as err:
        return err.strerror or str(err)
    if size == 0:
        return "0 bytes"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"{size} bytes, not a complete .keras archive: {err}"
    if bad is not None:
        return f"{bad} inside it fails its checksum"
    missing = {"config.json", "model.weights.h5"} - names
    if missing:
        return f"the archive lacks {', '.join(sorted(missing))}"
    return None


def finished_model(run_dir, config):
    """The trained VAE of a run whose training has finished, or None while it must still train.

    model.keras is loaded. One that cannot be read (its save was cut short, e.g. by a kill in a
    version that did not write it atomically) is rebuilt from checkpoints/best.weights.h5,
    the weights it was saved from, and written again; without those weights, a damaged
    model.keras beside an unfinished backup is removed so the training resumes and saves
    it anew. Otherwise a `RunDirError` says to start again with --overwrite.
    """
    model_path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.exists(model_path):
        return None
    problem = model_file_problem(model_path)
    if problem is None:
        print(f"{run_dir}: training had finished; loading {MODEL_FILE} to finish the run.")
        return keras.saving.load_model(model_path)
    best = os.path.join(run_dir, BEST_WEIGHTS)
    if os.path.exists(best) and _h5_problem(best) is None:
        print(f"{run_dir}: {MODEL_FILE} is damaged ({problem}); rebuilding it from "
              f"{BEST_WEIGHTS}.")
        vae = build_model(config)
        vae.load_weights(best)
        vae.beta.assign(vae.beta_target)  # as saved after training
        atomic_save_model(vae, model_path)
        return vae
    if os.path.isdir(os.path.join(run_dir, BACKUP_DIR)):
        print(f"{run_dir}: {MODEL_FILE} is damaged ({problem}); resuming from the backup.")
        os.remove(model_path)
        return None
    raise RunDirError(f"{model_path} is damaged ({problem}) and {BEST_WEIGHTS} is missing, so "
                      "the run cannot be repaired; pass --overwrite to train it again.")


def load_run(run_dir):
    """(vae, config) of a trained run directory."""
    config_path = os.path.join(run_dir, CONFIG_FILE)
    model_path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{run_dir} is not a keras-vae run directory: no {CONFIG_FILE}.")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{run_dir} has no {MODEL_FILE} yet: its training has not "
                                "finished. Rerun the same `keras-vae train` command to resume.")
    problem = model_file_problem(model_path)
    if problem is not None:
        raise RunDirError(f"{model_path} is damaged ({problem}): its save was cut short. Rerun "
                          "the same `keras-vae train` command to rebuild it from "
                          f"{BEST_WEIGHTS}.")
    return keras.saving.load_model(model_path), upgrade_config(read_json(config_path))

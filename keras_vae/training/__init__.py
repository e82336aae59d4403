"""The training workflow: run directories, callbacks, and the `train`, `evaluate`, `sample` and
`reconstruct` commands of `keras-vae`.

    keras-vae train --dataset digits --model kingma-welling --latent-dim 2 --run-dir runs/digits
    keras-vae evaluate runs/digits
    keras-vae sample runs/digits -n 64 --out grid.png
    keras-vae reconstruct runs/digits --out recon.png

A run directory holds everything about one training run:

    .keras-vae-run     keras-vae's mark: only a marked folder is resumed or replaced
    .keras-vae.lock    held while `train` writes the run (the holder's pid, host, start time)
    config.json        the `Recipe` (`Recipe.to_dict()`) and the data shapes: enough to rebuild
                       the data and the model (`build_model`)
    history.csv        one row of metrics per epoch (training and `val_` validation)
    backup/            Keras BackupAndRestore state while training runs: a rerun of the same
                       command resumes after the last finished epoch
    checkpoints/       best.weights.h5, the weights with the lowest validation -ELBO so far
    logs/              TensorBoard event files (`tensorboard --logdir RUN_DIR/logs`)
    model.keras        the trained VAE (best validation weights), `keras.saving.load_model`
    *.png              curves, reconstructions, samples, latent means, manifold (K=2)
    summary.json       test metrics; its presence marks the run as finished
    evaluation.json    written by `keras-vae evaluate`

A finished run, or a directory holding a run with other options, is never overwritten unless
`--overwrite` is given, and `--overwrite` deletes only a run's own files. Every file is written
to a temporary name and renamed (see README, Reliability).
"""

from keras_vae.callbacks import KLWarmup, ResumableEarlyStopping, StopOnNaN
from keras_vae.training.config import (
    DEFAULT_HIDDEN,
    IMAGE_MODELS,
    MIXED_PRECISION,
    MODELS,
    RUN_OPTIONS,
    STRATEGIES,
    build_model,
    check_config,
    load_split,
    make_config,
    monitor,
)
from keras_vae.training.recipe import Recipe, upgrade_config
from keras_vae.training.run import (
    TrainingDiverged,
    best_epoch,
    draw_pictures,
    evaluate_model,
    train,
)
from keras_vae.training.runs import (
    BACKUP_DIR,
    BEST_WEIGHTS,
    CONFIG_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    load_run,
    prepare_run_dir,
    read_history,
    read_json,
    write_json,
)

__all__ = [
    "KLWarmup", "ResumableEarlyStopping", "StopOnNaN", "DEFAULT_HIDDEN", "IMAGE_MODELS",
    "MIXED_PRECISION", "MODELS", "RUN_OPTIONS", "STRATEGIES", "build_model", "check_config",
    "load_split", "make_config", "monitor", "TrainingDiverged", "draw_pictures",
    "evaluate_model", "train", "BACKUP_DIR", "BEST_WEIGHTS", "CONFIG_FILE", "HISTORY_FILE",
    "MODEL_FILE", "SUMMARY_FILE", "load_run", "prepare_run_dir", "read_history", "read_json",
    "write_json", "Recipe", "upgrade_config", "best_epoch",
]

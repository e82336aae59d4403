"""Keras callbacks for VAE training, one per module."""

from keras_vae.callbacks.best_checkpoint import BestCheckpoint
from keras_vae.callbacks.collapse_diagnostics import CollapseDiagnostics
from keras_vae.callbacks.early_stopping import ResumableEarlyStopping
from keras_vae.callbacks.history_logger import HistoryLogger
from keras_vae.callbacks.kl_warmup import KLWarmup
from keras_vae.callbacks.stop_on_nan import StopOnNaN
from keras_vae.callbacks.time_limit import TimeLimit

__all__ = ["BestCheckpoint", "CollapseDiagnostics", "HistoryLogger", "KLWarmup",
           "ResumableEarlyStopping", "StopOnNaN", "TimeLimit"]

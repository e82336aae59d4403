"""Keras callbacks for VAE training, one per module."""

from keras_vae.callbacks.early_stopping import ResumableEarlyStopping
from keras_vae.callbacks.history_logger import HistoryLogger
from keras_vae.callbacks.kl_warmup import KLWarmup
from keras_vae.callbacks.stop_on_nan import StopOnNaN

__all__ = ["HistoryLogger", "KLWarmup", "ResumableEarlyStopping", "StopOnNaN"]

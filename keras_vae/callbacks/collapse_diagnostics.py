"""CollapseDiagnostics: posterior-collapse numbers of a fixed sample at each epoch's end, in the
logs and in TensorBoard."""

import os

import keras
import numpy as np

from keras_vae import diagnostics


class CollapseDiagnostics(keras.callbacks.Callback):
    """Computes `keras_vae.diagnostics.collapse_report` on a fixed sample `x` (a few hundred
    validation examples: one encoder pass and an n x n matrix per draw, cheap) at the end of
    every `every`-th epoch.

    The logs get `{prefix}active_units` and `{prefix}mutual_information` (so `History` and the
    callbacks after this one see them); with `log_dir`, a TensorBoard event file there gets,
    at step = epoch (0-based, as Keras's TensorBoard callback counts), the scalars
    "collapse/active_units", "collapse/mutual_information" and, for the standard normal prior,
    "collapse/kl_total", one "collapse/kl_dim_JJ" per latent dimension and the histogram
    "collapse/kl_per_dimension" (the K values). `report` holds the last epoch's full report,
    `reports` every computed one by epoch.

    Args:
        x: the examples (n >= 2, the model's input shape); the same ones every epoch, so the
            curves show the model changing, not the sample.
        log_dir: folder of the TensorBoard event file (None: logs only). Needs TensorFlow.
        every: compute every this many epochs (the others add nothing to the logs, so with
            every > 1 Keras's History lists these keys for the computed epochs only).
        threshold, num_samples, seed: passed to `collapse_report` (the same seed every epoch).
        prefix: of the log keys ("val_" by default: the sample is validation data).
    """

    def __init__(self, x, log_dir=None, every=1, threshold=diagnostics.ACTIVE_THRESHOLD,
                 num_samples=1, seed=0, prefix="val_"):
        super().__init__()
        x = np.asarray(x)
        if x.ndim < 1 or len(x) < 2:
            raise ValueError(f"CollapseDiagnostics needs at least 2 examples, got shape "
                             f"{x.shape}.")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (epochs), got {every!r}.")
        self.x = x
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.every = int(every)
        self.threshold = threshold
        self.num_samples = num_samples
        self.seed = seed
        self.prefix = prefix
        self.report = None
        self.reports = {}
        self._writer = None

    def _summary_writer(self):
        if self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        report = diagnostics.collapse_report(self.model, self.x, threshold=self.threshold,
                                             num_samples=self.num_samples, seed=self.seed)
        self.report = report
        self.reports[int(epoch)] = report
        if logs is not None:
            logs[f"{self.prefix}active_units"] = float(report["active_units"])
            logs[f"{self.prefix}mutual_information"] = report["mutual_information"]
        if self.log_dir is not None:
            self._write(int(epoch), report)

    def _write(self, step, report):
        import tensorflow as tf

        with self._summary_writer().as_default():
            tf.summary.scalar("collapse/active_units", report["active_units"], step=step)
            tf.summary.scalar("collapse/mutual_information", report["mutual_information"],
                              step=step)
            kl = report["kl_per_dimension"]
            if kl is not None:
                tf.summary.scalar("collapse/kl_total", report["kl_total"], step=step)
                for j, value in enumerate(kl):
                    tf.summary.scalar(f"collapse/kl_dim_{j:02d}", value, step=step)
                tf.summary.histogram("collapse/kl_per_dimension", np.asarray(kl), step=step)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

"""StopOnNaN: stop training on a non-finite loss and record where."""

import math

import keras


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Keras's TerminateOnNaN that also records where the loss stopped being finite, as
    `stopped_at = (epoch, batch)` (0-based), or None."""

    def on_train_begin(self, logs=None):
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.stopped_at is None:
            self.stopped_at = (self._epoch, batch)
        super().on_batch_end(batch, logs)

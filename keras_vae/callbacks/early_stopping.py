"""ResumableEarlyStopping: early stopping that keeps counting across a resumed run."""

import math

import keras


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that continues counting across a resumed run.

    Args:
        previous: the monitored values of the epochs finished before the resume (from
            history.csv), replayed into `best` and `wait` when training begins.
        **kwargs: as `keras.callbacks.EarlyStopping`.
    """

    def __init__(self, previous=(), **kwargs):
        super().__init__(**kwargs)
        self.previous = [float(v) for v in previous]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for epoch, value in enumerate(self.previous):
            if epoch < self.start_from_epoch or not math.isfinite(value):
                continue
            if self.best is None or value < self.best - abs(self.min_delta):
                self.best, self.best_epoch, self.wait = value, epoch, 0
            else:
                self.wait += 1

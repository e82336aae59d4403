"""TimeLimit: stop training at the end of the epoch in which its time ran out."""

import time

import keras


class TimeLimit(keras.callbacks.Callback):
    """Stops training at the end of the epoch in which `seconds` of training (counted from
    `on_train_begin` in this process) ran out; None never stops. `hit` says whether it did."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.hit = False
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds and time.perf_counter() - self.start > self.seconds:
            self.hit = True
            self.model.stop_training = True

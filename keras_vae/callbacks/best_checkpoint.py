"""BestCheckpoint: the best epoch's weights, counting only the epochs after a warm-up."""

import keras


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint(save_best_only=True)` that ignores the first `start_from_epoch` epochs
    (a KL warm-up trains another objective), like early stopping's `start_from_epoch`.

    Args:
        start_from_epoch: epochs (counted from 0) not considered.
        **kwargs: as `keras.callbacks.ModelCheckpoint`.
    """

    def __init__(self, filepath, start_from_epoch=0, **kwargs):
        super().__init__(filepath, **kwargs)
        self.start_from_epoch = start_from_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.start_from_epoch:
            super().on_epoch_end(epoch, logs)

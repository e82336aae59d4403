"""KLWarmup: a linear ramp of the KL weight."""

import warnings

import keras


# ============================================================================ callbacks
class KLWarmup(keras.callbacks.Callback):
    """Ramps `vae.beta` linearly from 0 to `vae.beta_target` over the first `epochs` epochs.

    At batch b of epoch e (0-based), with S batches per epoch, beta = target * min(1, (e + b/S)
    / epochs); it stays at the target afterwards. The value in use at the end of each epoch is
    added to the logs as "beta" (so it lands in history.csv).

    Keras calls the per-batch hook once per compiled execution, so beta changes every
    `steps_per_execution` batches (`VAE.compile` defaults to 20); compile with
    `steps_per_execution=1` for a batch-by-batch ramp (`keras-vae train --kl-warmup` does).
    A warning says so when an epoch is not much longer than one execution.

    Args:
        epochs: length of the ramp in epochs (> 0).
    """

    def __init__(self, epochs):
        super().__init__()
        if not epochs > 0:
            raise ValueError(f"KLWarmup needs epochs > 0, got {epochs!r}.")
        self.epochs = float(epochs)
        self._epoch = 0

    def beta_at(self, epoch, batch=0, steps=None):
        """The KL weight at `batch` of `epoch` (both 0-based) with `steps` batches per epoch."""
        progress = epoch + (batch / steps if steps else 0.0)
        return float(self.model.beta_target) * min(1.0, progress / self.epochs)

    def on_train_begin(self, logs=None):
        per_execution = int(getattr(self.model, "steps_per_execution", 1) or 1)
        steps = self.params.get("steps")
        if per_execution > 1 and (not steps or steps < 10 * per_execution):
            warnings.warn(
                f"KLWarmup updates beta once per compiled execution of {per_execution} steps "
                f"({steps} steps per epoch), so the ramp is coarse; compile with "
                "steps_per_execution=1 for a batch-by-batch warm-up.", stacklevel=2)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.model.beta.assign(self.beta_at(self._epoch, batch, self.params.get("steps")))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["beta"] = float(keras.ops.convert_to_numpy(self.model.beta))

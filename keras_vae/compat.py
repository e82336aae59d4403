"""Every use of another library's private name, in one place.

Each function here reaches into Keras, TensorFlow or LiteRT below their public API, because
the public API has no equivalent. tests/test_compat.py checks each one against the installed
versions, so an upgrade that moves a name fails there, by name, instead of deep in a run.
"""

import contextlib


def model_supports_jit(model):
    """Keras's own rule behind `jit_compile="auto"` (every layer supports XLA, op determinism
    off): `keras.src.trainers.trainer.model_supports_jit`."""
    from keras.src.trainers.trainer import model_supports_jit as rule

    return rule(model)


def _tf_config():
    from tensorflow.python.framework import config as tf_config

    return tf_config


def op_determinism_enabled():
    """Whether TensorFlow's deterministic ops are on (`tf.config.experimental` can only turn
    them on): `tensorflow.python.framework.config.is_op_determinism_enabled`."""
    return _tf_config().is_op_determinism_enabled()


@contextlib.contextmanager
def deterministic_ops():
    """TensorFlow's deterministic ops for the block, then the setting the process had before:
    left on, it would also turn off XLA and force deterministic kernels in whatever the caller
    trains next. A no-op on other backends."""
    import keras

    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    tf_config = _tf_config()
    was_on = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_config.disable_op_determinism()


def litert_op_names(interpreter):
    """The op names of a LiteRT/TFLite interpreter's graph (sorted, unique): its
    `_get_ops_details()`, which has no public equivalent."""
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})

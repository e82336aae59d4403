"""Each private name keras_vae.compat reaches is where compat expects it in the installed
Keras, TensorFlow and LiteRT, and still does what compat relies on; a new version that moves or
changes one fails here, by name."""

import keras
import pytest

from keras_vae import compat


def test_keras_model_supports_jit_rule_is_where_compat_looks():
    from keras.src.trainers import trainer  # fails loudly if Keras moves the module

    assert callable(trainer.model_supports_jit)
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert compat.model_supports_jit(dense) == trainer.model_supports_jit(dense)
    if keras.backend.backend() == "tensorflow":  # plain Dense layers support XLA
        assert compat.model_supports_jit(dense) is True


def test_op_determinism_switch_is_where_compat_looks_and_is_restored():
    pytest.importorskip("tensorflow")
    from tensorflow.python.framework import config as tf_config

    assert callable(tf_config.is_op_determinism_enabled)
    assert callable(tf_config.disable_op_determinism)
    before = compat.op_determinism_enabled()
    assert before == tf_config.is_op_determinism_enabled()
    with compat.deterministic_ops():
        if keras.backend.backend() == "tensorflow":
            assert compat.op_determinism_enabled()
    assert compat.op_determinism_enabled() == before


def test_litert_interpreter_lists_its_ops():
    tf = pytest.importorskip("tensorflow")

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def double_plus_one(x):
        return tf.tanh(x * 2.0 + 1.0)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [double_plus_one.get_concrete_function()], double_plus_one)
    from keras_vae.exporting.litert import tflite_interpreter

    interpreter = tflite_interpreter(converter.convert())
    assert hasattr(interpreter, "_get_ops_details")
    names = compat.litert_op_names(interpreter)
    assert "TANH" in names and names == sorted(set(names))

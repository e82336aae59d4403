"""LiteRT (TensorFlow Lite) flatbuffers: conversion, interpreter and operator listing."""

import warnings
from pathlib import Path

import numpy as np

from keras_vae import compat
from keras_vae.exporting.formats import ExportError


def to_tflite(saved_model_dir, input_name, calibration=None):
    """A LiteRT flatbuffer from a SavedModel, built-in ops only (no Flex); int8 when
    `calibration` inputs are given (weights and activations, float32 I/O)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir),
                                                         signature_keys=["serving_default"])
    if calibration is None:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            {input_name: calibration[i:i + 32]} for i in range(0, len(calibration), 32))
        # int8 kernels wherever they exist, float built-ins elsewhere; never Flex (TF) ops.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with warnings.catch_warnings():  # its calibrator's tf.lite.Interpreter notice
            warnings.simplefilter("ignore")
            return converter.convert()
    except Exception as err:  # the converter raises its own ConverterError
        raise ExportError(f"LiteRT conversion failed (built-in ops only): {err}") from err


def tflite_interpreter(model_content):
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's move-to-ai_edge_litert notice
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_content=model_content)


def tflite_runner(path, input_name):
    interpreter = tflite_interpreter(Path(path).read_bytes())
    runner = interpreter.get_signature_runner("serving_default")

    def run(inputs):
        return {name: np.array(value) for name, value in runner(**{input_name: inputs}).items()}

    return run


def tflite_op_names(path):
    """The operator names used by a .tflite file (to check no Flex op slipped in)."""
    interpreter = tflite_interpreter(Path(path).read_bytes())
    return compat.litert_op_names(interpreter)

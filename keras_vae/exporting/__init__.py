"""Export a VAE's encoder and decoder for deployment: SavedModel, ONNX and edge variants.

    import keras_vae as kv
    manifest = kv.export(vae, "exported/")                        # SavedModel + ONNX, fp32
    kv.export(vae, "edge/", formats=kv.exporting.ALL_FORMATS, data=x_val)  # + fp16/int8/LiteRT

or from the command line: `keras-vae export RUN_DIR_OR_MODEL --out DIR [--formats ...]`.

What an export folder holds (every graph is deterministic: sampling z ~ q(z|x) or p(z)
stays outside, so any runtime accepts them):

    encoder/, decoder/            SavedModels, signature "serving_default"
    encoder.onnx, decoder.onnx    ONNX, dynamic batch axis "batch", metadata_props
    encoder.fp16.onnx ...         opt-in edge variants (see FORMATS)
    manifest.json                 every file's sha256 and size, and each artifact's measured error

Signatures (the same names in every format):
    encoder: x (batch, *input_shape) float32 -> z_mean (batch, K) and z_log_var (batch, K),
             or z_scale_tril (batch, K, K) for a full-covariance posterior.
    decoder: z (batch, K) float32 -> x_mean = E[x|z] (sigmoid of the logits for a Bernoulli
             decoder, the means for a Gaussian one), plus what ln p(x|z) needs: x_logits
             (Bernoulli; exact log-likelihoods without clipping, THEORY eq [32]) or x_log_var
             (Gaussian; the decoder's log-variance broadcast to x's shape).

Parity is part of the export: every artifact is reloaded (tf.saved_model.load, onnxruntime,
the LiteRT interpreter) and run at batch sizes 1 and 64 on real inputs, and the export fails
(`ExportError`, nothing written) when it differs from the Keras model by more than its budget.
Differences are measured per output in units of `max(1, max |Keras output|)`, so they are
absolute differences for outputs within [-1, 1] (probabilities, most latents) and relative
ones for larger outputs (logits, log-variances, unscaled Gaussian means), where float32
itself has no absolute 1e-5 precision.
"""

from keras_vae.exporting.api import export
from keras_vae.exporting.cli import load_array, load_vae
from keras_vae.exporting.formats import (
    ALL_FORMATS,
    COMPONENTS,
    DEFAULT_FORMATS,
    EDGE_FORMATS,
    ERROR_BUDGETS,
    FORMATS,
    MAX_OPSET,
    MIN_OPSET,
    PARITY_BATCH_SIZES,
    PARITY_TOLERANCE,
    ExportError,
    artifact_path,
    signature_names,
)
from keras_vae.exporting.litert import tflite_op_names
from keras_vae.exporting.runners import onnx_runner
from keras_vae.files import file_sha256

__all__ = [
    "export",
    "load_array",
    "load_vae",
    "ALL_FORMATS",
    "COMPONENTS",
    "DEFAULT_FORMATS",
    "EDGE_FORMATS",
    "ERROR_BUDGETS",
    "FORMATS",
    "MAX_OPSET",
    "MIN_OPSET",
    "PARITY_BATCH_SIZES",
    "PARITY_TOLERANCE",
    "ExportError",
    "artifact_path",
    "signature_names",
    "tflite_op_names",
    "onnx_runner",
    "file_sha256",
]

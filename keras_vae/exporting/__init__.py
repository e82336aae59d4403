"""Export a VAE's encoder and decoder for deployment: SavedModel, ONNX and edge variants.

    import keras_vae as kv
    manifest = kv.export(vae, "exported/")                        # SavedModel + ONNX, fp32
    kv.export(vae, "edge/", formats=kv.exporting.ALL_FORMATS, data=x_val)  # + fp16/int8/LiteRT

or from the command line: `keras-vae export SOURCE --out DIR [--formats ...]`, SOURCE a run
directory, a .keras file or a zoo model name.

An export folder is a self-contained bundle (layout: `keras_vae.exporting.bundle`; every graph
is deterministic: sampling z ~ q(z|x) or p(z) stays outside, so any runtime accepts them):

    saved_model/encoder/1/, ...   SavedModels in TF Serving's layout, signature "serving_default"
    encoder.onnx, decoder.onnx    ONNX, dynamic batch axis "batch", metadata_props, doc_string
    encoder.fp16.onnx ...         opt-in edge variants (see FORMATS)
    manifest.json                 the I/O contract (`keras_vae.exporting.contract`), every
                                  file's sha256 and size, each artifact's measured error
    README.md, vae_runtime.py     the model card and the TF-free runtime

Signatures (the same names in every format):
    encoder: x (batch, *input_shape) float32 -> z_mean (batch, K) and z_log_var (batch, K),
             or z_scale_tril (batch, K, K) for a full-covariance posterior.
    decoder: z (batch, K) float32 -> x_mean = E[x|z] (sigmoid of the logits for a Bernoulli
             decoder, the means for a Gaussian one), plus what ln p(x|z) needs: x_logits
             (Bernoulli; exact log-likelihoods without clipping, THEORY eq [32]) or x_log_var
             (Gaussian; the decoder's log-variance broadcast to x's shape).
    autoregressive decoder (PixelVAE): z (batch, K), x (batch, H, W, 1) -> x_logits, the
             logits of p(x_i = 1 | x_<i, z) (formats AUTOREGRESSIVE_FORMATS).

Parity is part of the export: every artifact is reloaded (tf.saved_model.load, onnxruntime,
the LiteRT interpreter) and run at batch sizes 1 and 64 on real inputs, and the export fails
(`ExportError`, nothing written) when it differs from the Keras model by more than its budget.
Differences are measured per output in units of `max(1, max |Keras output|)`, so they are
absolute differences for outputs within [-1, 1] (probabilities, most latents) and relative
ones for larger outputs (logits, log-variances, unscaled Gaussian means), where float32
itself has no absolute 1e-5 precision.
"""

from keras_vae.exporting import bundle, contract
from keras_vae.exporting.api import export
from keras_vae.exporting.cli import load_array, load_source, load_vae
from keras_vae.exporting.formats import (
    ALL_FORMATS,
    AUTOREGRESSIVE_FORMATS,
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
    "bundle",
    "contract",
    "AUTOREGRESSIVE_FORMATS",
    "load_array",
    "load_source",
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

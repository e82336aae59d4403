"""The export formats, their file names, precisions and error budgets."""


# Every format `export` can write, and the files it writes for each.
FORMATS = {
    "saved_model": "saved_model/encoder/1/, saved_model/decoder/1/: TensorFlow SavedModels "
                   "(fp32) in TF Serving's <base>/<version>/ layout",
    "onnx": "encoder.onnx, decoder.onnx (fp32)",
    "onnx_fp16": "encoder.fp16.onnx, decoder.fp16.onnx: float16 weights and math, float32 I/O",
    "onnx_int8": "encoder.int8.onnx, decoder.int8.onnx: int8 (dynamic quantization for MLPs, "
                 "static QDQ calibrated on inputs for convolutional nets)",
    "tflite": "encoder.tflite, decoder.tflite: LiteRT flatbuffers (fp32, built-in ops only)",
    "tflite_int8": "encoder.int8.tflite, decoder.int8.tflite: LiteRT, int8 weights and "
                   "activations (calibrated), float32 I/O, built-in ops only",
}
DEFAULT_FORMATS = ("saved_model", "onnx")
EDGE_FORMATS = ("onnx_fp16", "onnx_int8", "tflite", "tflite_int8")
ALL_FORMATS = DEFAULT_FORMATS + EDGE_FORMATS

# Largest |export - Keras| accepted, per output, in units of max(1, max |Keras output|):
# "max" bounds the worst element, "mean" the average one (None: not bounded).
PARITY_TOLERANCE = 1e-5
ERROR_BUDGETS = {
    "saved_model": {"max": PARITY_TOLERANCE, "mean": None},
    "onnx": {"max": PARITY_TOLERANCE, "mean": None},
    "tflite": {"max": PARITY_TOLERANCE, "mean": None},
    # float16 keeps ~3 significant digits; the error adds up over the layers.
    "onnx_fp16": {"max": 1e-2, "mean": 1e-3},
    # int8 weights (activations quantized on the fly, or calibrated QDQ): 1/255 of a tensor's
    # range per quantization step, through every layer.
    "onnx_int8": {"max": 0.1, "mean": 0.01},
    # full integer: activations too are int8 with ranges fixed by calibration, so an input
    # outside the calibrated range is clipped; hence the looser bound on the worst element.
    "tflite_int8": {"max": 0.25, "mean": 0.02},
}
MIN_OPSET, MAX_OPSET = 13, 18  # tf2onnx 1.17 refuses opsets above 18
PARITY_BATCH_SIZES = (1, 64)
NUM_EVAL = 256  # examples on which quantized variants are measured
NUM_CALIBRATION = 256  # examples that calibrate static int8 quantization of the encoder
NUM_PRIOR_CALIBRATION = 1024  # prior draws z ~ N(0, I) added to the decoder's calibration

COMPONENTS = ("encoder", "decoder")
_FILE_NAMES = {
    "onnx": "{}.onnx",
    "onnx_fp16": "{}.fp16.onnx",
    "onnx_int8": "{}.int8.onnx",
    "tflite": "{}.tflite",
    "tflite_int8": "{}.int8.tflite",
    "saved_model": "saved_model/{}/1",  # TF Serving: <model_base_path>/<version>/
}
# Formats an autoregressive decoder (two inputs, (z, x) -> logits) is exported to.
AUTOREGRESSIVE_FORMATS = ("saved_model", "onnx", "onnx_fp16")
PRECISION = {"saved_model": "fp32", "onnx": "fp32", "tflite": "fp32", "onnx_fp16": "fp16",
              "onnx_int8": "int8", "tflite_int8": "int8"}


class ExportError(ValueError):
    """An exported artifact does not compute what the Keras model computes (beyond its budget),
    or cannot be produced; the export wrote nothing. `fmt` names the format whose artifact
    missed its error budget (None for other failures)."""

    def __init__(self, message, fmt=None):
        super().__init__(message)
        self.fmt = fmt
        self.measured = None  # the measurement that missed the budget, when one did


def artifact_path(fmt, component):
    """The path, relative to the export folder, of `component` ("encoder"/"decoder") in `fmt`."""
    return _FILE_NAMES[fmt].format(component)


def signature_names(vae):
    """The input and output names of the exported graphs.

    Returns:
        {"encoder": ("x", (output names...)), "decoder": ("z", (output names...))}
    """
    second = "z_log_var" if vae.posterior == "diagonal" else "z_scale_tril"
    extra = {"bernoulli": "x_logits", "gaussian": "x_log_var"}.get(vae.likelihood,
                                                                   "x_log_scale")
    if getattr(vae, "autoregressive", False):  # (z, x) -> logits of p(x_i | x_<i, z)
        return {"encoder": ("x", ("z_mean", second)), "decoder": ("z", ("x_logits",))}
    return {"encoder": ("x", ("z_mean", second)), "decoder": ("z", ("x_mean", extra))}


def normalize_formats(formats):
    if isinstance(formats, str):
        formats = (formats,)
    chosen = []
    for fmt in formats:
        expanded = {"all": ALL_FORMATS, "edge": EDGE_FORMATS, "default": DEFAULT_FORMATS}.get(
            fmt, (fmt,))
        for f in expanded:
            if f not in FORMATS:
                raise ValueError(f"Unknown export format {f!r}: expected any of "
                                 f"{', '.join(FORMATS)} (or 'edge', 'all').")
            if f not in chosen:
                chosen.append(f)
    if not chosen:
        raise ValueError("formats is empty: choose at least one of " + ", ".join(FORMATS))
    return [f for f in ALL_FORMATS if f in chosen]

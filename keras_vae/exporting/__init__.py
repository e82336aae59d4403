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

import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

# Every format `export` can write, and the files it writes for each.
FORMATS = {
    "saved_model": "encoder/, decoder/: TensorFlow SavedModels (fp32)",
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
    "saved_model": "{}",
}
_PRECISION = {"saved_model": "fp32", "onnx": "fp32", "tflite": "fp32", "onnx_fp16": "fp16",
              "onnx_int8": "int8", "tflite_int8": "int8"}
_TF_RANDOM_MARKERS = ("Random", "Multinomial", "TruncatedNormal")
_ONNX_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                    "Multinomial", "Bernoulli"}


class ExportError(ValueError):
    """An exported artifact does not compute what the Keras model computes (beyond its budget),
    or cannot be produced; the export wrote nothing. `fmt` names the format whose artifact
    missed its error budget (None for other failures)."""

    def __init__(self, message, fmt=None):
        super().__init__(message)
        self.fmt = fmt


def artifact_path(fmt, component):
    """The path, relative to the export folder, of `component` ("encoder"/"decoder") in `fmt`."""
    return _FILE_NAMES[fmt].format(component)


def signature_names(vae):
    """The input and output names of the exported graphs.

    Returns:
        {"encoder": ("x", (output names...)), "decoder": ("z", (output names...))}
    """
    second = "z_log_var" if vae.posterior == "diagonal" else "z_scale_tril"
    extra = "x_logits" if vae.likelihood == "bernoulli" else "x_log_var"
    return {"encoder": ("x", ("z_mean", second)), "decoder": ("z", ("x_mean", extra))}


# --------------------------------------------------------------------------- the graphs
def _float32_model(model):
    """`model` itself when it computes in float32, else a float32 copy with the same weights
    (a mixed-precision model still exports float32 graphs)."""
    import keras

    if all(getattr(layer, "compute_dtype", "float32") == "float32" for layer in model.layers):
        return model

    def to_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = keras.models.clone_model(model, clone_function=to_float32)
    clone.set_weights(model.get_weights())
    return clone


class _Graphs:
    """The serving functions of one VAE (TensorFlow ops around the Keras sub-models), and the
    Keras reference each exported artifact is compared with."""

    def __init__(self, vae):
        import tensorflow as tf
        from keras import ops

        self.vae = vae
        self.encoder = _float32_model(vae.encoder)
        self.decoder = _float32_model(vae.decoder)
        names = signature_names(vae)
        self.input_names = {c: names[c][0] for c in COMPONENTS}
        self.output_names = {c: names[c][1] for c in COMPONENTS}
        self.specs = {
            "encoder": tf.TensorSpec((None,) + tuple(vae.input_shape_), tf.float32, name="x"),
            "decoder": tf.TensorSpec((None, vae.latent_dim), tf.float32, name="z"),
        }
        if vae.likelihood == "gaussian":
            self.decoder_log_var = np.asarray(ops.convert_to_numpy(vae.decoder_log_variance()),
                                              dtype="float32")
        encoder, decoder = self.encoder, self.decoder
        enc_names, dec_names = self.output_names["encoder"], self.output_names["decoder"]
        bernoulli = vae.likelihood == "bernoulli"
        log_var = None if bernoulli else self.decoder_log_var

        def encode(x):
            z_mean, z_scale = encoder(x, training=False)
            return {enc_names[0]: z_mean, enc_names[1]: z_scale}

        def decode(z):
            params = decoder(z, training=False)
            if bernoulli:
                return {"x_mean": tf.sigmoid(params), "x_logits": params}
            # A NumPy constant becomes a Const node (a captured tensor would be a graph input).
            return {"x_mean": params, "x_log_var": tf.zeros_like(params) + tf.constant(log_var)}

        self.functions = {"encoder": encode, "decoder": decode}
        self.keras_models = {"encoder": encoder, "decoder": decoder}
        for component in COMPONENTS:
            self._check_deterministic(component)

    def tf_function(self, component):
        import tensorflow as tf

        return tf.function(self.functions[component], input_signature=[self.specs[component]])

    def _check_deterministic(self, component):
        graph_def = self.tf_function(component).get_concrete_function().graph.as_graph_def()
        nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
        random_ops = sorted({n.op for n in nodes if any(m in n.op for m in _TF_RANDOM_MARKERS)})
        if random_ops:
            raise ExportError(
                f"The {component} contains random ops {random_ops}; exported graphs must be "
                "deterministic. Keep sampling outside the encoder and decoder (the VAE's "
                "Sampling layer does it between them).")

    def reference(self, component, inputs):
        """What the Keras model computes: the dict of named outputs as NumPy arrays."""
        from keras import ops

        model = self.keras_models[component]
        params = model(ops.convert_to_tensor(inputs, dtype="float32"), training=False)
        if component == "encoder":
            names = self.output_names["encoder"]
            return {names[0]: ops.convert_to_numpy(params[0]),
                    names[1]: ops.convert_to_numpy(params[1])}
        params = ops.convert_to_numpy(params)
        if self.vae.likelihood == "bernoulli":
            return {"x_mean": ops.convert_to_numpy(ops.sigmoid(params)), "x_logits": params}
        return {"x_mean": params,
                "x_log_var": np.broadcast_to(self.decoder_log_var, params.shape).copy()}


# --------------------------------------------------------------------------- inputs
def _check_inputs(vae, graphs, data, seed):
    """Inputs for the parity checks and for int8 calibration, from `data` or from the model.

    Returns:
        {"encoder": (eval_x, calib_x), "decoder": (eval_z, calib_z), "source": str}. The
        decoder's inputs are prior draws z ~ N(0, I) and posterior means of the x's.
    """
    rng = np.random.default_rng(seed)
    k = vae.latent_dim
    if data is not None:
        if hasattr(data, "element_spec") or not hasattr(data, "__len__"):
            raise ValueError("data must be an array (n, *input_shape), not a dataset or "
                             "generator; take some batches, e.g. np.concatenate(list("
                             "ds.take(8).as_numpy_iterator())).")
        data = np.asarray(data)
        vae.check_data(data, "data")
        data = data.astype("float32")
        order = rng.permutation(len(data))
        eval_x = data[order[:NUM_EVAL]]
        calib_x = data[order[NUM_EVAL:NUM_EVAL + NUM_CALIBRATION]]
        if len(calib_x) < 16:  # too little data to hold some out: calibrate on the same rows
            calib_x = eval_x
        if len(eval_x) < max(PARITY_BATCH_SIZES):
            eval_x = eval_x[rng.integers(0, len(eval_x), max(PARITY_BATCH_SIZES))]
        source = f"given data ({len(data)} examples)"
    else:
        # The model's own samples: x ~ p(x|z), z ~ N(0, I), what a trained model calls typical.
        def model_samples(n):
            params = graphs.reference("decoder", rng.standard_normal((n, k)).astype("float32"))
            if vae.likelihood == "bernoulli":
                return (rng.random(params["x_mean"].shape) < params["x_mean"]).astype("float32")
            noise = rng.standard_normal(params["x_mean"].shape)
            return (params["x_mean"] + np.exp(0.5 * params["x_log_var"]) * noise).astype("float32")

        eval_x, calib_x = model_samples(NUM_EVAL), model_samples(NUM_CALIBRATION)
        source = "the model's own samples x ~ p(x|z), z ~ N(0, I) (no data given)"

    def latents(x, num_prior):
        z_mean = graphs.reference("encoder", x)["z_mean"]
        prior = rng.standard_normal((num_prior, k)).astype("float32")
        return rng.permutation(np.concatenate([prior, z_mean])).astype("float32")

    # Decoder inputs: prior draws and posterior means of x's. Latents cost nothing, so the
    # calibration set is large enough to see the prior's tails (full-integer LiteRT clips
    # activations outside the calibrated range).
    half = len(eval_x) // 2
    return {"encoder": (eval_x, calib_x),
            "decoder": (latents(eval_x[half:], len(eval_x) - half),
                        latents(calib_x, NUM_PRIOR_CALIBRATION)),
            "source": source}


# --------------------------------------------------------------------------- writers
def _write_saved_model(graphs, component, path):
    import keras

    archive = keras.export.ExportArchive()
    archive.track(graphs.keras_models[component])
    archive.add_endpoint("serving_default", graphs.functions[component],
                         input_signature=[graphs.specs[component]])
    archive.write_out(str(path), verbose=False)


def _onnx_metadata(vae, name, component, precision, opset):
    from keras_vae import __version__

    return {
        "model_name": name,
        "component": component,
        "latent_dim": str(vae.latent_dim),
        "input_shape": json.dumps(list(vae.input_shape_)),
        "likelihood": vae.likelihood,
        "posterior": vae.posterior,
        "keras_vae_version": __version__,
        "precision": precision,
        "opset": str(opset),
        "signature": json.dumps(dict(zip(("input", "outputs"),
                                         signature_names(vae)[component]))),
    }


def _finish_onnx(model, metadata, output_order):
    """Names the batch axis "batch", orders outputs, writes metadata_props, checks the model."""
    import onnx

    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    by_name = {o.name: o for o in graph.output}
    if set(by_name) == set(output_order):
        ordered = [by_name[n] for n in output_order]
        del graph.output[:]
        graph.output.extend(ordered)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    model.doc_string = (f"keras-vae {metadata['component']} of {metadata['model_name']} "
                        f"({metadata['precision']}); signature {metadata['signature']}")
    onnx.checker.check_model(model, full_check=True)
    random_ops = sorted({n.op_type for n in graph.node} & _ONNX_RANDOM_OPS)
    if random_ops:
        raise ExportError(f"The ONNX {metadata['component']} contains random ops {random_ops}.")
    return model


def _to_onnx(graphs, component, opset):
    import tf2onnx

    spec = graphs.specs[component]
    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.ERROR)
    try:
        model, _ = tf2onnx.convert.from_function(graphs.tf_function(component),
                                                 input_signature=[spec], opset=opset)
    finally:
        tf2onnx_logger.setLevel(level)
    return _tidy_onnx(model)


_ELEMENTWISE = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus", "Identity"}


def _conv_as_transpose_pays(out_channels, in_channels):
    """Whether onnxruntime's CPU ConvTranspose computes a stride-1 convolution faster than its
    Conv does. Measured by benchmarks/export_latency.py ("graph_rewrites"; README, Export) for
    3x3 kernels on 28x28 maps on an AVX-512 CPU: 1.15-3.5x faster at batch 1 and 64 with at
    most 4 output channels and at least 8 input channels per output channel; with fewer input
    channels ConvTranspose's col2im step can cost more than Conv's padded channel block
    wastes (4 -> 4 channels: 0.22x at batch 64), and from 8 output channels on Conv wastes
    little or nothing."""
    return out_channels <= 4 and in_channels >= 8 * out_channels


def _tidy_onnx(model, conv_as_transpose=_conv_as_transpose_pays):
    """Three exact rewrites of tf2onnx's output that onnxruntime does not do itself.

    A decoder that projects z to an NHWC feature map (Dense -> Reshape (h, w, c)) gets a
    Transpose to NCHW before its first convolution: it is folded into the projection's
    weights (their columns permuted), so the Reshape yields NCHW directly. An elementwise op
    on an output's pre-Reshape tensor (the sigmoid that turns x_logits into x_mean) is moved
    after the Reshape, onto the output itself. Each saves an op per call (together ~4% of
    the conv decoder's batch-1 latency). And a stride-1 convolution to a few channels (a
    decoder's last, to 1 or 3 image channels) becomes the ConvTranspose with the flipped
    kernel that computes the same map: onnxruntime's CPU Conv works on blocks of 8 (AVX2) or
    16 (AVX-512) output channels (NCHWc) and costs as much for 1 channel as for a full block,
    whereas its ConvTranspose is one GEMM sized by the channels there are; it is done where
    `conv_as_transpose(out_channels, in_channels)` says that pays (16-21% of the default conv
    decoder's batch-1 latency). The export's parity check covers all three.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}

    def consumers(name):
        return [n for n in graph.node if name in n.input]

    def producer(name):
        return next((n for n in graph.node if name in n.output), None)

    def const(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    replaced = set()

    def set_const(name, array):
        replaced.add(name)
        fresh = f"{name}__tidy"  # a new initializer: the old one may have other users
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), fresh))
        return fresh

    def sole_consumer(node):
        users = consumers(node.output[0])
        return users[0] if len(users) == 1 and node.output[0] not in outputs else None

    for transpose in [n for n in graph.node if n.op_type == "Transpose"]:
        if [list(a.ints) for a in transpose.attribute if a.name == "perm"] != [[0, 3, 1, 2]]:
            continue
        reshape = producer(transpose.input[0])
        shape = const(reshape.input[1]) if reshape is not None and reshape.op_type == "Reshape" \
            else None
        if shape is None or len(shape) != 4 or sole_consumer(reshape) is not transpose:
            continue
        node = producer(reshape.input[0])  # back over elementwise ops (they commute with the
        while node is not None and node.op_type in _ELEMENTWISE and sole_consumer(node):
            node = producer(node.input[0])  # permutation) to the Add and MatMul
        bias = None
        if node is not None and node.op_type == "Add" and sole_consumer(node):
            bias_at = [i for i, name in enumerate(node.input) if const(name) is not None]
            if len(bias_at) != 1 or const(node.input[bias_at[0]]).ndim != 1:
                continue
            bias, node = (node, bias_at[0]), producer(node.input[1 - bias_at[0]])
        if node is None or node.op_type != "MatMul" or const(node.input[1]) is None \
                or not sole_consumer(node):
            continue
        _, h, w, c = (int(d) for d in shape)
        order = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        node.input[1] = set_const(node.input[1], const(node.input[1])[:, order])
        if bias is not None:
            add, at = bias
            add.input[at] = set_const(add.input[at], const(add.input[at])[order])
        reshape.input[1] = set_const(reshape.input[1],
                                     np.array([shape[0], c, h, w], dtype=shape.dtype))
        for user in consumers(transpose.output[0]):
            user.input[:] = [reshape.output[0] if i == transpose.output[0] else i
                             for i in user.input]
        graph.node.remove(transpose)

    for reshape in [n for n in graph.node if n.op_type == "Reshape" and n.output[0] in outputs]:
        op = producer(reshape.input[0])
        if op is None or op.op_type not in _ELEMENTWISE or sole_consumer(op) is not reshape:
            continue
        twin = next((n for n in consumers(op.input[0]) if n.op_type == "Reshape"
                     and n.output[0] in outputs and n.input[1] == reshape.input[1]), None)
        if twin is None:
            continue
        graph.node.remove(op)
        graph.node.remove(reshape)
        op.input[0], op.output[0] = twin.output[0], reshape.output[0]
        graph.node.append(op)  # after its new input's producer: the order stays topological

    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        weight = const(conv.input[1])  # (out channels, in channels, kh, kw)
        if weight is None or weight.ndim != 4 or not conv_as_transpose(*weight.shape[:2]):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        kh, kw = weight.shape[2:]
        top, left, bottom, right = attrs.get("pads", (0, 0, 0, 0))
        # y[o] = sum_j x[o + j - pad] w[j] is a transposed convolution of x with the flipped
        # kernel and padding k - 1 - pad on each side (same output size).
        pads = [kh - 1 - top, kw - 1 - left, kh - 1 - bottom, kw - 1 - right]
        if attrs.get("group", 1) != 1 or set(attrs.get("strides", [1])) != {1} \
                or set(attrs.get("dilations", [1])) != {1} or min(pads) < 0 \
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        conv.input[1] = set_const(conv.input[1], weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        conv.op_type = "ConvTranspose"
        del conv.attribute[:]
        conv.attribute.extend([helper.make_attribute("kernel_shape", [kh, kw]),
                               helper.make_attribute("pads", pads),
                               helper.make_attribute("strides", [1, 1])])
    unused = replaced - {x for n in graph.node for x in n.input}
    for init in [i for i in graph.initializer if i.name in unused]:
        graph.initializer.remove(init)
    return model


def _onnx_fp16(model):
    """float16 weights and arithmetic, float32 inputs and outputs (onnxruntime's converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = convert_float_to_float16(model, keep_io_types=True)
    wrapper = OnnxModel(half)
    wrapper.topological_sort()  # the converter appends its input casts at the end
    return wrapper.model


def _onnx_int8(model, input_name, calibration, work_dir):
    """int8 quantization with onnxruntime's tools; returns (ModelProto, method).

    As onnxruntime advises: dynamic quantization (int8 weights, activations quantized on the
    fly; no calibration) for MatMul-only graphs such as the MLPs; static QDQ quantization,
    calibrated on `calibration` inputs, for convolutional graphs. Dynamic quantization leaves
    ConvTranspose in float and runs Conv through the slow ConvInteger kernel, whereas QDQ
    quantizes both and onnxruntime fuses QDQ Conv into QLinearConv.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quant_pre_process, quantize_dynamic, quantize_static)

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    source, prepared, quantized = (work_dir / n for n in ("fp32.onnx", "prep.onnx", "int8.onnx"))
    onnx.save(model, source)
    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)  # its "consider pre-processing" warnings
    try:
        quant_pre_process(str(source), str(prepared))
        if any(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.node):
            class Reader(CalibrationDataReader):
                def __init__(self, batch_size=32):
                    self.batches = iter([{input_name: calibration[i:i + batch_size]}
                                         for i in range(0, len(calibration), batch_size)])

                def get_next(self):
                    return next(self.batches, None)

            reader = Reader()
            quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True)
            method = f"static QDQ (uint8 activations, int8 per-channel weights), calibrated " \
                     f"on {len(calibration)} inputs"
        else:
            quantize_dynamic(str(prepared), str(quantized), weight_type=QuantType.QInt8)
            method = "dynamic (int8 weights, activations quantized at run time)"
    finally:
        quant_logger.setLevel(level)
    return onnx.load(str(quantized)), method


def _tflite(saved_model_dir, input_name, calibration=None):
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


# --------------------------------------------------------------------------- runners
def _saved_model_runner(path, input_name):
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(inputs):
        outputs = signature(**{input_name: tf.constant(inputs)})
        return {name: value.numpy() for name, value in outputs.items()}

    return run


def onnx_runner(path):
    """A function mapping one input array to the dict of named outputs of an ONNX file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]

    def run(inputs):
        return dict(zip(names, session.run(names, {input_name: inputs})))

    return run


def _tflite_interpreter(model_content):
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's move-to-ai_edge_litert notice
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_content=model_content)


def _tflite_runner(path, input_name):
    interpreter = _tflite_interpreter(Path(path).read_bytes())
    runner = interpreter.get_signature_runner("serving_default")

    def run(inputs):
        return {name: np.array(value) for name, value in runner(**{input_name: inputs}).items()}

    return run


def tflite_op_names(path):
    """The operator names used by a .tflite file (to check no Flex op slipped in)."""
    interpreter = _tflite_interpreter(Path(path).read_bytes())
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


# --------------------------------------------------------------------------- measuring
def _differences(run, reference, inputs):
    """Per-output max/mean |run - reference| and the scale max(1, max |reference|)."""
    got, want = run(inputs), reference
    if set(got) != set(want):
        raise ExportError(f"outputs {sorted(got)} differ from the expected {sorted(want)}")
    stats = {}
    for name, expected in want.items():
        value = np.asarray(got[name], dtype="float64")
        if value.shape != expected.shape:
            raise ExportError(f"output {name!r} has shape {value.shape}, Keras gives "
                              f"{expected.shape}")
        diff = np.abs(value - expected.astype("float64"))
        scale = max(1.0, float(np.max(np.abs(expected))))
        stats[name] = {"max_abs_diff": float(np.max(diff)), "mean_abs_diff": float(np.mean(diff)),
                       "scale": scale}
    return stats


def _measure(graphs, component, fmt, run, eval_inputs, data_given=False):
    """Runs an artifact at each parity batch size (and, for variants with a budget on the mean,
    on every eval input), compares with Keras and checks the budget."""
    budget = ERROR_BUDGETS[fmt]
    runs = {f"batch_{n}": eval_inputs[:n] for n in PARITY_BATCH_SIZES}
    if budget["mean"] is not None and len(eval_inputs) > max(PARITY_BATCH_SIZES):
        runs[f"batch_{len(eval_inputs)}"] = eval_inputs
    measured = {key: _differences(run, graphs.reference(component, x), x)
                for key, x in runs.items()}
    worst_max = max(s["max_abs_diff"] / s["scale"] for r in measured.values() for s in r.values())
    worst_mean = max(s["mean_abs_diff"] / s["scale"] for r in measured.values()
                     for s in r.values())
    result = {
        "max_abs_diff": max(s["max_abs_diff"] for r in measured.values() for s in r.values()),
        "mean_abs_diff": max(s["mean_abs_diff"] for r in measured.values() for s in r.values()),
        "scaled_max_abs_diff": worst_max,
        "scaled_mean_abs_diff": worst_mean,
        "budget": budget,
        "by_batch": measured,
    }
    over = []
    if worst_max > budget["max"]:
        over.append(f"max |diff| = {worst_max:.3g} > {budget['max']:g}")
    if budget["mean"] is not None and worst_mean > budget["mean"]:
        over.append(f"mean |diff| = {worst_mean:.3g} > {budget['mean']:g}")
    if over:
        worst = {f"{key}/{name}": round(s["max_abs_diff"], 8) for key, r in measured.items()
                 for name, s in r.items()}
        raise ExportError(
            f"{artifact_path(fmt, component)} does not match the Keras {component}: "
            f"{'; '.join(over)} (in units of max(1, max |output|)). Unscaled max |diff| per "
            f"output: {worst}. "
            + ("This fp32 artifact should match to float precision; please report it."
               if _PRECISION[fmt] == "fp32" else
               f"The {fmt} variant is too lossy for this model even when calibrated on the "
               "given data; leave it out of formats (fp16 keeps far more precision)."
               if data_given else
               f"The {fmt} variant is too lossy for this model; pass data=/--data with "
               "representative inputs for calibration, or leave it out of formats."), fmt=fmt)
    return result


# --------------------------------------------------------------------------- files
def file_sha256(path):
    """The sha256 hex digest of a file, read in 1 MiB blocks (manifests, the zoo's registry)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_entries(root, rel):
    path = Path(root) / rel
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [{"path": p.relative_to(root).as_posix(), "sha256": file_sha256(p),
             "size_bytes": p.stat().st_size} for p in paths]


def _check_out_dir(out_dir, overwrite):
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file; choose another output directory.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} is not empty; pass overwrite=True (keras-vae export --overwrite) to replace "
            "its contents, or choose another output directory.")
    return out


def _move_into_place(tmp, out):
    """Replaces `out` by the finished folder `tmp` (renames on one filesystem)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _normalize_formats(formats):
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


# --------------------------------------------------------------------------- the export
def export(vae, out_dir, formats=DEFAULT_FORMATS, opset=17, overwrite=False, data=None,
           name=None, seed=0, verbose=False):
    """Exports the encoder and the decoder of `vae`, checks each artifact against Keras, and
    writes `manifest.json`.

    Args:
        vae: a `keras_vae.VAE` (any posterior, likelihood, architecture; mixed-precision models
            export float32 graphs).
        out_dir: the folder to create. It must not exist or be empty unless `overwrite`; the
            export is written to a temporary sibling folder and moved into place at the end,
            so a failure leaves `out_dir` as it was.
        formats: any of `FORMATS` ("saved_model", "onnx", "onnx_fp16", "onnx_int8", "tflite",
            "tflite_int8"), or the aliases "edge" and "all".
        opset: ONNX opset, 13 to 18.
        overwrite: replace the contents of a non-empty `out_dir`.
        data: optional array (n, *input_shape) of representative inputs: parity and error
            budgets are measured on them and int8 variants calibrated on them. Without it the
            model's own samples are used (fine for parity; a trained model's samples are
            realistic inputs, an untrained model's are noise).
        name: model name written into the metadata (default: `vae.name`).
        seed: seed of the input draws, so the manifest's numbers are reproducible.
        verbose: print one line per artifact with its size and measured error.

    Returns:
        The manifest (dict), also written to `out_dir/manifest.json`: for each artifact its
        files (path, sha256, size_bytes), its measured max/mean abs difference from Keras per
        output at batch sizes 1 and 64 (and on 256 inputs for quantized variants) and its budget.

    Raises:
        FileExistsError: `out_dir` is not empty and `overwrite` is False.
        ExportError (a ValueError): an artifact exceeds its error budget, or cannot be built.
        ValueError: unknown format, bad opset, bad `data`.
    """
    import keras
    import onnx

    from keras_vae import __version__

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"Exporting needs the TensorFlow backend (Keras runs on {keras.backend.backend()!r}): "
            "save the model (vae.save('m.keras')) and run the export with "
            "KERAS_BACKEND=tensorflow; the weights load there unchanged.")
    if getattr(vae, "autoregressive", False):
        raise ExportError(
            "This VAE's decoder is autoregressive (networks.PixelCNNDecoder): its logits read "
            "the image x as well as z, and drawing an image takes one pass per pixel, which "
            "the exported decoder's signature (z -> x_mean) cannot express. Save the model "
            "(vae.save('m.keras')) and serve it with Keras, or export a VAE with a decoder of "
            "z only (VAE.conv, VAE.mlp).")
    formats = _normalize_formats(formats)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET} (tf2onnx "
                         f"1.17 refuses higher ones), got {opset!r}; the default is 17.")
    out = _check_out_dir(out_dir, overwrite)
    name = name or vae.name
    started = time.perf_counter()
    graphs = _Graphs(vae)
    inputs = _check_inputs(vae, graphs, data, seed)

    def log(message):
        if verbose:
            print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix="keras-vae-export-"))
    artifacts = []
    try:
        for component in COMPONENTS:
            input_name = graphs.input_names[component]
            eval_inputs, calibration = inputs[component]
            built = {}  # fmt -> (relative path, run function, extra manifest fields)

            needs_saved_model = any(f in formats for f in ("saved_model", "tflite",
                                                            "tflite_int8"))
            if needs_saved_model:
                sm_dir = (tmp if "saved_model" in formats else scratch) / component
                _write_saved_model(graphs, component, sm_dir)
                if "saved_model" in formats:
                    built["saved_model"] = (component, _saved_model_runner(sm_dir, input_name), {})
            onnx_fp32 = None
            if any(f.startswith("onnx") for f in formats):
                onnx_fp32 = _to_onnx(graphs, component, opset)
            for fmt in ("onnx", "onnx_fp16", "onnx_int8"):
                if fmt not in formats:
                    continue
                extra = {}
                if fmt == "onnx":
                    model = onnx_fp32
                elif fmt == "onnx_fp16":
                    model = _onnx_fp16(onnx_fp32)
                else:
                    model, method = _onnx_int8(onnx_fp32, input_name, calibration,
                                               scratch / f"{component}_int8")
                    extra["quantization"] = method
                model = _finish_onnx(model, _onnx_metadata(vae, name, component, _PRECISION[fmt],
                                                           opset),
                                     graphs.output_names[component])
                rel = artifact_path(fmt, component)
                onnx.save(model, tmp / rel)
                built[fmt] = (rel, onnx_runner(tmp / rel), extra)
            for fmt in ("tflite", "tflite_int8"):
                if fmt not in formats:
                    continue
                calib = calibration if fmt == "tflite_int8" else None
                rel = artifact_path(fmt, component)
                (tmp / rel).write_bytes(_tflite(sm_dir, input_name, calib))
                extra = {"operators": tflite_op_names(tmp / rel)}
                if calib is not None:
                    extra["quantization"] = ("full integer where LiteRT has int8 kernels "
                                             f"(calibrated on {len(calib)} inputs), float "
                                             "elsewhere; float32 I/O")
                built[fmt] = (rel, _tflite_runner(tmp / rel, input_name), extra)

            for fmt in formats:
                rel, run, extra = built[fmt]
                files = _file_entries(tmp, rel)
                measured = _measure(graphs, component, fmt, run, eval_inputs,
                                    data_given=data is not None)
                entry = {"path": rel, "component": component, "format": fmt,
                         "precision": _PRECISION[fmt],
                         "size_bytes": sum(f["size_bytes"] for f in files), "files": files,
                         **extra, **measured}
                artifacts.append(entry)
                log(f"{rel:22s} {entry['size_bytes'] / 1024:9.1f} KiB   max |diff| "
                    f"{measured['max_abs_diff']:.2e}  mean {measured['mean_abs_diff']:.2e}")

        manifest = {
            "manifest_version": 1,
            "model_name": name,
            "keras_vae_version": __version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "latent_dim": vae.latent_dim,
            "input_shape": list(vae.input_shape_),
            "likelihood": vae.likelihood,
            "posterior": vae.posterior,
            "opset": opset if any(f.startswith("onnx") for f in formats) else None,
            "signatures": {
                c: {"input": graphs.input_names[c], "outputs": list(graphs.output_names[c])}
                for c in COMPONENTS},
            "check_inputs": inputs["source"],
            "error_rule": ("per output, |export - keras| / max(1, max |keras|); fails the "
                           "export above the artifact's budget"),
            "artifacts": artifacts,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(tmp, out)
        log(f"wrote {out}")
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- command line
def load_vae(path):
    """Loads a VAE from a run directory (which holds `model.keras`) or a `.keras` file."""
    import keras

    from keras_vae.model import VAE

    path = Path(path)
    if path.is_dir():
        model_file = path / "model.keras"
        if not model_file.is_file():
            raise FileNotFoundError(f"{path} has no model.keras; pass a run directory written by "
                                    "`keras-vae train` or a .keras file.")
    elif path.is_file():
        if path.suffix != ".keras":
            raise ValueError(f"{path} is not a .keras file; pass a run directory or a file "
                             "saved with vae.save('name.keras').")
        model_file = path
    else:
        raise FileNotFoundError(f"{path} does not exist; pass a run directory or a .keras file.")
    model = keras.saving.load_model(model_file, compile=False)
    if not isinstance(model, VAE):
        raise ValueError(f"{model_file} holds a {type(model).__name__}, not a keras_vae VAE.")
    return model


def load_array(path, key=None):
    """Inputs from a .npy file or a .npz archive (array `key`, else "test", "valid", "x",
    "train", or its only array), as float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist.")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False).astype("float32")
    if path.suffix != ".npz":
        raise ValueError(f"--data {path}: expected a .npy or .npz file.")
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.keys())
        if key is None:
            key = next((k for k in ("test", "valid", "x", "train") if k in names),
                       names[0] if len(names) == 1 else None)
        if key not in names:
            raise ValueError(f"--data {path} has arrays {names}; choose one with --data-key.")
        return archive[key].astype("float32")


def _run_command(args):
    vae = load_vae(args.model)
    data = load_array(args.data, args.data_key) if args.data else None
    if data is not None and data.ndim >= 2 and tuple(data.shape[1:]) != vae.input_shape_ \
            and int(np.prod(data.shape[1:])) == int(np.prod(vae.input_shape_)):
        data = data.reshape((-1,) + tuple(vae.input_shape_))
    name = args.name or (Path(args.model).name if Path(args.model).is_dir()
                         else Path(args.model).stem)
    manifest = export(vae, args.out, formats=args.formats, opset=args.opset,
                      overwrite=args.overwrite, data=data, name=name, seed=args.seed,
                      verbose=not args.quiet)
    if args.quiet:
        print(args.out)
    return 0 if manifest else 1


def add_commands(subparsers):
    """Adds `keras-vae export`."""
    parser = subparsers.add_parser(
        "export", help="export encoder and decoder to SavedModel, ONNX and edge formats",
        description="Export the encoder and decoder of a trained VAE, check each artifact "
                    "against the Keras model, and write manifest.json. Formats: "
                    + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    parser.add_argument("model", metavar="RUN_DIR_OR_MODEL",
                        help="a run directory holding model.keras, or a .keras file")
    parser.add_argument("--out", required=True, help="output directory (must be new or empty)")
    parser.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS),
                        metavar="FORMAT", help=f"any of {', '.join(FORMATS)}, or 'edge' / 'all' "
                                               f"(default: {' '.join(DEFAULT_FORMATS)})")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 13-18 (default 17)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the contents of a non-empty --out")
    parser.add_argument("--data", help="a .npy/.npz of representative inputs for the parity "
                                       "checks and int8 calibration (default: model samples)")
    parser.add_argument("--data-key", help="which array of a .npz --data to use")
    parser.add_argument("--name", help="model name for the metadata (default: the run "
                                       "directory's or file's name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the check inputs")
    parser.add_argument("--quiet", action="store_true", help="print only the output folder")
    parser.set_defaults(func=_run_command)

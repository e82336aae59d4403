"""Export of encoder and decoder: every artifact, reloaded independently of the exporter's own
checks, computes what the Keras model computes, with the promised names, metadata, dynamic
batch, file hashes and error budgets; and the export refuses to overwrite and never leaves a
half-written folder."""

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_vae as kv  # noqa: E402
from keras_vae import exporting  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 1797 8x8 handwritten digits, scaled to [0, 1], shuffled."""
    x = (load_digits().data / 16.0).astype("float32")
    return x[np.random.default_rng(0).permutation(len(x))]


def _train(vae, x, epochs):
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    vae.fit(x, epochs=epochs, batch_size=64, verbose=0)
    return vae


@pytest.fixture(scope="module")
def models(digits):
    """Briefly trained VAEs (realistic weights for the quantization budgets), with the inputs
    they take. Calibration data: the first 1000 digits; held-out checks use the rest."""
    keras.utils.set_random_seed(1)
    image = digits.reshape(-1, 8, 8, 1)
    real = (digits - 0.3) * 3.0  # real-valued data for the Gaussian decoder
    return {
        "kw_diag": (_train(kv.VAE.kingma_welling(64, 6, hidden_units=64), digits, 12), digits),
        "kw_full": (_train(kv.VAE.kingma_welling(64, 3, hidden_units=64, posterior="full"),
                           digits, 6), digits),
        "conv": (_train(kv.VAE.conv((8, 8, 1), 6, filters=(8, 16), dense_units=32), image, 8),
                 image),
        "gaussian": (_train(kv.VAE.mlp((64,), 4, hidden_units=(64, 32), likelihood="gaussian"),
                            real, 6), real),
    }


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    """kw_diag and conv with every format (int8 ONNX is dynamic for the MLP, static QDQ for
    the conv nets); kw_full and gaussian with the default formats."""
    root = tmp_path_factory.mktemp("exports")
    folders = {}
    for name, (vae, x) in models.items():
        formats = exporting.ALL_FORMATS if name in ("kw_diag", "conv") else ("saved_model", "onnx")
        folders[name] = root / name
        manifest = kv.export(vae, folders[name], formats=formats, data=x[:1000], name=name)
        assert manifest["model_name"] == name
    return folders


def _keras_outputs(vae, component, inputs):
    """The Keras model's answer, through the VAE's public API."""
    if component == "encoder":
        z_mean, z_scale = vae.encode(inputs)
        second = "z_log_var" if vae.posterior == "diagonal" else "z_scale_tril"
        return {"z_mean": z_mean, second: z_scale}
    params = keras.ops.convert_to_numpy(vae.decoder(inputs))
    if vae.likelihood == "bernoulli":
        return {"x_mean": vae.decode(inputs), "x_logits": params}
    log_var = keras.ops.convert_to_numpy(vae.decoder_log_variance())
    return {"x_mean": vae.decode(inputs), "x_log_var": np.broadcast_to(log_var, params.shape)}


def _inputs(vae, x, component, n, seed=0):
    rng = np.random.default_rng(seed)
    if component == "encoder":
        return x[1000:][rng.permutation(len(x) - 1000)[:n]]
    return rng.standard_normal((n, vae.latent_dim)).astype("float32")


def _scaled_errors(got, want):
    """Per output: (max |diff|, mean |diff|) / max(1, max |want|), the exporter's rule."""
    assert set(got) == set(want)
    errors = {}
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        diff = np.abs(got[name].astype("float64") - expected)
        scale = max(1.0, float(np.abs(expected).max()))
        errors[name] = (diff.max() / scale, diff.mean() / scale)
    return errors


def _onnx_run(path, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: inputs})))


ALL_MODELS = ("kw_diag", "kw_full", "conv", "gaussian")
NAMES = {"kw_diag": ("z_log_var", "x_logits"), "kw_full": ("z_scale_tril", "x_logits"),
         "conv": ("z_log_var", "x_logits"), "gaussian": ("z_log_var", "x_log_var")}


# --------------------------------------------------------------------------- fp32 parity
def _assert_fp32_parity(vae, x, component, run):
    """`run(inputs) -> {name: array}` matches Keras within 1e-5 (scaled) at batch 1, 7 and 64
    (7: any batch size, not just the ones the export checked)."""
    for batch in (1, 7, 64):
        inputs = _inputs(vae, x, component, batch, seed=batch)
        for out, (max_err, _) in _scaled_errors(run(inputs), _keras_outputs(vae, component,
                                                                            inputs)).items():
            assert max_err <= 1e-5, (component, out, batch, max_err)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_saved_model_signatures_and_parity(name, models, exported):
    vae, x = models[name]
    enc_second, dec_second = NAMES[name]
    for component, input_name, outputs in (("encoder", "x", {"z_mean", enc_second}),
                                           ("decoder", "z", {"x_mean", dec_second})):
        loaded = tf.saved_model.load(str(exported[name] / exporting.artifact_path("saved_model", component)))
        signature = loaded.signatures["serving_default"]
        assert set(signature.structured_input_signature[1]) == {input_name}
        assert set(signature.structured_outputs) == outputs
        _assert_fp32_parity(vae, x, component, lambda inputs: {
            k: v.numpy() for k, v in signature(**{input_name: tf.constant(inputs)}).items()})


@pytest.mark.parametrize("name", ALL_MODELS)
def test_onnx_names_dynamic_batch_and_parity(name, models, exported):
    vae, x = models[name]
    enc_second, dec_second = NAMES[name]
    for component, input_name, outputs in (("encoder", "x", ["z_mean", enc_second]),
                                           ("decoder", "z", ["x_mean", dec_second])):
        path = exported[name] / f"{component}.onnx"
        model = onnx.load(str(path))
        assert [i.name for i in model.graph.input] == [input_name]
        assert [o.name for o in model.graph.output] == outputs
        for value in list(model.graph.input) + list(model.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
        _assert_fp32_parity(vae, x, component, lambda inputs: _onnx_run(path, inputs))


def test_conv_decoder_onnx_is_tidied(models, exported):
    """tf2onnx's NHWC->NCHW Transpose is folded into the projection weights, the sigmoid
    reads x_logits (one Reshape less) and the last convolution (to 1 channel) is a
    ConvTranspose; the fp32 parity above holds with all three rewrites."""
    model = onnx.load(str(exported["conv"] / "decoder.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "Transpose" not in ops and "Conv" not in ops and ops.count("ConvTranspose") == 3
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    assert list(sigmoid.input) == ["x_logits"] and list(sigmoid.output) == ["x_mean"]
    # tf2onnx's own graph had both, and computes the same as the tidied one
    vae, x = models["conv"]
    graphs = exporting.graphs.Graphs(vae)
    raw, _ = tf2onnx.convert.from_function(graphs.tf_function("decoder"),
                                           input_signature=[graphs.specs["decoder"]], opset=17)
    raw_ops = [n.op_type for n in raw.graph.node]
    assert "Transpose" in raw_ops and len(raw_ops) == len(ops) + 2 and "Conv" in raw_ops
    z = _inputs(vae, x, "decoder", 64)
    tidy = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    untidy = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, want in zip(tidy.run(["x_mean", "x_logits"], {"z": z}),
                         untidy.run(["x_mean", "x_logits"], {"z": z})):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for variant in ("decoder.fp16.onnx", "decoder.int8.onnx"):
        assert "Transpose" not in {n.op_type for n in onnx.load(
            str(exported["conv"] / variant)).graph.node}


def _conv_graph(weight, bias, **attributes):
    """A one-node ONNX model: Conv of an NCHW input x with the given weight and bias."""
    node = onnx.helper.make_node("Conv", ["x", "w", "b"], ["y"], **attributes)
    graph = onnx.helper.make_graph(
        [node], "conv", [onnx.helper.make_tensor_value_info(
            "x", onnx.TensorProto.FLOAT,
            ["batch", weight.shape[1] * attributes.get("group", 1), None, None])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                            ["batch", weight.shape[0], None, None])],
        [onnx.numpy_helper.from_array(weight, "w"), onnx.numpy_helper.from_array(bias, "b")])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


@pytest.mark.parametrize("out_channels, kernel, pads", [
    (1, (3, 3), (1, 1, 1, 1)), (3, (3, 5), (0, 2, 2, 1)), (2, (2, 2), (0, 0, 1, 1)),
    (4, (1, 1), (0, 0, 0, 0))])
def test_few_channel_conv_becomes_an_equal_conv_transpose(out_channels, kernel, pads):
    """The rewrite is exact for any kernel and (asymmetric) padding: the ConvTranspose matches
    onnxruntime's own Conv, and a direct NumPy convolution, on random inputs."""
    rng = np.random.default_rng(0)
    in_channels = 8 * out_channels  # where the rewrite pays
    weight = rng.standard_normal((out_channels, in_channels) + kernel).astype("float32")
    bias = rng.standard_normal(out_channels).astype("float32")
    conv = _conv_graph(weight, bias, kernel_shape=list(kernel), pads=list(pads))
    tidied = exporting.onnx_rewrites.tidy_onnx(_conv_graph(weight, bias, kernel_shape=list(kernel),
                                              pads=list(pads)))
    assert [n.op_type for n in tidied.graph.node] == ["ConvTranspose"]
    onnx.checker.check_model(tidied, full_check=True)
    x = rng.standard_normal((3, in_channels, 9, 7)).astype("float32")
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_h, out_w = padded.shape[2] - kernel[0] + 1, padded.shape[3] - kernel[1] + 1
    want = np.einsum("nchwij,ocij->nohw", np.lib.stride_tricks.sliding_window_view(
        padded, kernel, axis=(2, 3))[:, :, :out_h, :out_w], weight) + bias[:, None, None]
    for model in (conv, tidied):
        got = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attributes, shape", [
    ({"strides": [2, 2]}, (1, 8)), ({"dilations": [2, 2]}, (1, 8)), ({"group": 8}, (8, 1)),
    ({"auto_pad": "SAME_UPPER"}, (1, 8)),
    ({}, (3, 16)), ({}, (8, 64))])  # fewer than 8 inputs per output, or too many outputs
def test_conv_the_rewrite_cannot_express_or_would_slow_is_left_alone(attributes, shape):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(shape + (3, 3)).astype("float32")
    model = exporting.onnx_rewrites.tidy_onnx(_conv_graph(weight, np.zeros(len(weight), "float32"),
                                             kernel_shape=[3, 3], **attributes))
    assert [n.op_type for n in model.graph.node] == ["Conv"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_onnx_metadata_checker_and_no_random_ops(name, models, exported):
    vae, _ = models[name]
    for component in exporting.COMPONENTS:
        model = onnx.load(str(exported[name] / f"{component}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["latent_dim"] == str(vae.latent_dim)
        assert json.loads(meta["input_shape"]) == list(vae.input_shape_)
        assert meta["likelihood"] == vae.likelihood
        assert meta["posterior"] == vae.posterior
        assert meta["model_name"] == name
        assert meta["keras_vae_version"] == kv.__version__
        assert meta["component"] == component
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniform",
                          "RandomUniformLike", "Multinomial", "Bernoulli"}
        # and the SavedModel graph, with every function it calls
        loaded = tf.saved_model.load(str(exported[name] / exporting.artifact_path("saved_model", component)))
        graph_def = loaded.signatures["serving_default"].graph.as_graph_def()
        tf_ops = {n.op for n in graph_def.node} | {
            n.op for f in graph_def.library.function for n in f.node_def}
        assert "MatMul" in tf_ops or "Conv2D" in tf_ops  # the walk sees the real graph
        assert not [op for op in tf_ops if "Random" in op]


def test_random_op_in_a_graph_is_refused(tmp_path):
    """A decoder that samples inside would export a non-deterministic graph: refused."""
    class AlwaysNoisy(keras.layers.Layer):
        def call(self, h):
            return h + keras.random.normal(keras.ops.shape(h))

    z = keras.Input((2,), name="z")
    decoder = keras.Model(z, AlwaysNoisy()(keras.layers.Dense(4)(z)))
    encoder = kv.networks.mlp_encoder((4,), 2, (8,))
    vae = kv.VAE(encoder, decoder, 2)
    with pytest.raises(exporting.ExportError, match="random ops"):
        kv.export(vae, tmp_path / "out", formats="onnx")
    assert not (tmp_path / "out").exists()


def test_manifest_hashes_sizes_and_parity(exported, models):
    folder = exported["kw_diag"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["latent_dim"] == 6 and manifest["input_shape"] == [64]
    assert manifest["signatures"]["encoder"] == {"input": "x", "inputs": ["x"],
                                                 "outputs": ["z_mean", "z_log_var"]}
    listed = set()
    for artifact in manifest["artifacts"]:
        for entry in artifact["files"]:
            data = (folder / entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["size_bytes"]
            listed.add(entry["path"])
        assert artifact["size_bytes"] == sum(f["size_bytes"] for f in artifact["files"])
        assert set(artifact["by_batch"]) >= {"batch_1", "batch_64"}
        if artifact["precision"] == "fp32":
            assert artifact["scaled_max_abs_diff"] <= 1e-5
    for entry in manifest["bundle"]["files"]:  # the runtime and the card
        assert hashlib.sha256((folder / entry["path"]).read_bytes()).hexdigest() == \
            entry["sha256"]
        listed.add(entry["path"])
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk - listed == {"manifest.json"}
    assert {"vae_runtime.py", "README.md"} <= listed
    assert {(a["component"], a["format"]) for a in manifest["artifacts"]} == {
        (c, f) for c in exporting.COMPONENTS for f in exporting.ALL_FORMATS}


# --------------------------------------------------------------------------- edge variants
def _tflite_run(path, input_name, inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    return {k: np.asarray(v) for k, v in runner(**{input_name: inputs}).items()}


@pytest.mark.parametrize("name", ("kw_diag", "conv"))
def test_edge_variants_within_budget_on_held_out_inputs(name, models, exported):
    """fp16/int8 ONNX and LiteRT, measured here on digits the export never saw (it calibrated
    on the first 1000), stay within the budgets the exporter states, and really are reduced
    precision (errors well above fp32 round-off, float16 / int8 weights)."""
    vae, x = models[name]
    folder = exported[name]
    manifest = json.loads((folder / "manifest.json").read_text())
    sizes = {a["path"]: a["size_bytes"] for a in manifest["artifacts"]}
    for component, input_name in (("encoder", "x"), ("decoder", "z")):
        inputs = _inputs(vae, x, component, 256, seed=5)
        want = _keras_outputs(vae, component, inputs)
        for fmt in ("tflite", "onnx_fp16", "onnx_int8", "tflite_int8"):
            rel = exporting.artifact_path(fmt, component)
            if fmt.startswith("onnx"):
                got = _onnx_run(folder / rel, inputs)
            else:
                got = _tflite_run(folder / rel, input_name, inputs)
            errors = _scaled_errors(got, want)
            budget = exporting.ERROR_BUDGETS[fmt]
            worst_max = max(e[0] for e in errors.values())
            worst_mean = max(e[1] for e in errors.values())
            assert worst_max <= budget["max"], (rel, errors)
            assert budget["mean"] is None or worst_mean <= budget["mean"], (rel, errors)
            if fmt != "tflite":
                assert worst_mean > 1e-5, (rel, "suspiciously exact for reduced precision")
        # Reduced precision where the bytes are: the biggest weights are float16 / int8.
        for fmt, dtype in (("onnx_fp16", onnx.TensorProto.FLOAT16),
                           ("onnx_int8", onnx.TensorProto.INT8)):
            model = onnx.load(str(folder / exporting.artifact_path(fmt, component)))
            biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
            assert biggest.data_type == dtype, (fmt, component, biggest.name)
        assert sizes[f"{component}.int8.tflite"] < 0.75 * sizes[f"{component}.tflite"]


def test_int8_method_follows_the_graph(exported):
    """Dynamic quantization for MatMul graphs; convolutional graphs get static QDQ (dynamic
    quantization would skip ConvTranspose), and the conv decoder's quantized graph really has
    dequantized int8 inputs and weights feeding its ConvTranspose."""
    methods = {}
    for name in ("kw_diag", "conv"):
        manifest = json.loads((exported[name] / "manifest.json").read_text())
        for a in manifest["artifacts"]:
            if a["format"] == "onnx_int8":
                methods[(name, a["component"])] = a["quantization"]
    assert methods[("kw_diag", "decoder")].startswith("dynamic")
    assert methods[("kw_diag", "encoder")].startswith("dynamic")
    assert methods[("conv", "encoder")].startswith("static QDQ")
    assert methods[("conv", "decoder")].startswith("static QDQ")
    graph = onnx.load(str(exported["conv"] / "decoder.int8.onnx")).graph
    produced_by = {out: n.op_type for n in graph.node for out in n.output}
    deconvs = [n for n in graph.node if n.op_type == "ConvTranspose"]
    assert deconvs and all(produced_by.get(n.input[0]) == "DequantizeLinear" and
                           produced_by.get(n.input[1]) == "DequantizeLinear" for n in deconvs)
    dynamic = {n.op_type for n in onnx.load(str(exported["kw_diag"] / "decoder.int8.onnx")
                                            ).graph.node}
    assert "MatMulInteger" in dynamic


def test_tflite_builtin_ops_only_with_named_signatures(exported):
    for rel in ("encoder.tflite", "decoder.tflite", "encoder.int8.tflite",
                "decoder.int8.tflite"):
        path = exported["conv"] / rel
        ops = exporting.tflite_op_names(path)
        assert ops and not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signatures = tf.lite.Interpreter(model_path=str(path)).get_signature_list()
        component = rel.split(".")[0]
        expected = ({"inputs": ["x"], "outputs": ["z_log_var", "z_mean"]} if component == "encoder"
                    else {"inputs": ["z"], "outputs": ["x_logits", "x_mean"]})
        assert {k: sorted(v) for k, v in signatures["serving_default"].items()} == expected
    assert any("QUANTIZE" in op or "DEQUANTIZE" in op
               for op in exporting.tflite_op_names(exported["conv"] / "decoder.int8.tflite"))


def test_mixed_precision_model_exports_float32(tmp_path, digits):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        vae = kv.VAE.kingma_welling(64, 3, hidden_units=32)
    finally:
        keras.config.set_dtype_policy("float32")
    kv.export(vae, tmp_path / "out", formats="onnx")
    model = onnx.load(str(tmp_path / "out" / "decoder.onnx"))
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32
               for v in list(model.graph.input) + list(model.graph.output))
    z = np.random.default_rng(0).standard_normal((16, 3)).astype("float32")
    got = _onnx_run(tmp_path / "out" / "decoder.onnx", z)["x_mean"]
    bf16 = keras.ops.convert_to_numpy(keras.ops.cast(vae.decode(z), "float32"))
    assert np.abs(got - bf16).max() < 2e-2  # bfloat16 keeps ~2-3 digits


# --------------------------------------------------------------------------- folder safety
def _tiny_vae():
    keras.utils.set_random_seed(3)
    return kv.VAE.kingma_welling(64, 2, hidden_units=16)


def test_refuses_non_empty_folder_unless_overwrite(tmp_path):
    vae = _tiny_vae()
    out = tmp_path / "out"
    out.mkdir()  # an existing empty folder is fine
    kv.export(vae, out, formats="onnx")
    with pytest.raises(FileExistsError, match="overwrite"):
        kv.export(vae, out, formats="onnx")
    kv.export(vae, out, formats=("onnx", "onnx_fp16"), overwrite=True)
    assert (out / "decoder.fp16.onnx").is_file()
    kv.export(vae, out, formats="onnx", overwrite=True)
    assert not (out / "decoder.fp16.onnx").exists()  # replaced as a whole
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        kv.export(vae, tmp_path / "a_file", formats="onnx")


@pytest.mark.parametrize("existing", [False, True])
def test_failed_export_leaves_nothing_half_written(tmp_path, monkeypatch, existing):
    """A failure late in the export (the last check) leaves the target as it was: absent, or
    the previous export untouched, and no temporary folder behind."""
    vae = _tiny_vae()
    out = tmp_path / "out"
    if existing:
        kv.export(vae, out, formats="onnx")  # a previous export, which --overwrite may replace
        before = sorted(p.name for p in out.iterdir())
    budgets = {k: dict(v) for k, v in exporting.ERROR_BUDGETS.items()}
    budgets["onnx"]["max"] = -1.0  # any measured difference fails
    monkeypatch.setattr(exporting.formats, "ERROR_BUDGETS", budgets)
    with pytest.raises(exporting.ExportError, match="decoder.onnx|encoder.onnx"):
        kv.export(vae, out, formats=("saved_model", "onnx"), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert sorted(p.name for p in out.iterdir()) == before


def test_bad_arguments_are_named(tmp_path, digits):
    vae = _tiny_vae()
    with pytest.raises(ValueError, match="opset must be an integer from 13 to 18"):
        kv.export(vae, tmp_path / "a", opset=19)
    with pytest.raises(ValueError, match="Unknown export format 'onnx_int4'"):
        kv.export(vae, tmp_path / "a", formats=("onnx", "onnx_int4"))
    with pytest.raises(ValueError, match=r"shape \(10, 8, 8\)"):
        kv.export(vae, tmp_path / "a", data=digits[:10].reshape(10, 8, 8))
    assert not (tmp_path / "a").exists()


def test_over_budget_variant_is_refused_with_the_fitting_advice(tmp_path, digits, monkeypatch):
    """A quantized variant past its budget fails the export; the advice depends on whether
    real data calibrated it (then more data cannot help)."""
    vae = _tiny_vae()
    monkeypatch.setitem(exporting.ERROR_BUDGETS, "onnx_fp16", {"max": 1e-12, "mean": None})
    with pytest.raises(exporting.ExportError, match=r"\.fp16\.onnx does not match .*max "
                                                    r"\|diff\| = .* > 1e-12.*pass data=/--data"):
        kv.export(vae, tmp_path / "a", formats=("onnx", "onnx_fp16"))
    with pytest.raises(exporting.ExportError, match="even when calibrated on the given data") \
            as refused:
        kv.export(vae, tmp_path / "b", formats=("onnx", "onnx_fp16"), data=digits[:300])
    assert refused.value.fmt == "onnx_fp16"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- command line
def test_cli_exports_a_run_directory(tmp_path, models, capsys):
    vae, x = models["kw_full"]
    run = tmp_path / "my_run"
    run.mkdir()
    vae.save(run / "model.keras")
    np.save(tmp_path / "data.npy", x[:300].reshape(300, 8, 8))  # reshaped to (n, 64) by the CLI
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "keras_vae", "export", str(run), "--out", str(tmp_path / "out"),
         "--formats", "onnx", "--opset", "15", "--data", str(tmp_path / "data.npy")],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "decoder.onnx" in proc.stdout and "wrote" in proc.stdout
    model = onnx.load(str(tmp_path / "out" / "encoder.onnx"))
    assert {p.key: p.value for p in model.metadata_props}["model_name"] == "my_run"
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [15]
    z = _inputs(vae, x, "encoder", 5)
    got = _onnx_run(tmp_path / "out" / "encoder.onnx", z)
    assert max(e[0] for e in _scaled_errors(got, _keras_outputs(vae, "encoder", z)).values()) \
        <= 1e-5
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["check_inputs"] == "given data (300 examples)"

    # The same command again, in-process: refused without --overwrite, clean error, exit 2.
    from keras_vae import cli

    args = ["export", str(run / "model.keras"), "--out", str(tmp_path / "out"), "--formats",
            "onnx"]
    assert cli.main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- benchmark
@pytest.mark.slow  # the benchmark script end to end; `pytest -m slow` runs it
def test_latency_benchmark_quick_runs_and_reports_ratios(tmp_path):
    """The benchmark cannot rot: its --quick mode runs and writes complete results (numbers
    are reported, never asserted)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    out = tmp_path / "latency.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "export_latency.py"),
                           "--quick", "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    (model,) = results["models"].values()
    assert len(model["sizes_bytes"]) == 2 * len(exporting.ALL_FORMATS)
    for component in exporting.COMPONENTS:
        rows = model[component]
        assert set(rows) == {"onnxruntime", "onnxruntime_1thread", "onnxruntime_fp16",
                             "onnxruntime_int8", "saved_model", "litert", "litert_int8",
                             "keras_predict", "keras_call"}
        assert rows["saved_model"]["batch1_speedup_vs_saved_model"] == 1.0
        for row in rows.values():
            assert row["batch1_latency_ms"] > 0
            ratio = rows["saved_model"]["batch1_latency_ms"] / row["batch1_latency_ms"]
            assert row["batch1_speedup_vs_saved_model"] == pytest.approx(ratio)
    # the rewrites' own measurements: tf2onnx's conv decoder graph against the export's, and
    # Conv against the equal ConvTranspose (both computing the same outputs)
    rewrites = results["graph_rewrites"]
    assert "Conv" in rewrites["decoder"]["tf2onnx"]["ops"]
    assert "Conv" not in rewrites["decoder"]["export"]["ops"]
    rows = rewrites["conv_vs_conv_transpose"]  # both sides of the rule are measured
    assert {True, False} == {row["rewritten_by_export"] for row in rows}
    assert (32, 1) in {(row["in_channels"], row["out_channels"]) for row in rows}
    for row in rows:
        assert row["batch1_max_abs_diff"] < 1e-4 and row["batch64_max_abs_diff"] < 1e-4
        assert row["rewritten_by_export"] == exporting.onnx_rewrites.conv_as_transpose_pays(
            row["out_channels"], row["in_channels"])
        assert row["batch1_speedup"] == pytest.approx(
            row["batch1_conv_us"] / row["batch1_conv_transpose_us"])

"""Latency and throughput of the exported encoder and decoder, against Keras, in one run.

    python benchmarks/export_latency.py            # Kingma-Welling 784-500-20, two conv VAEs
    python benchmarks/export_latency.py --quick    # a tiny model, a few calls (the test suite)

For each model and each of encoder/decoder it times, on CPU, in this one process:
- onnxruntime (fp32 with its default threads and with one thread, and the fp16/int8
  variants),
- the SavedModel reloaded with tf.saved_model.load (its serving signature),
- LiteRT (fp32 and int8, tf.lite.Interpreter signature runner),
- `keras.Model.predict` and a direct eager call `model(x)` of the Keras network,
at batch 1 (median latency per call) and batch 256 (throughput, examples/s), and reports each
as a ratio to the SavedModel. The runners take turns over 7 rounds and each reports the median
of its rounds, so a load that drifts on a shared machine spreads over all of them. File sizes
of every exported variant come from the manifest. Models: the Kingma-Welling MLP and the
default `VAE.conv((28, 28, 1), 16)` (1.7M parameters), untrained with non-zero biases, and,
where ../shared/datasets/binarized_mnist.npz exists (for int8 calibration), the conv model the
zoo ships, conv_mnist_z16 (428k parameters, trained), from this checkout's weights/.
Results go to benchmarks/results/export_latency[_quick].json. The Keras paths run the bare
network (logits); the exported graphs add a sigmoid, which only favours Keras.

It also measures what the export's graph rewrites (`exporting.onnx_rewrites.tidy_onnx`) are for, under
"graph_rewrites": the default conv decoder as tf2onnx writes it against the export's tidied
graph (interleaved, batch 1 and 256), and lone 3x3 convolutions on 28x28 maps (32 channels to
1, 2, 3, 4, 8 and 16, and a few with fewer input channels) as onnxruntime's Conv against the
equal ConvTranspose with the flipped kernel, which the export substitutes where
exporting.onnx_rewrites.conv_as_transpose_pays.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def timed(fn, min_seconds, min_calls):
    """Median seconds per call of fn() after 2 warm-up calls."""
    for _ in range(2):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_model():
    """The CPU's model name (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def runners(folder, component, model, input_name):
    """name -> function(inputs) for every way of running one component."""
    import onnxruntime as ort
    import tensorflow as tf

    def onnx_runner(path, threads=0):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {input_name: x})

    def tflite_runner(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(path))
        runner = interpreter.get_signature_runner("serving_default")
        return lambda x: runner(**{input_name: x})

    saved_model = folder / f"saved_model/{component}/1"  # TF Serving's layout
    signature = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    files = {"onnxruntime": (onnx_runner, f"{component}.onnx", {}),
             "onnxruntime_1thread": (onnx_runner, f"{component}.onnx", {"threads": 1}),
             "onnxruntime_fp16": (onnx_runner, f"{component}.fp16.onnx", {}),
             "onnxruntime_int8": (onnx_runner, f"{component}.int8.onnx", {}),
             "litert": (tflite_runner, f"{component}.tflite", {}),
             "litert_int8": (tflite_runner, f"{component}.int8.tflite", {})}
    runs = {name: make(folder / path, **kwargs) for name, (make, path, kwargs) in files.items()
            if (folder / path).exists()}  # a variant the export refused is not there
    runs.update({
        "saved_model": lambda x: signature(**{input_name: tf.constant(x)}),
        "keras_predict": lambda x: model.predict(x, batch_size=len(x), verbose=0),
        "keras_call": lambda x: model(x, training=False),
    })
    return runs


def bench_model(label, vae, quick, out_root, data=None):
    import keras_vae as kv

    folder = out_root / label
    started = time.perf_counter()
    formats, refused = list(kv.exporting.ALL_FORMATS), {}
    while True:
        try:
            manifest = kv.export(vae, folder, formats=formats, data=data, overwrite=True)
            break
        except kv.exporting.ExportError as err:  # a quantized variant over its error budget
            if err.fmt is None or err.fmt in kv.exporting.DEFAULT_FORMATS:
                raise
            formats.remove(err.fmt)
            refused[err.fmt] = str(err)
            print(f"  {label}: the export refused {err.fmt}: {str(err)[:160]}...")
    export_seconds = time.perf_counter() - started
    rng = np.random.default_rng(0)
    # Runners take turns, several rounds each, and each keeps the median of its rounds: on a
    # shared machine the load drifts, and interleaving spreads it evenly over the runners.
    rounds, min_seconds, min_calls = (2, 0.02, 3) if quick else (7, 0.25, 20)
    big = 32 if quick else 256
    result = {"latent_dim": vae.latent_dim, "input_shape": list(vae.input_shape_),
              "parameters": int(vae.encoder.count_params() + vae.decoder.count_params()),
              "export_seconds_all_formats": round(export_seconds, 2),
              "refused_by_export": refused,
              "sizes_bytes": {a["path"]: a["size_bytes"] for a in manifest["artifacts"]}}
    for component, model, input_name, shape in (
            ("decoder", vae.decoder, "z", (vae.latent_dim,)),
            ("encoder", vae.encoder, "x", tuple(vae.input_shape_))):
        x1 = rng.random((1,) + shape).astype("float32")
        xb = rng.random((big,) + shape).astype("float32")
        runs = runners(folder, component, model, input_name)
        single = {name: [] for name in runs}
        batched = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                single[name].append(timed(lambda: run(x1), min_seconds, min_calls))
                batched[name].append(timed(lambda: run(xb), min_seconds, 3))
        rows = {name: {"batch1_latency_ms": statistics.median(single[name]) * 1e3,
                       f"batch{big}_examples_per_s": big / statistics.median(batched[name])}
                for name in runs}
        ref = rows["saved_model"]
        for row in rows.values():
            row["batch1_speedup_vs_saved_model"] = ref["batch1_latency_ms"] / row[
                "batch1_latency_ms"]
            row[f"batch{big}_throughput_vs_saved_model"] = (
                row[f"batch{big}_examples_per_s"] / ref[f"batch{big}_examples_per_s"])
        result[component] = rows
    return result


# (in, out) channels of the lone convolutions timed as Conv and as ConvTranspose: the decoder's
# last layer (32 -> 1) and its neighbours, and few input channels, where the rewrite can lose.
CONV_CHANNELS = ((32, 1), (32, 2), (32, 3), (32, 4), (32, 8), (32, 16),
                 (4, 1), (4, 4), (8, 1), (16, 2), (16, 4))


def graph_rewrites(vae, quick):
    """The export's tidied ONNX decoder against tf2onnx's own graph, and Conv against the
    equal ConvTranspose for few output channels, timed in onnxruntime (default threads)."""
    import onnx
    import onnxruntime as ort
    import tf2onnx

    from keras_vae import exporting

    def session(model):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])

    rounds, min_seconds, min_calls = (2, 0.02, 3) if quick else (7, 0.25, 20)
    rng = np.random.default_rng(0)
    graphs = exporting.graphs.Graphs(vae)
    raw, _ = tf2onnx.convert.from_function(graphs.tf_function("decoder"),
                                           input_signature=[graphs.specs["decoder"]], opset=17)
    tidied = exporting.onnx_rewrites.tidy_onnx(onnx.ModelProto.FromString(raw.SerializeToString()))
    decoders = {"tf2onnx": session(raw), "export": session(tidied)}
    result = {"decoder": {name: {"ops": [n.op_type for n in model.graph.node]}
                          for name, model in (("tf2onnx", raw), ("export", tidied))}}
    for batch in (1, 32 if quick else 256):
        z = rng.standard_normal((batch, vae.latent_dim)).astype("float32")
        times = {name: [] for name in decoders}
        for _ in range(rounds):
            for name, sess in decoders.items():
                times[name].append(timed(lambda: sess.run(None, {"z": z}), min_seconds,
                                         min_calls if batch == 1 else 3))
        for name in decoders:
            result["decoder"][name][f"batch{batch}_ms"] = statistics.median(times[name]) * 1e3

    size = 8 if quick else 28
    result["conv_vs_conv_transpose"] = rows = []
    for in_channels, out_channels in CONV_CHANNELS:
        weight = rng.standard_normal((out_channels, in_channels, 3, 3)).astype("float32")
        node = onnx.helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3],
                                     pads=[1, 1, 1, 1])
        graph = onnx.helper.make_graph(
            [node], "conv", [onnx.helper.make_tensor_value_info(
                "x", onnx.TensorProto.FLOAT, ["batch", in_channels, size, size])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                                ["batch", out_channels, size, size])],
            [onnx.numpy_helper.from_array(weight, "w"),
             onnx.numpy_helper.from_array(np.zeros(out_channels, "float32") + 0.1, "b")])
        conv = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        # rewritten at every width, to time it where the export does not apply it too
        flipped = exporting.onnx_rewrites.tidy_onnx(onnx.ModelProto.FromString(conv.SerializeToString()),
                                       conv_as_transpose=lambda out, inp: True)
        by_export = exporting.onnx_rewrites.tidy_onnx(onnx.ModelProto.FromString(conv.SerializeToString()))
        sessions = {"conv": session(conv), "conv_transpose": session(flipped)}
        row = {"out_channels": out_channels, "in_channels": in_channels, "size": size,
               "rewritten_by_export": by_export.graph.node[0].op_type == "ConvTranspose"}
        for batch in (1, 64):
            x = rng.standard_normal((batch, in_channels, size, size)).astype("float32")
            got = [s.run(None, {"x": x})[0] for s in sessions.values()]
            row[f"batch{batch}_max_abs_diff"] = float(np.abs(got[0] - got[1]).max())
            for name, sess in sessions.items():
                row[f"batch{batch}_{name}_us"] = statistics.median(
                    timed(lambda: sess.run(None, {"x": x}), min_seconds / 2, 10)
                    for _ in range(3)) * 1e6
            row[f"batch{batch}_speedup"] = row[f"batch{batch}_conv_us"] / row[
                f"batch{batch}_conv_transpose_us"]
        rows.append(row)
    return result


def trained_like(vae, seed=0):
    """Non-zero biases, as a trained model has: tf2onnx folds away an Add of zeros, which would
    flatter the ONNX graphs of a freshly initialized model."""
    rng = np.random.default_rng(seed)
    for variable in vae.weights:
        if variable.path.endswith("bias"):
            variable.assign(0.01 * rng.standard_normal(variable.shape).astype("float32"))
    return vae


def print_table(label, result):
    print(f"\n{label}: {result['parameters']} parameters, latent {result['latent_dim']}")
    for component in ("decoder", "encoder"):
        rows = result[component]
        big = next(k for k in next(iter(rows.values())) if k.endswith("_examples_per_s"))
        print(f"  {component:8s} {'batch-1 ms':>11s} {'x SavedModel':>13s} "
              f"{big.replace('_examples_per_s', ' ex/s'):>14s} {'x SavedModel':>13s}")
        for name, row in rows.items():
            ratio_key = big.replace("_examples_per_s", "_throughput_vs_saved_model")
            print(f"  {name:18s} {row['batch1_latency_ms']:8.3f} "
                  f"{row['batch1_speedup_vs_saved_model']:10.1f}x "
                  f"{row[big]:14.0f} {row[ratio_key]:12.2f}x")
    print("  sizes (KiB): " + ", ".join(f"{k} {v / 1024:.0f}"
                                        for k, v in result["sizes_bytes"].items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few calls (tests)")
    parser.add_argument("--out", help="JSON file (default benchmarks/results/"
                                      "export_latency[_quick].json)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:  # the exports and the zoo model's cache
        results = run(args.quick, Path(tmp))
    out = Path(args.out) if args.out else (Path(__file__).parent / "results" / (
        "export_latency_quick.json" if args.quick else "export_latency.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return results


def run(quick, tmp):
    """Exports every model under tmp and times each runner; returns the results dict."""
    import keras
    import onnxruntime as ort
    import tensorflow as tf

    import keras_vae as kv

    keras.utils.set_random_seed(0)
    if quick:
        models = {"kingma_welling_tiny": kv.VAE.kingma_welling(64, 4, hidden_units=32)}
    else:
        models = {"kingma_welling_784_500_20": kv.VAE.kingma_welling(784, 20),
                  "conv_28x28_16": kv.VAE.conv((28, 28, 1), 16)}
    for vae in models.values():
        trained_like(vae)
    data = {}
    mnist = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "binarized_mnist.npz"
    if not quick and mnist.is_file():
        # The conv model the zoo ships (trained weights, from this checkout's weights/ folder);
        # its int8 variants need real images to calibrate on (without, the export refuses them).
        models["zoo_conv_mnist_z16"] = kv.zoo.load(
            "conv_mnist_z16", base_url=str(Path(__file__).resolve().parents[1] / "weights"),
            cache_dir=str(tmp / "zoo_cache"), verbose=False)
        valid = kv.zoo.load_data("binarized_mnist", str(mnist))[1]
        data["zoo_conv_mnist_z16"] = valid[:2000].reshape(-1, 28, 28, 1)
    results = {
        "benchmark": "export_latency", "quick": quick,
        "machine": {"platform": platform.platform(), "processor": cpu_model(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": list(os.getloadavg())},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "onnxruntime": ort.__version__, "keras_vae": kv.__version__},
        "note": "one process, CPU only, default thread settings of each runtime (a load "
                "average above cpu_count means other work shared the cores); weights "
                "untrained but with non-zero biases, as trained ones have (tf2onnx drops an "
                "Add of zeros); ratios are to the reloaded SavedModel measured in the same run",
        "models": {},
    }
    for label, vae in models.items():
        results["models"][label] = bench_model(label, vae, quick, tmp / "exports",
                                               data.get(label))
        print_table(label, results["models"][label])
    conv = models.get("conv_28x28_16") or trained_like(
        kv.VAE.conv((8, 8, 1), 4, filters=(8, 16), dense_units=8))
    results["graph_rewrites"] = rewrites = graph_rewrites(conv, quick)
    big = 32 if quick else 256
    print(f"\nthe conv decoder in onnxruntime, ms at batch 1 / {big}: " + ", ".join(
        f"{name} {row['batch1_ms']:.3f} / {row[f'batch{big}_ms']:.3f}"
        for name, row in rewrites["decoder"].items()))
    for row in rewrites["conv_vs_conv_transpose"]:
        print(f"  3x3 conv {row['in_channels']:2d} -> {row['out_channels']:2d} channels: Conv "
              f"{row['batch1_conv_us']:.1f} us, as ConvTranspose "
              f"{row['batch1_conv_transpose_us']:.1f} us ({row['batch1_speedup']:.2f}x; "
              f"batch 64: {row['batch64_speedup']:.2f}x)")
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    return results


if __name__ == "__main__":
    main()

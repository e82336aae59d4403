"""Time to draw PixelVAE images with the bundle runtime (onnxruntime) against Keras, one run.

    python benchmarks/pixel_draw.py            # zoo pixelcnn_mnist_z32 from this checkout
    python benchmarks/pixel_draw.py --quick    # a tiny untrained PixelVAE, 6x6 images

Exports the model (`kv.export`, default formats) into a temporary folder, then draws n = 1 and
n = 64 images x ~ p(x|z) (784 decoder passes each, raster order) with
`keras_vae_runtime.ExportedVAE(threads=T).draw` and with the Keras model's `VAE.decode`, the
two interleaved over `--rounds` rounds; reports the median seconds per draw and the ratio
Keras / runtime. The Keras model runs on TensorFlow with `--threads` intra-op threads too.
Results go to benchmarks/results/pixel_draw[_quick].json.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--results")
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras_vae as kv
    from keras_vae_runtime import ExportedVAE

    if args.quick:
        vae = kv.VAE.pixel_cnn(input_shape=(6, 6, 1), latent_dim=2, filters=(4,),
                               dense_units=8, pixel_filters=8, pixel_layers=1, latent_units=8)
        name, rounds = "tiny PixelVAE 6x6 (untrained)", 1
    else:
        os.environ.setdefault("KERAS_VAE_WEIGHTS_URL", str(REPO / "weights"))
        vae = kv.zoo.load("pixelcnn_mnist_z32", compile=False, verbose=False)
        name, rounds = "pixelcnn_mnist_z32", args.rounds
    work = tempfile.TemporaryDirectory(prefix="pixel-draw-")  # removed when the run ends
    folder = Path(work.name) / "bundle"
    kv.export(vae, folder)
    runtime = ExportedVAE(folder, threads=args.threads)
    rng = np.random.default_rng(0)
    results = {"model": name, "threads": args.threads, "rounds": rounds,
               "cpu": platform.processor() or platform.machine(),
               "load_average_start": os.getloadavg(), "sizes": {}}
    for n in args.sizes:
        z = rng.standard_normal((n, vae.latent_dim)).astype("float32")
        times = {"runtime": [], "keras": []}
        for r in range(rounds):
            t0 = time.perf_counter()
            x_rt = runtime.draw(z, seed=r)
            times["runtime"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            x_keras = vae.decode(z, seed=r)
            times["keras"].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        results["sizes"][str(n)] = {
            "runtime_s": med["runtime"], "keras_s": med["keras"],
            "keras_over_runtime": med["keras"] / med["runtime"],
            "runtime_ms_per_image": 1000 * med["runtime"] / n,
            "ink_runtime": float(x_rt.mean()), "ink_keras": float(x_keras.mean()),
            "all_rounds": times}
        print(f"{name}: n={n:3d}  runtime {med['runtime']:.2f} s  keras {med['keras']:.2f} s  "
              f"keras/runtime {med['keras'] / med['runtime']:.1f}x", flush=True)
    results["load_average_end"] = os.getloadavg()
    out = Path(args.results or REPO / "benchmarks" / "results" /
               f"pixel_draw{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    work.cleanup()


if __name__ == "__main__":
    main()

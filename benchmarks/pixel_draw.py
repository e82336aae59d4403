"""Time to draw PixelVAE images: the compiled `VAE.decode`, the former eager loop, and the
bundle runtime (onnxruntime).

    python benchmarks/pixel_draw.py            # zoo pixelcnn_mnist_z32 from this checkout
    python benchmarks/pixel_draw.py --quick    # a tiny untrained PixelVAE, 6x6 images
    KERAS_BACKEND=jax python benchmarks/pixel_draw.py --no-runtime

Draws n = 1 and n = 64 images x ~ p(x|z) (784 pixels in raster order) with
- "keras": `VAE.decode`, one compiled loop of H * W steps that each compute one logit from a
  receptive-field window (`keras_vae.drawing`); its first call (compilation included) is timed
  apart as "keras_first_s", then `--rounds` calls;
- "eager": the loop `VAE.decode` ran before (H * W eager decoder passes over the whole image,
  numpy noise), `--peer-rounds` calls, for the sizes in `--eager-sizes`;
- "runtime": the exported bundle's `keras_vae_runtime.ExportedVAE(threads=T).draw` (784
  onnxruntime passes), `--peer-rounds` calls (not with `--no-runtime`).
All use the same z and noise seed; reports median seconds per draw, the ratios, and how many
pixels the draws disagree in (they set pixel i by u_i < sigmoid(logit_i) with the same u; logits
agree to float32 round-off). TensorFlow gets `--threads` intra-op threads. Results go to
benchmarks/results/pixel_draw[_quick][_BACKEND].json (no suffix for TensorFlow).
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


def eager_draw(vae, z, seed):
    """The former `VAE.decode` of an autoregressive decoder: H * W eager passes of the whole
    decoder, pixel i from the i-th pass, noise from numpy.random.default_rng(seed)."""
    from keras import ops

    rng = np.random.default_rng(seed)
    height, width, _ = vae.input_shape_
    x = np.zeros((len(z),) + vae.input_shape_, dtype="float32")
    z = ops.convert_to_tensor(z)
    for row in range(height):
        for col in range(width):
            logits = ops.convert_to_numpy(ops.cast(vae.decoder(
                [z, ops.convert_to_tensor(x)], training=False), "float32"))
            p = 0.5 + 0.5 * np.tanh(0.5 * logits[:, row, col, 0])
            x[:, row, col, 0] = rng.random(len(p)) < p
    return x


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer-rounds", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--eager-sizes", type=int, nargs="*", default=[64])
    parser.add_argument("--no-runtime", action="store_true")
    parser.add_argument("--results")
    args = parser.parse_args(argv)

    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras_vae as kv

    if args.quick:
        vae = kv.VAE.pixel_cnn(input_shape=(6, 6, 1), latent_dim=2, filters=(4,),
                               dense_units=8, pixel_filters=8, pixel_layers=1, latent_units=8)
        name, rounds, peer_rounds = "tiny PixelVAE 6x6 (untrained)", 1, 1
    else:
        os.environ.setdefault("KERAS_VAE_WEIGHTS_URL", str(REPO / "weights"))
        vae = kv.zoo.load("pixelcnn_mnist_z32", compile=False, verbose=False)
        name, rounds, peer_rounds = "pixelcnn_mnist_z32", args.rounds, args.peer_rounds
    work = tempfile.TemporaryDirectory(prefix="pixel-draw-")  # removed when the run ends
    runtime = None
    if not args.no_runtime:
        from keras_vae_runtime import ExportedVAE

        folder = Path(work.name) / "bundle"
        kv.export(vae, folder)
        runtime = ExportedVAE(folder, threads=args.threads)
    rng = np.random.default_rng(0)
    results = {"model": name, "backend": backend, "threads": args.threads, "rounds": rounds,
               "peer_rounds": peer_rounds, "cpu": platform.processor() or platform.machine(),
               "load_average_start": os.getloadavg(), "sizes": {}}
    for n in args.sizes:
        z = rng.standard_normal((n, vae.latent_dim)).astype("float32")
        first_s, x_keras = timed(vae.decode, z, seed=0)
        times = {"keras": [timed(vae.decode, z, seed=0)[0] for _ in range(rounds)]}
        row = {"keras_first_s": first_s, "ink_keras": float(x_keras.mean())}
        peers = {}
        if runtime is not None:
            peers["runtime"] = lambda: runtime.draw(z, seed=0)
        if n in args.eager_sizes:
            peers["eager"] = lambda: eager_draw(vae, z, seed=0)
        for peer, fn in peers.items():
            times[peer] = []
            for _ in range(peer_rounds):
                seconds, x_peer = timed(fn)
                times[peer].append(seconds)
            row[f"ink_{peer}"] = float(x_peer.mean())
            row[f"pixels_differing_from_{peer}"] = int((x_peer != x_keras).sum())
        med = {k: statistics.median(v) for k, v in times.items()}
        row.update({f"{k}_s": v for k, v in med.items()})
        row.update({f"{k}_over_keras": v / med["keras"] for k, v in med.items() if k != "keras"})
        row["all_rounds"] = times
        results["sizes"][str(n)] = row
        print(f"{name} [{backend}]: n={n:3d}  " + "  ".join(
            f"{k} {v:.2f} s" for k, v in med.items()) + f"  (keras first call {first_s:.2f} s)",
            flush=True)
    results["load_average_end"] = os.getloadavg()
    suffix = ("_quick" if args.quick else "") + ("" if backend == "tensorflow" else f"_{backend}")
    out = Path(args.results or REPO / "benchmarks" / "results" / f"pixel_draw{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    work.cleanup()


if __name__ == "__main__":
    main()

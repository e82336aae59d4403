"""Speed of the importance-weighted ln p(x) of the PixelVAE (`pixelcnn_mnist_z32`): the chunk
plan that bounds samples x examples x pixels x filters (the head's working set, the default now)
against the former plan that bounded samples x examples x pixels only.

    KERAS_BACKEND=jax python benchmarks/pixel_iwae.py --data ../shared/datasets/binarized_mnist.npz

Evaluates the first `--n` test images at k = `--k`, the two plans interleaved over `--rounds`
rounds, and reports images per second (median) and the estimates (they differ by Monte Carlo
noise only: the plans split the k samples into different chunks). Results go to
benchmarks/results/pixel_iwae.json.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" /
                                              "binarized_mnist.npz"))
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--k", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results")
    args = parser.parse_args(argv)

    import keras
    import keras_vae as kv
    from keras_vae import evaluation

    os.environ.setdefault("KERAS_VAE_WEIGHTS_URL", str(REPO / "weights"))
    vae = kv.zoo.load("pixelcnn_mnist_z32", compile=False, verbose=False)
    x = np.load(args.data)["test"][:args.n].reshape(-1, 28, 28, 1).astype("float32")
    former = evaluation._plan(args.n, args.k, 784, None, None, evaluation.DEFAULT_MAX_ELEMENTS)
    plans = {"former": {"batch_size": former[0], "chunk_size": former[1]},
             "default": {"batch_size": None, "chunk_size": None}}
    times = {name: [] for name in plans}
    estimates = {}
    for _ in range(args.rounds):
        for name, plan in plans.items():
            start = time.perf_counter()
            log_px = evaluation.log_likelihood(vae, x, num_samples=args.k, seed=0, verbose=0,
                                               **plan)
            times[name].append(time.perf_counter() - start)
            estimates[name] = log_px.tolist()
    images_per_s = {name: args.n / statistics.median(t) for name, t in times.items()}
    results = {"backend": keras.backend.backend(), "n": args.n, "k": args.k,
               "former_plan": former,
               "default_plan": evaluation._plan(args.n, args.k, 784 * vae.decoder.filters, None,
                                                None, evaluation.DEFAULT_MAX_ELEMENTS),
               "images_per_s": images_per_s,
               "speedup": images_per_s["default"] / images_per_s["former"],
               "estimates": estimates, "seconds": times, "load_average": os.getloadavg()}
    print(json.dumps({k: results[k] for k in ("former_plan", "default_plan", "images_per_s",
                                               "speedup")}))
    out = Path(args.results or REPO / "benchmarks" / "results" / "pixel_iwae.json")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Training throughput of keras-vae's `fit` against two peers, same machine, same run.

Peers (in ../shared/bench, each printing one JSON line): a plain PyTorch VAE
(`torch_reference.py`) and the Keras example's custom `train_step` (`keras_example_reference.py`).
All train the Kingma-Welling MLP (784-500-20, tanh, Bernoulli) with Adam 1e-3, batch 100, on
the same data, time `--epochs` epochs after one warm-up epoch, and report samples/s. keras-vae
runs as the same kind of subprocess (this file with `--worker`), in variants that switch one
lever each (XLA, steps_per_execution, tf.data input), so each lever's effect is measured too.

The machine is shared, so contenders run interleaved, round after round, and the medians are
reported. Results: benchmarks/results/throughput.json.

    python benchmarks/throughput.py                  # ~10 min on 2 cores
    python benchmarks/throughput.py --quick          # synthetic data, seconds per contender
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
DEFAULT_DATA = os.path.join(SHARED, "datasets", "binarized_mnist.npz")
DEFAULT_BENCH = os.path.join(SHARED, "bench")
DEFAULT_RESULTS = os.path.join(REPO, "benchmarks", "results", "throughput.json")

# keras-vae variants: name -> settings for the worker. "default" is what a user gets from
# `vae.compile(optimizer="adam"); vae.fit(x, batch_size=100)`.
VARIANTS = {
    "default": {},   # TensorFlow backend: VAE.compile's "auto" means XLA, on CPU too
    "xla": {"jit_compile": True},
    "jax": {"backend": "jax"},   # KERAS_BACKEND=jax: the same model and fit, XLA via JAX
    "no_xla": {"jit_compile": False},   # Keras's own "auto" on a CPU-only machine
    "steps_per_execution_1": {"steps_per_execution": 1},
    "steps_per_execution_50": {"steps_per_execution": 50},
    "tf_data": {"tf_data": True},
}


# ----------------------------------------------------------------------------- worker
def worker(args):
    """Times keras-vae's fit like the peers do; prints one JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, REPO)
    import numpy as np
    import keras
    import keras_vae as kv

    settings = VARIANTS[args.variant]
    keras.utils.set_random_seed(0)
    x = kv.datasets.read_npz(args.data)["train"].astype("float32")
    vae = kv.VAE.kingma_welling(input_dim=x.shape[1], latent_dim=args.latent,
                                hidden_units=args.hidden, seed=0)
    compile_kwargs = {k: settings[k] for k in ("jit_compile", "steps_per_execution")
                      if k in settings}
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), **compile_kwargs)
    if settings.get("tf_data"):
        import tensorflow as tf

        data = (tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=0)
                .batch(args.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
        fit = lambda epochs: vae.fit(data, epochs=epochs, verbose=0)  # noqa: E731
    else:
        fit = lambda epochs: vae.fit(x, epochs=epochs, batch_size=args.batch,  # noqa: E731
                                     verbose=0)
    fit(1)  # warm-up: tracing and XLA compilation
    start = time.perf_counter()
    history = fit(args.epochs)
    seconds = (time.perf_counter() - start) / args.epochs
    print(json.dumps({
        "peer": f"keras-vae:{args.variant}", "seconds_per_epoch": round(seconds, 3),
        "samples_per_second": round(len(x) / seconds, 1),
        "last_train_loss": round(history.history["loss"][-1], 2),
        "jit_compile": vae.jit_compile, "steps_per_execution": vae.steps_per_execution,
        "backend": keras.backend.backend()}))


# ----------------------------------------------------------------------------- driver
def contenders(args):
    """name -> (argv, extra environment) of each subprocess.

    PyTorch runs twice: with its default thread count (2 here) and with one OpenMP thread,
    because its OpenMP threads slow down sharply when other jobs hold the cores (spinning
    barriers); the faster of all peer configurations is the one compared against.
    """
    common = ["--data", args.data, "--epochs", str(args.epochs)]
    out = {}
    if not args.skip_peers:
        torch_ref = os.path.join(args.bench_dir, "torch_reference.py")
        keras_ref = os.path.join(args.bench_dir, "keras_example_reference.py")
        for path in (torch_ref, keras_ref):
            if not os.path.exists(path):
                raise SystemExit(f"error: peer {path} not found; pass --bench-dir or "
                                 "--skip-peers.")
        out["torch"] = ([sys.executable, torch_ref] + common, {})
        out["torch-1-thread"] = ([sys.executable, torch_ref] + common, {"OMP_NUM_THREADS": "1"})
        out["keras-example"] = ([sys.executable, keras_ref] + common, {})
    for variant in args.variants:
        backend = VARIANTS[variant].get("backend")
        env = {"KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"} if backend else {}
        out[f"keras-vae:{variant}"] = ([sys.executable, os.path.abspath(__file__), "--worker",
                                        "--variant", variant] + common, env)
    return out


def run_one(argv, extra_env, timeout):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO, **extra_env)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def synthetic_npz(directory, n=2000, dims=784):
    import numpy as np

    rng = np.random.default_rng(0)
    protos = rng.uniform(size=(10, dims)) ** 3
    x = (rng.uniform(size=(n, dims)) < protos[rng.integers(0, 10, n)]).astype("uint8")
    path = os.path.join(directory, "synthetic.npz")
    np.savez(path, train=x, valid=x[:100], test=x[:100])
    return path


def machine():
    import platform

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average_at_start": load, "python": platform.python_version(),
            "note": "2 CPU cores shared with other developers' jobs: contenders run "
                    "interleaved and medians are reported"}


def versions():
    out = {}
    for module in ("keras", "tensorflow", "torch"):
        try:
            out[module] = __import__(module).__version__
        except Exception:  # a missing peer library is reported, not fatal
            out[module] = None
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="default", choices=list(VARIANTS))
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--bench-dir", default=DEFAULT_BENCH, help="folder of the peer scripts")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="keras-vae variants to run, comma-separated")
    p.add_argument("--skip-peers", action="store_true")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--latent", type=int, default=20)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--results", default=DEFAULT_RESULTS)
    p.add_argument("--quick", action="store_true",
                   help="synthetic data (2000 x 784), 1 epoch, 1 round")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.data, args.epochs, args.rounds = synthetic_npz(tmp), 1, 1
        elif not os.path.exists(args.data):
            raise SystemExit(f"error: {args.data} not found; pass --data or use --quick.")
        runs = contenders(args)
        samples = {name: [] for name in runs}
        for r in range(args.rounds):
            for name, (cmd, extra_env) in runs.items():
                result = run_one(cmd, extra_env, timeout=1800)
                result["load_average_1min_after"] = round(os.getloadavg()[0], 2)
                samples[name].append(result)
                print(f"round {r + 1}/{args.rounds} {name:28s} "
                      f"{result['samples_per_second']:9.0f} samples/s", flush=True)
    summary = {}
    for name, results in samples.items():
        rates = [res["samples_per_second"] for res in results]
        summary[name] = {"median_samples_per_second": statistics.median(rates),
                         "samples_per_second": rates,
                         "load_average_1min_after_each": [res["load_average_1min_after"]
                                                          for res in results],
                         "last_train_loss": results[-1].get("last_train_loss"),
                         "backend": results[-1].get("backend")}
    peers = [n for n in ("torch", "torch-1-thread", "keras-example") if n in summary]
    out = {"benchmark": "throughput", "quick": args.quick, "machine": machine(),
           "versions": versions(), "epochs_timed": args.epochs, "rounds": args.rounds,
           "architecture": f"784-{args.hidden}-{args.latent} tanh, Bernoulli, Adam 1e-3",
           "batch_size": args.batch, "data": os.path.basename(args.data), "results": summary}
    if peers:
        fastest = max(peers, key=lambda n: summary[n]["median_samples_per_second"])
        out["fastest_peer"] = fastest
        out["ratio_to_fastest_peer"] = {
            name: round(summary[name]["median_samples_per_second"]
                        / summary[fastest]["median_samples_per_second"], 2)
            for name in summary if name.startswith("keras-vae")}
        print(f"fastest peer: {fastest}; keras-vae ratios: {out['ratio_to_fastest_peer']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()

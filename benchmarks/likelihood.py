#!/usr/bin/env python3
"""Test NLL on statically binarized MNIST for the zoo architectures, against the literature.

Trains each model on `train` (Adam 1e-3, batch 100), early-stops on the `valid` -ELBO (best
weights restored), then reports the importance-weighted test NLL with k = 5000 (Burda et al.)
plus the wall time and peak memory of that evaluation. Each model and its results JSON go to
`--out-dir/<name>/` (default runs/likelihood/ in the repository, ignored by git); the
combined results go to benchmarks/results/likelihood.json.

Resumable: a model whose results.json exists is skipped; a finished model.keras without
results is only evaluated; interrupted training resumes from its BackupAndRestore checkpoint.

    nice -n 10 python benchmarks/likelihood.py                 # the real run (~45 min on 2 cores)
    python benchmarks/likelihood.py --quick --out-dir OUT   # seconds, synthetic data
"""

import argparse
import json
import os
import platform
import shlex
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "datasets", "binarized_mnist.npz")
DEFAULT_RESULTS = os.path.join(REPO, "benchmarks", "results", "likelihood.json")

# Published test NLLs (nats) on statically binarized MNIST, for the README's table.
REFERENCES = {
    "VAE, 1 stochastic layer (IWAE paper, Burda et al. 2015)": 88.7,
    "Pythae VAE reproduction (200 samples)": 89.8,
    "IWAE k=50 (Burda et al. 2015)": 87.1,
    "VampPrior VAE (Tomczak & Welling 2018)": 85.57,
    "IAF ResNet VAE (Kingma et al. 2016)": 79.88,
}

# name -> (constructor name, kwargs). Input is flat 784 except for the conv model.
MODELS = {
    "kingma_welling": ("kingma_welling", dict(input_dim=784, latent_dim=20)),
    "mlp": ("mlp", dict(input_shape=(784,), latent_dim=32, hidden_units=(512, 256))),
    "conv": ("conv", dict(input_shape=(28, 28, 1), latent_dim=32, filters=(32, 64))),
}


class PeakMemory:
    """Samples this process's resident memory every 20 ms; `.peak_mib` over the block."""

    def __init__(self):
        import psutil  # in the `bench` extra (and installed with the `test` one via ipykernel)

        self.process = psutil.Process()
        self.baseline_mib = self.process.memory_info().rss / 2 ** 20
        self.peak_mib = self.baseline_mib
        self._stop = threading.Event()

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak_mib = max(self.peak_mib, self.process.memory_info().rss / 2 ** 20)

    def __enter__(self):
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self.process.memory_info().rss / 2 ** 20)


class TimeBudget:
    """A Keras callback that stops training once `minutes` of wall time have passed."""

    def __new__(cls, minutes):
        import keras

        class _TimeBudget(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.start = time.perf_counter()
                self.hit = False

            def on_epoch_end(self, epoch, logs=None):
                if time.perf_counter() - self.start > minutes * 60:
                    self.hit = True
                    self.model.stop_training = True

        return _TimeBudget()


def hardware():
    import tensorflow as tf

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "gpu": bool(tf.config.list_physical_devices("GPU")),
            "note": "2 CPU cores shared with other developers' jobs (timings are noisy)"}


def load_data(args):
    if args.quick:
        # Synthetic binary data: a mixture of 10 random Bernoulli prototypes, 8x8 images.
        rng = np.random.default_rng(0)
        protos = rng.uniform(0.05, 0.95, size=(10, 64)) ** 3
        def draw(n):
            return (rng.uniform(size=(n, 64)) < protos[rng.integers(0, 10, n)]).astype("uint8")
        return draw(600), draw(200), draw(200)
    if not os.path.exists(args.data):
        raise SystemExit(f"error: {args.data} not found. Pass --data PATH to the statically "
                         "binarized MNIST npz (arrays train/valid/test), or use --quick.")
    from keras_vae.datasets.splits import load_splits  # checks the file: binary, (N, 784)

    return load_splits("binarized_mnist", args.data)


def build(name, quick):
    import keras_vae as kv

    ctor, kwargs = MODELS[name]
    kwargs = dict(kwargs)
    if quick:  # same architectures on 8x8 inputs, smaller
        kwargs = {"kingma_welling": dict(input_dim=64, latent_dim=4, hidden_units=32),
                  "mlp": dict(input_shape=(64,), latent_dim=4, hidden_units=(32, 16)),
                  "conv": dict(input_shape=(8, 8, 1), latent_dim=4, filters=(4, 8),
                               dense_units=16)}[name]
    return getattr(kv.VAE, ctor)(seed=0, **kwargs)


def shape_for(vae, x):
    return x.reshape((-1,) + tuple(vae.input_shape_)).astype("float32")


def run_model(name, args, data):
    import keras
    import keras_vae as kv

    out_dir = os.path.join(args.out_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    results_path = os.path.join(out_dir, "results.json")
    model_path = os.path.join(out_dir, "model.keras")
    if os.path.exists(results_path) and not args.overwrite:
        print(f"[{name}] {results_path} exists: skipping (pass --overwrite to redo)")
        with open(results_path) as f:
            return json.load(f)
    keras.utils.set_random_seed(0)
    train, valid, test = data
    info = {"model": name, "constructor": MODELS[name][0], "hardware": hardware(),
            "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
            "keras": keras.__version__, "backend": keras.backend.backend()}
    if os.path.exists(model_path) and not args.overwrite:
        print(f"[{name}] {model_path} exists: evaluating it")
        vae = keras.saving.load_model(model_path)
        with open(os.path.join(out_dir, "training.json")) as f:
            info.update(json.load(f))
    else:
        vae = build(name, args.quick)
        x_train, x_valid = shape_for(vae, train), shape_for(vae, valid)
        vae.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        budget = TimeBudget(args.minutes)
        callbacks = [
            keras.callbacks.EarlyStopping("val_neg_elbo", mode="min", patience=args.patience,
                                          restore_best_weights=True),
            keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")),
            keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
            budget,
        ]
        start = time.perf_counter()
        history = vae.fit(x_train, epochs=args.max_epochs, batch_size=100, shuffle=True,
                          validation_data=x_valid, callbacks=callbacks, verbose=2)
        train_seconds = time.perf_counter() - start
        val = history.history["val_neg_elbo"]
        training = {"epochs_run": len(val), "best_epoch": int(np.argmin(val)) + 1,
                    "best_valid_neg_elbo": float(np.min(val)),
                    "train_seconds": round(train_seconds, 1),
                    "stopped_by": "time budget" if budget.hit else (
                        "early stopping" if len(val) < args.max_epochs else "max epochs"),
                    "max_epochs": args.max_epochs, "patience": args.patience,
                    "time_budget_minutes": args.minutes, "batch_size": 100,
                    "learning_rate": args.learning_rate,
                    "parameters": int(vae.count_params())}
        vae.save(model_path)
        with open(os.path.join(out_dir, "training.json"), "w") as f:
            json.dump(training, f, indent=2)
        info.update(training)
    x_test = shape_for(vae, test)
    if args.test_limit and args.test_limit < len(x_test):
        # A fixed random subset: the file's first images are far easier than the rest (first
        # 2000: -ELBO 80 vs 98 on all 10k for the mlp model), so a prefix would be biased.
        pick = np.random.default_rng(0).choice(len(x_test), args.test_limit, replace=False)
        x_test = x_test[np.sort(pick)]
        info["test_subset"] = f"{args.test_limit} random test images (numpy default_rng(0))"
    print(f"[{name}] test NLL with k={args.num_samples} on {len(x_test)} examples ...")
    with PeakMemory() as mem:
        report = kv.evaluation.likelihood_report(vae, x_test, num_samples=args.num_samples,
                                                 seed=0, verbose=1)
    info.update({"test": {k: (round(v, 3) if isinstance(v, float) else v)
                          for k, v in report.items()},
                 "evaluation_seconds": round(report["seconds"], 1),
                 "evaluation_peak_rss_mib": round(mem.peak_mib, 1),
                 "evaluation_rss_increase_mib": round(mem.peak_mib - mem.baseline_mib, 1)})
    with open(results_path, "w") as f:
        json.dump(info, f, indent=2)
    print(f"[{name}] test NLL {report['nll']:.2f} nats (-ELBO {report['neg_elbo']:.2f}), "
          f"eval {report['seconds']:.0f} s, peak RSS {mem.peak_mib:.0f} MiB")
    return info


def memory_probe(args):
    """One evaluation of 50 test images, k=5000, at --memory-probe max_elements: prints JSON.

    Runs in a fresh process so the peak over the process's baseline (after loading the model
    and TensorFlow) is the evaluation's own memory, XLA compilation included.
    """
    import keras
    import keras_vae as kv

    vae = keras.saving.load_model(os.path.join(args.out_dir, "kingma_welling", "model.keras"))
    x = shape_for(vae, load_data(args)[2][:50])
    vae.encode(x[:2])
    with PeakMemory() as mem:
        start = time.perf_counter()
        kv.evaluation.log_likelihood(vae, x, num_samples=args.num_samples,
                                     max_elements=args.memory_probe, seed=0, verbose=0)
        seconds = time.perf_counter() - start
    print(json.dumps({"max_elements": args.memory_probe, "examples": len(x),
                      "num_samples": args.num_samples,
                      "rss_increase_mib": round(mem.peak_mib - mem.baseline_mib, 1),
                      "baseline_rss_mib": round(mem.baseline_mib, 1),
                      "seconds_including_compilation": round(seconds, 2)}))


def memory_sweep(args):
    """Peak memory of the k=5000 evaluation for several max_elements, one process each."""
    import subprocess

    rows = []
    for max_elements in (2 ** 21, 2 ** 23, 2 ** 25):
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", str(max_elements),
               "--out-dir", args.out_dir, "--data", args.data,
               "--num-samples", str(args.num_samples)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    path = os.path.join(os.path.dirname(os.path.abspath(args.results)), "evaluation_memory.json")
    with open(path, "w") as f:
        json.dump({"benchmark": "evaluation peak memory", "model": "kingma_welling",
                   "input_dim": 784 if not args.quick else 64, "hardware": hardware(),
                   "runs": rows}, f, indent=2)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="binarized MNIST npz")
    p.add_argument("--models", default="kingma_welling,mlp",
                   help=f"comma-separated, from {','.join(MODELS)}")
    p.add_argument("--out-dir", default=os.path.join(REPO, "runs", "likelihood"),
                   help="models and per-model results go to OUT_DIR/<name>/")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="combined results JSON")
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--patience", type=int, default=30)
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--num-samples", type=int, default=5000, help="k of the test NLL")
    p.add_argument("--test-limit", type=int, default=0,
                   help="evaluate on N random test examples only (0: all 10,000)")
    p.add_argument("--overwrite", action="store_true", help="retrain even if results exist")
    p.add_argument("--memory-sweep", action="store_true",
                   help="only measure the evaluation's peak memory for 3 max_elements values "
                        "(needs OUT_DIR/kingma_welling/model.keras); writes "
                        "evaluation_memory.json beside --results")
    p.add_argument("--memory-probe", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true",
                   help="synthetic 8x8 data, 3 epochs, k=20: checks the pipeline in seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.max_epochs, args.num_samples, args.minutes = 3, 20, 5.0
    if args.memory_probe:
        return memory_probe(args)
    if args.memory_sweep:
        return memory_sweep(args)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    data = load_data(args)
    results = {"benchmark": "likelihood", "dataset": "quick synthetic" if args.quick else
               "statically binarized MNIST (Larochelle & Murray 2011)",
               "references_nll": REFERENCES, "models": {}}
    if os.path.exists(args.results) and not args.quick:
        with open(args.results) as f:
            results["models"] = json.load(f).get("models", {})
    for name in names:
        results["models"][name] = run_model(name, args, data)
        os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
        with open(args.results, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()

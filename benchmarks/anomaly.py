#!/usr/bin/env python3
"""Held-out-class anomaly detection on scikit-learn's 8x8 digits.

For each held-out digit d: train a VAE on the other nine digits only (60% of them; 20% are the
normal validation set the threshold is fitted on, 20% the normal test set), then score the
normal test set and every image of digit d (the anomalies) with -ELBO and with the
importance-weighted -ln p(x). Reports AUROC, average precision, and the false/true-positive
rates at a threshold fitted for a 5% false-positive rate on validation data.

Why digits: the statically binarized MNIST npz in ../shared has no labels, and TFDS's MNIST
cannot be downloaded on this machine (no network but package registries), so the experiment
uses the labelled digits that ship inside scikit-learn (1797 images, pixels / 16 in [0, 1]).

    python benchmarks/anomaly.py            # all 10 digits, ~5 min on 2 cores
    python benchmarks/anomaly.py --quick    # one digit, few epochs, seconds

Writes benchmarks/results/anomaly.json and benchmarks/results/anomaly_roc.png.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results")


def split(digit, seed=0):
    """(train, valid, test_normal, test_anomalous) arrays, float32 in [0, 1], (n, 64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target
    normal, labels = x[y != digit], y[y != digit]
    train, rest, _, rest_labels = train_test_split(normal, labels, test_size=0.4,
                                                   stratify=labels, random_state=seed)
    valid, test = train_test_split(rest, test_size=0.5, stratify=rest_labels,
                                   random_state=seed)
    return train, valid, test, x[y == digit]


def run_digit(digit, args):
    import keras
    import keras_vae as kv
    from keras_vae import evaluation

    keras.utils.set_random_seed(digit)
    train, valid, test, anomalous = split(digit)
    vae = kv.VAE.mlp((64,), latent_dim=args.latent_dim, hidden_units=(128, 64), seed=digit)
    vae.compile(optimizer=keras.optimizers.Adam(2e-3))
    start = time.perf_counter()
    vae.fit(train, epochs=args.epochs, batch_size=64, validation_data=valid, verbose=0,
            callbacks=[keras.callbacks.EarlyStopping("val_neg_elbo", mode="min", patience=20,
                                                     restore_best_weights=True)])
    out = {"digit": digit, "train_seconds": round(time.perf_counter() - start, 1),
           "n_train": len(train), "n_valid": len(valid), "n_test_normal": len(test),
           "n_test_anomalous": len(anomalous)}
    for method, k in (("elbo", args.elbo_samples), ("iwae", args.iwae_samples)):
        detector = evaluation.AnomalyDetector(vae, method=method, fpr=args.fpr, num_samples=k)
        detector.fit(valid)
        metrics = detector.evaluate(test, anomalous)
        out[method] = {"num_samples": k, **{key: round(val, 4) if isinstance(val, float) else val
                                            for key, val in metrics.items()}}
    print(f"held-out digit {digit}: AUROC elbo {out['elbo']['auroc']:.3f}, "
          f"iwae {out['iwae']['auroc']:.3f}; at the {args.fpr:.0%}-FPR threshold: test FPR "
          f"{out['elbo']['fpr']:.3f}, TPR {out['elbo']['tpr']:.3f}", flush=True)
    return out


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for res in results:
        ax.plot(res["elbo"]["roc_fpr"], res["elbo"]["roc_tpr"], lw=1.2,
                label=f"{res['digit']}  (AUROC {res['elbo']['auroc']:.2f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false-positive rate (normal digits flagged)")
    ax.set_ylabel("true-positive rate (held-out digit flagged)")
    ax.set_title("VAE anomaly score -ELBO, held-out digit")
    ax.legend(title="held-out digit", fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9", help="held-out digits to run")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--fpr", type=float, default=0.05, help="threshold's false-positive rate")
    p.add_argument("--elbo-samples", type=int, default=10)
    p.add_argument("--iwae-samples", type=int, default=500)
    p.add_argument("--out-dir", default=RESULTS, help="where anomaly.json and the PNG go")
    p.add_argument("--quick", action="store_true", help="digit 0 only, 5 epochs, k=20")
    args = p.parse_args(argv)
    if args.quick:
        args.digits, args.epochs, args.iwae_samples = "0", 5, 20
    digits = [int(d) for d in args.digits.split(",")]
    if any(not 0 <= d <= 9 for d in digits):
        p.error("--digits takes digits 0-9")
    results = [run_digit(d, args) for d in digits]
    summary = {m: round(float(np.mean([r[m]["auroc"] for r in results])), 4)
               for m in ("elbo", "iwae")}
    out = {"benchmark": "anomaly", "dataset": "sklearn load_digits (8x8, pixels / 16)",
           "quick": args.quick, "model": f"VAE.mlp((64,), latent_dim={args.latent_dim}, "
           "hidden_units=(128, 64)), Bernoulli", "epochs_max": args.epochs,
           "threshold_fpr": args.fpr, "mean_auroc": summary, "per_digit": results}
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "anomaly.json"), "w") as f:
        json.dump(out, f, indent=1)
    plot(results, os.path.join(args.out_dir, "anomaly_roc.png"))
    print(f"mean AUROC over {len(results)} held-out digits: {summary}")
    return out


if __name__ == "__main__":
    main()

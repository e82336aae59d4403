"""The zoo's registry: each model's recipe (architecture, data, training) and what its build
measured (sha256, size, test numbers), with lookups and the zoo table."""

import difflib

DATASETS = ("binarized_mnist", "digits")
ARCHITECTURES = ("kingma_welling", "mlp", "conv", "pixel_cnn")

WEIGHTS_LICENSE = "Apache-2.0"
DATA_LICENSES = {
    "binarized_mnist": "CC BY-SA 3.0 (MNIST; binarized by Larochelle & Murray)",
    "digits": "CC BY 4.0 (UCI handwritten digits, bundled with scikit-learn)",
}


# --------------------------------------------------------------------------------- registry
# Each entry: the recipe (`architecture` + `config` for the VAE constructor, `dataset`, `train`
# hyperparameters) that `build` trains, and what the build measured and wrote. Entries with
# "sha256": None have a recipe but no released weights yet.
REGISTRY = {}


def _recipe(name, description, architecture, config, dataset, train):
    REGISTRY[name] = {
        "description": description,
        "architecture": architecture,
        "config": config,
        "dataset": dataset,
        "train": train,
        "file": f"{name}.weights.h5",
        "license": WEIGHTS_LICENSE,
        "data_license": DATA_LICENSES[dataset],
        "sha256": None,
    }


_DIGITS_TRAIN = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 50,
                 "max_epochs": 400, "patience": 30, "seed": 0,
                 "neg_elbo_samples": 1000, "nll_samples": 5000}
# Binarized MNIST: Adam 1e-3 halved whenever the validation -ELBO stalls for 5 epochs, early
# stopping after 20; ~2.5 s per Kingma-Welling epoch on 2 idle CPU cores. The NLL is measured
# on the whole test split (k=5000: 6.6-7.2 minutes for the MLPs).
_MNIST_TRAIN = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 100,
                "max_epochs": 300, "patience": 20, "reduce_lr_patience": 5,
                "reduce_lr_factor": 0.5, "min_learning_rate": 1e-5, "seed": 0,
                "neg_elbo_samples": 10, "nll_samples": 5000}

_recipe("kw_digits_z2", "Kingma-Welling MLP (64-200-2, tanh, Bernoulli) on binarized digits",
        "kingma_welling", {"input_dim": 64, "latent_dim": 2, "hidden_units": 200},
        "digits", _DIGITS_TRAIN)
_recipe("mlp_digits_z8", "Deeper MLP (64-256-128-8, relu, Bernoulli) on binarized digits",
        "mlp", {"input_shape": [64], "latent_dim": 8, "hidden_units": [256, 128],
                "activation": "relu"},
        "digits", _DIGITS_TRAIN)
_recipe("conv_digits_z4", "Convolutional VAE (8x8x1, conv 16-32, dense 64, 4 latents) on "
        "binarized digits", "conv",
        {"input_shape": [8, 8, 1], "latent_dim": 4, "filters": [16, 32], "dense_units": 64},
        "digits", _DIGITS_TRAIN)
_recipe("kw_mnist_z2", "Kingma-Welling MLP (784-500-2, tanh, Bernoulli) on binarized MNIST",
        "kingma_welling", {"input_dim": 784, "latent_dim": 2, "hidden_units": 500},
        "binarized_mnist", _MNIST_TRAIN)
_recipe("kw_mnist_z20", "Kingma-Welling MLP (784-500-20, tanh, Bernoulli) on binarized MNIST",
        "kingma_welling", {"input_dim": 784, "latent_dim": 20, "hidden_units": 500},
        "binarized_mnist", _MNIST_TRAIN)
_recipe("mlp_mnist_z20", "Deeper MLP (784-512-256-20, relu, Bernoulli) on binarized MNIST",
        "mlp", {"input_shape": [784], "latent_dim": 20, "hidden_units": [512, 256],
                "activation": "relu"},
        "binarized_mnist", _MNIST_TRAIN)
_recipe("conv_mnist_z16", "Convolutional VAE (28x28x1, conv 16-32, dense 128, 16 latents) on "
        "binarized MNIST", "conv",
        {"input_shape": [28, 28, 1], "latent_dim": 16, "filters": [16, 32], "dense_units": 128},
        "binarized_mnist", {**_MNIST_TRAIN, "neg_elbo_samples": 2})
# The one-stochastic-layer MLP of the IWAE paper (Burda et al. 2015), trained on its
# importance-weighted bound with k = 50 and Polyak-averaged weights (early stopping and the
# schedule watch the validation bound). 0.85 s per epoch on one H200 (JAX backend); 42 s on 2
# idle CPU cores (TensorFlow; mlp_mnist_z20: 3.6 s), so ~3.5 hours for its 300 epochs there.
_recipe("iwae_mnist_z50", "IWAE-paper MLP (784-200-200-50, tanh, Bernoulli), trained on the "
        "importance-weighted bound (k=50), on binarized MNIST", "mlp",
        {"input_shape": [784], "latent_dim": 50, "hidden_units": [200, 200],
         "activation": "tanh", "objective": "iwae", "num_samples": 50},
        "binarized_mnist", {**_MNIST_TRAIN, "ema_momentum": 0.999})

# A small PixelVAE: the conv encoder and an autoregressive decoder (networks.PixelCNNDecoder)
# whose logits see the pixels before each one; trained on the ELBO with the KL weight ramped
# up over 10 epochs: without it the decoder ignored z (KL 0.1-0.2 nats after 2 epochs).
# ~85 s per epoch on 2 CPU cores (JAX backend).
_recipe("pixelcnn_mnist_z32", "PixelVAE (conv encoder 32-64, dense 128, 32 latents; PixelCNN "
        "decoder, 32 filters, 4 masked layers) on binarized MNIST", "pixel_cnn",
        {"input_shape": [28, 28, 1], "latent_dim": 32},
        "binarized_mnist", {**_MNIST_TRAIN, "kl_warmup_epochs": 10})

# Released weights: what `keras-vae zoo build` measured and wrote (pasted from its output).
_RELEASED = {
    "kw_digits_z2": {
        "sha256": "5f1863b443fbcf3c891942af993538300e32e6b1f3ff2b5dc10ae293fd4e0737",
        "size_bytes": 143016,
        "parameters": 27268,
        "training": {
            "command": "keras-vae zoo build kw_digits_z2",
            "epochs": 335,
            "best_epoch": 305,
            "stopped_by": "early_stopping",
            "max_epochs": 400,
            "patience": 30,
            "train_wall_time_s": 56.3,
            "eval_wall_time_s": 5.3,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 19.979,
            "test_neg_elbo_stderr": 0.291,
            "test_reconstruction": 17.018,
            "test_kl": 2.961,
            "neg_elbo_samples": 1000,
            "valid_neg_elbo": 20.53,
            "test_examples": 180,
            "test_nll": 19.477,
            "test_nll_stderr": 0.271,
            "nll_samples": 5000,
            "nll_examples": 180
        }
    },
    "mlp_digits_z8": {
        "sha256": "32b4af269416a06142ea8291c88828901815cb8cb108c438888ff08d23a651cd",
        "size_bytes": 447472,
        "parameters": 102224,
        "training": {
            "command": "keras-vae zoo build mlp_digits_z8",
            "epochs": 130,
            "best_epoch": 100,
            "stopped_by": "early_stopping",
            "max_epochs": 400,
            "patience": 30,
            "train_wall_time_s": 40.4,
            "eval_wall_time_s": 20.6,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 17.837,
            "test_neg_elbo_stderr": 0.289,
            "test_reconstruction": 11.572,
            "test_kl": 6.265,
            "neg_elbo_samples": 1000,
            "valid_neg_elbo": 18.418,
            "test_examples": 180,
            "test_nll": 16.654,
            "test_nll_stderr": 0.273,
            "nll_samples": 5000,
            "nll_examples": 180
        }
    },
    "conv_digits_z4": {
        "sha256": "2b29c76bb4913c2c73d8d6d64f5aa79358ddd69af26e4bb17afb1286df9e6e26",
        "size_bytes": 195208,
        "parameters": 36233,
        "training": {
            "command": "keras-vae zoo build conv_digits_z4",
            "epochs": 162,
            "best_epoch": 132,
            "stopped_by": "early_stopping",
            "max_epochs": 400,
            "patience": 30,
            "train_wall_time_s": 151.0,
            "eval_wall_time_s": 295.7,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 17.784,
            "test_neg_elbo_stderr": 0.293,
            "test_reconstruction": 12.531,
            "test_kl": 5.253,
            "neg_elbo_samples": 1000,
            "valid_neg_elbo": 18.721,
            "test_examples": 180,
            "test_nll": 16.95,
            "test_nll_stderr": 0.279,
            "nll_samples": 5000,
            "nll_examples": 180
        }
    },
    "kw_mnist_z2": {
        "sha256": "1d9f8e91971a26159699034844a293082fefa1bc4005289ab92c093dafcaaace",
        "size_bytes": 3187672,
        "parameters": 788788,
        "training": {
            "command": "keras-vae zoo build kw_mnist_z2 --data /work/shared/datasets/binarized_mnist.npz",
            "epochs": 121,
            "best_epoch": 101,
            "stopped_by": "early_stopping",
            "max_epochs": 300,
            "patience": 20,
            "final_learning_rate": 9.999999747378752e-06,
            "train_wall_time_s": 245.5,
            "eval_wall_time_s": 200.9,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 150.282,
            "test_neg_elbo_stderr": 0.522,
            "test_reconstruction": 143.863,
            "test_kl": 6.418,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 151.088,
            "test_examples": 10000,
            "test_nll": 145.752,
            "test_nll_stderr": 0.492,
            "nll_samples": 5000,
            "nll_examples": 10000
        }
    },
    "kw_mnist_z20": {
        "sha256": "3842f381e6efadc0c6be372320b674ecd56b692e8739fa0e76237631f7584e55",
        "size_bytes": 3297720,
        "parameters": 815824,
        "training": {
            "command": "keras-vae zoo build kw_mnist_z20 --data /work/shared/datasets/binarized_mnist.npz",
            "epochs": 131,
            "best_epoch": 111,
            "stopped_by": "early_stopping",
            "max_epochs": 300,
            "patience": 20,
            "train_wall_time_s": 308.3,
            "eval_wall_time_s": 393.6,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 97.939,
            "test_neg_elbo_stderr": 0.254,
            "test_reconstruction": 70.185,
            "test_kl": 27.754,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 98.885,
            "test_examples": 10000,
            "test_nll": 92.579,
            "test_nll_stderr": 0.239,
            "nll_samples": 5000,
            "nll_examples": 10000
        }
    },
    "mlp_mnist_z20": {
        "sha256": "11c89eb44baff2d295bcfba3273ccc2fbe0a326c0e40375c60f337302ea485db",
        "size_bytes": 4370488,
        "parameters": 1082680,
        "training": {
            "command": "keras-vae zoo build mlp_mnist_z20 --data /work/shared/datasets/binarized_mnist.npz",
            "epochs": 114,
            "best_epoch": 94,
            "stopped_by": "early_stopping",
            "max_epochs": 300,
            "patience": 20,
            "train_wall_time_s": 381.1,
            "eval_wall_time_s": 431.2,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 96.063,
            "test_neg_elbo_stderr": 0.268,
            "test_reconstruction": 71.128,
            "test_kl": 24.934,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 96.72,
            "test_examples": 10000,
            "test_nll": 90.151,
            "test_nll_stderr": 0.247,
            "nll_samples": 5000,
            "nll_examples": 10000
        }
    },
    "conv_mnist_z16": {
        "sha256": "756e949d2ee17be53af6710916aa13f098db9cedaf93f1fd06f73e0ab37d9d7a",
        "size_bytes": 1764104,
        "parameters": 428225,
        "training": {
            "command": "keras-vae zoo build conv_mnist_z16 --data /work/shared/datasets/binarized_mnist.npz --time-limit 1500.0 --nll-examples 1000",
            "epochs": 174,
            "best_epoch": 154,
            "stopped_by": "early_stopping",
            "max_epochs": 300,
            "patience": 20,
            "final_learning_rate": 9.999999747378752e-06,
            "train_wall_time_s": 1363.7,
            "eval_wall_time_s": 836.4,
            "software": "keras 3.15.1, tensorflow backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 95.606,
            "test_neg_elbo_stderr": 0.274,
            "test_reconstruction": 72.755,
            "test_kl": 22.852,
            "neg_elbo_samples": 2,
            "valid_neg_elbo": 96.388,
            "test_examples": 10000,
            "nll_examples_neg_elbo": 95.721,
            "test_nll": 90.094,
            "test_nll_stderr": 0.798,
            "nll_samples": 5000,
            "nll_examples": 1000
        }
    },
    "iwae_mnist_z50": {
        "sha256": "89c8eec5a465cf8c5c93f9ae655b95ae54dae723269f6b2054fb274c366410ac",
        "size_bytes": 1739504,
        "parameters": 425284,
        "training": {
            "command": "keras-vae zoo build iwae_mnist_z50 --data binarized_mnist.npz --time-limit 270.0",
            "note": "built by benchmarks/zoo_candidates.py (its run 2, as candidate mlp_mnist_z50_iwae_tanh: the same recipe) beside one other candidate on the same GPU; the time limit did not bind",
            "epochs": 300,
            "best_epoch": 298,
            "stopped_by": "max_epochs",
            "max_epochs": 300,
            "patience": 20,
            "final_learning_rate": 9.999999747378752e-06,
            "train_wall_time_s": 256.3,
            "eval_wall_time_s": 17.6,
            "software": "keras 3.15.1, jax backend, keras-vae 0.1.0",
            "hardware": "NVIDIA H200, jax backend"
        },
        "results": {
            "test_neg_elbo": 100.216,
            "test_neg_elbo_stderr": 0.262,
            "test_reconstruction": 79.088,
            "test_kl": 21.128,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 100.993,
            "test_examples": 10000,
            "test_nll": 87.537,
            "test_nll_stderr": 0.233,
            "nll_samples": 5000,
            "nll_examples": 10000
        }
    },
    "pixelcnn_mnist_z32": {
        "sha256": "fba3c065268104521b83dae6741be973d83300ee2891096d9bad3cef1d929679",
        "size_bytes": 4385328,
        "parameters": 1072081,
        "training": {
            "command": "keras-vae zoo build pixelcnn_mnist_z32 --data /work/shared/datasets/binarized_mnist.npz --time-limit 3600.0 --nll-examples 1000",
            "note": "run with KERAS_BACKEND=jax on 2 CPU cores (tests and a CI run shared them during parts of the build); the time limit bound",
            "epochs": 44,
            "best_epoch": 44,
            "stopped_by": "time_limit",
            "max_epochs": 300,
            "patience": 20,
            "final_learning_rate": 0.0010000000474974513,
            "train_wall_time_s": 3669.8,
            "eval_wall_time_s": 1425.5,
            "software": "keras 3.15.1, jax backend, keras-vae 0.1.0",
            "hardware": "CPU, 2 cores"
        },
        "results": {
            "test_neg_elbo": 84.052,
            "test_neg_elbo_stderr": 0.204,
            "test_reconstruction": 75.13,
            "test_kl": 8.921,
            "neg_elbo_samples": 10,
            "valid_neg_elbo": 84.467,
            "test_examples": 10000,
            "nll_examples_neg_elbo": 83.993,
            "test_nll": 82.416,
            "test_nll_stderr": 0.634,
            "nll_samples": 5000,
            "nll_examples": 1000
        }
    }
}

for _name, _measured in _RELEASED.items():
    REGISTRY[_name].update(_measured)


# --------------------------------------------------------------------------------- lookup
def get_entry(name, released=True):
    if not isinstance(name, str) or name not in REGISTRY:
        close = difflib.get_close_matches(str(name), REGISTRY, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown zoo model {name!r}.{hint} Available: "
                         f"{', '.join(released_names()) or '(none released yet)'} "
                         "(see `keras-vae zoo list`).")
    entry = REGISTRY[name]
    if released and not entry.get("sha256"):
        raise ValueError(f"Zoo model {name!r} has a recipe but no released weights yet; build "
                         f"them with `keras-vae zoo build {name} --data PATH`.")
    return entry


def released_names():
    """Names of the models that have released weights, in registry order."""
    return [name for name, entry in REGISTRY.items() if entry.get("sha256")]


def list(include_unreleased=False):  # noqa: A001 - the API the issue asks for: zoo.list()
    """The zoo's models and their measured quality, one dict per model.

    Args:
        include_unreleased: also list recipes whose weights are not built yet (their measured
            fields are None).

    Returns:
        A Python list of dicts with keys "name", "description", "architecture", "dataset",
        "latent_dim", "parameters" (trainable weights), "test_nll" and "test_neg_elbo" (nats
        per test example), "nll_samples" (k of the importance-weighted NLL), "epochs",
        "size_bytes" (of the weight file), "license" (of the weights) and "data_license".
    """
    rows = []
    for name, entry in REGISTRY.items():
        if not entry.get("sha256") and not include_unreleased:
            continue
        results = entry.get("results", {})
        rows.append({
            "name": name,
            "description": entry["description"],
            "architecture": entry["architecture"],
            "dataset": entry["dataset"],
            "latent_dim": entry["config"]["latent_dim"],
            "parameters": entry.get("parameters"),
            "test_nll": results.get("test_nll"),
            "test_neg_elbo": results.get("test_neg_elbo"),
            "nll_samples": results.get("nll_samples"),
            "epochs": entry.get("training", {}).get("epochs"),
            "size_bytes": entry.get("size_bytes"),
            "license": entry.get("license"),
            "data_license": entry.get("data_license"),
        })
    return rows


# --------------------------------------------------------------------------------- CLI
def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def table(markdown=False):
    """The zoo table as text: markdown (for the README) or aligned columns.

    Columns: name, architecture, dataset, latent (K), parameters, test -ELBO and test NLL (nats
    per example, lower is better), NLL k (importance samples), NLL examples (n evenly spaced
    test examples) and the -ELBO of those same examples, epochs trained, file size (MiB),
    license of the weights.
    """
    headers = ["name", "architecture", "dataset", "latent", "parameters", "test -ELBO",
               "test NLL", "NLL k", "NLL examples", "-ELBO of those", "epochs", "size",
               "license"]
    rows = []
    for row in list():
        entry = REGISTRY[row["name"]]
        results = entry["results"]
        rows.append([row["name"], row["architecture"], row["dataset"], str(row["latent_dim"]),
                     f"{row['parameters']:,}", _fmt(row["test_neg_elbo"]), _fmt(row["test_nll"]),
                     str(row["nll_samples"]),
                     f"{results.get('nll_examples', 0)} of {results['test_examples']}",
                     _fmt(results.get("nll_examples_neg_elbo", results["test_neg_elbo"])),
                     str(row["epochs"]), f"{row['size_bytes'] / 2 ** 20:.2f} MiB",
                     row["license"]])
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)

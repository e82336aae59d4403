"""The zoo's registry: each model's recipe (architecture, data, training) and what its build
measured (sha256, size, test numbers), with lookups and the zoo table."""

import difflib
import json
import os
from pathlib import Path

DATASETS = ("binarized_mnist", "digits")
ARCHITECTURES = ("kingma_welling", "mlp", "conv", "pixel_cnn")

WEIGHTS_LICENSE = "Apache-2.0"
DATA_LICENSES = {
    "binarized_mnist": "CC BY-SA 3.0 (MNIST; binarized by Larochelle & Murray)",
    "digits": "CC BY 4.0 (UCI handwritten digits, bundled with scikit-learn)",
}


# --------------------------------------------------------------------------------- registry
# The registry is data: one `presets/NAME/preset.json` per model inside this package, written by
# `keras-vae zoo build` (never edited as code). Each holds the recipe (`architecture` + `config`
# for the VAE constructor, `dataset`, `train` hyperparameters) and, once built, what the build
# measured and wrote (sha256 and size of the weight file, parameters, training, results, and
# the sha256/size of every file of the preset folder). Entries with "sha256": None have a
# recipe but no released weights yet. The digits presets' folders also hold their files
# (config.json, metadata.json, model.weights.h5, README.md): they ship inside the wheel.
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
PRESET_FILE = "preset.json"
ORDER_KEY = "order"  # a preset's place in the zoo table


def read_presets(folder=PRESETS_DIR):
    """Every `*/preset.json` under `folder`, as {name: entry}, in their `order`."""
    entries = []
    for path in sorted(Path(folder).glob(f"*/{PRESET_FILE}")):
        with open(path, encoding="utf-8") as f:
            entry = json.load(f)
        if entry.get("name") != path.parent.name:
            raise ValueError(f"{path}: its name {entry.get('name')!r} is not its folder's "
                             f"{path.parent.name!r}.")
        entries.append(entry)
    entries.sort(key=lambda e: (e.get(ORDER_KEY, 10 ** 6), e["name"]))
    return {e["name"]: e for e in entries}


def write_json_atomic(path, data):
    """Writes `data` as indented JSON to a temporary name beside `path`, then renames it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_entry(entry, folder=PRESETS_DIR):
    """Writes one registry entry to `folder/NAME/preset.json` atomically; returns its path."""
    path = Path(folder) / entry["name"] / PRESET_FILE
    write_json_atomic(path, entry)
    return path


def packaged_folder(name):
    """The preset folder shipped inside the package for `name` (its weights included), or
    None when the model's weights are not packaged."""
    folder = PRESETS_DIR / name
    return folder if (folder / "model.weights.h5").is_file() else None


REGISTRY = read_presets()


def add_recipe(name, description, architecture, config, dataset, train):
    """Adds an unreleased recipe to the in-memory registry (for experiments such as
    benchmarks/zoo_candidates.py); `keras-vae zoo build` then trains it like any other."""
    REGISTRY[name] = {
        "name": name,
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
    return REGISTRY[name]


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

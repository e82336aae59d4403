"""Presets the Keras way: a preset is a Keras model folder (what `model.save("hf://...")` and
`keras.saving.load_model` read and write) plus the zoo's description of the model:

    config.json        the VAE's Keras config (architecture, no weights)
    metadata.json      Keras and keras-vae versions, date saved
    model.weights.h5   the weights (no optimizer state)
    preset.json        the registry entry: architecture and recipe, data and its license, the
                       measured numbers (with k and the number of test examples), the build
                       command, hardware, and the sha256 and size of every other file
    README.md          the model card, with the Hugging Face YAML header (library_name, license,
                       datasets, tags, model-index with the test -ELBO and NLL)

`VAE.from_preset(handle)` (and `VAE.from_pretrained`) accept a zoo name, `hf://owner/name`
(optionally `@revision`), a local preset folder, or an http(s)/`file://` URL: a mirror of the
zoo's weight files ending in a zoo name (`.../weights/kw_mnist_z20`) or a preset folder.
"""

import json
import os
import shutil
import tempfile
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

from keras_vae.version import __version__
from keras_vae.files import file_sha256
from keras_vae.model import VAE, register_preset_loader
from keras_vae.zoo import hub
from keras_vae.zoo.downloader import (
    CACHE_SUBDIR,
    WEIGHTS_FILE,
    _cache_dir,
    default_handle,
)
from keras_vae.zoo.fetch import DownloadError, IntegrityError, fetch_url, size_limit
from keras_vae.zoo.loader import LOAD_OVERRIDES, construct, load
from keras_vae.zoo.registry import (
    PRESET_FILE,
    REGISTRY,
    get_entry,
    write_json_atomic,
)

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
CARD_FILE = "README.md"
FORMAT = "keras-vae-preset"
FORMAT_VERSION = 1
# Files a preset lists in preset.json["files"] (preset.json cannot list itself).
LISTED_FILES = (CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, CARD_FILE)
# What loading reads; the card is for people and the Hub's model page.
NEEDED_FILES = (CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE)

DATASET_NAMES = {"binarized_mnist": "Binarized MNIST (Larochelle & Murray)",
                 "digits": "Binarized 8x8 digits (UCI, bundled with scikit-learn)"}
HUB_LICENSES = {"Apache-2.0": "apache-2.0"}


# --------------------------------------------------------------------------------- writing
def model_card(entry):
    """The preset's README.md: a Hugging Face model card (YAML header + what was measured)."""
    name, results = entry["name"], entry.get("results", {})
    training = entry.get("training", {})
    metrics = []
    for key, label in (("test_neg_elbo", "test -ELBO (nats)"), ("test_nll", "test NLL (nats)")):
        if results.get(key) is not None:
            metrics.append(f"    - type: {key}\n      value: {results[key]}\n"
                           f"      name: {label}")
    header = [
        "---",
        "library_name: keras",
        f"license: {HUB_LICENSES.get(entry.get('license'), 'other')}",
        "datasets:",
        f"- {entry['dataset']}",
        "tags:",
        "- keras-vae",
        "- variational-autoencoder",
        "- vae",
        f"- {entry['architecture']}",
        "pipeline_tag: unconditional-image-generation",
        "model-index:",
        f"- name: {name}",
        "  results:",
        "  - task:",
        "      type: unconditional-image-generation",
        "      name: Density estimation",
        "    dataset:",
        f"      name: {DATASET_NAMES.get(entry['dataset'], entry['dataset'])}",
        f"      type: {entry['dataset']}",
        "      split: test",
        "    metrics:",
        *metrics,
        "---",
    ]
    lines = [
        f"# {name}", "",
        f"{entry['description']}. A [keras-vae](https://github.com/keras-vae/keras-vae) preset: "
        "a Keras 3 model folder (`config.json`, `metadata.json`, `model.weights.h5`) plus "
        "`preset.json` (recipe, measurements, file hashes).", "",
        "```python",
        "import keras_vae as kv",
        f'vae = kv.VAE.from_preset("{entry.get("handle") or default_handle(name)}")',
        "vae.sample(16, seed=0)",
        "```", "",
        "`keras.saving.load_model` reads the folder too, after `import keras_vae` (which "
        "registers the VAE class).", "",
        "## Measured", "",
        "| quantity | value |", "|---|---|",
    ]
    if results:
        k, n = results.get("nll_samples"), results.get("nll_examples")
        lines += [
            f"| test -ELBO (nats, {results.get('neg_elbo_samples')} samples per example, "
            f"{results.get('test_examples')} test examples) | {results.get('test_neg_elbo')} "
            f"+- {results.get('test_neg_elbo_stderr')} |",
            f"| test NLL (nats, importance-weighted, k={k}, {n} test examples) | "
            f"{results.get('test_nll')} +- {results.get('test_nll_stderr')} |",
            f"| KL (nats) | {results.get('test_kl')} |",
        ]
    lines += [
        f"| parameters | {entry.get('parameters')} |",
        f"| epochs (best) | {training.get('epochs')} ({training.get('best_epoch')}) |",
        f"| hardware | {training.get('hardware')} |",
        f"| software | {training.get('software')} |", "",
        "## Data and license", "",
        f"Trained on {DATASET_NAMES.get(entry['dataset'], entry['dataset'])}; data license: "
        f"{entry.get('data_license')}. Weights: {entry.get('license')}.", "",
        "## Reproduce", "",
        "```",
        training.get("command", f"keras-vae zoo build {name}"),
        "```", "",
    ]
    return "\n".join(header) + "\n\n" + "\n".join(lines)


def _write_text(path, text):
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_preset(entry, weights, folder, overwrite=False):
    """Writes a preset folder for a registry entry and its weight file.

    Args:
        entry: a registry entry (with sha256, results...).
        weights: the path of its `.weights.h5` (checked against entry["sha256"]).
        folder: the preset folder to create; it must not exist unless `overwrite` (then only
            the preset's own files are replaced).

    Returns:
        dict: the entry as written to `folder/preset.json`, with "files" filled in.
    """
    import keras

    folder = Path(folder)
    if folder.exists() and not overwrite and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty; choose a new folder or pass "
                              "overwrite=True (--overwrite).")
    if entry.get("sha256") and file_sha256(weights) != entry["sha256"]:
        raise IntegrityError(f"{weights} does not have the sha256 {entry['sha256']} of "
                             f"preset {entry['name']!r}.")
    folder.mkdir(parents=True, exist_ok=True)
    vae = construct(entry, name=entry["name"])
    config = json.dumps(keras.saving.serialize_keras_object(vae))
    metadata = json.dumps({"keras_version": keras.__version__,
                           "keras_vae_version": __version__,
                           "date_saved": datetime.now(timezone.utc).strftime("%Y-%m-%d@%H:%M:%S")})
    entry = {**entry, "format": FORMAT, "format_version": FORMAT_VERSION}
    entry.setdefault("handle", default_handle(entry["name"]))
    _write_text(folder / CONFIG_FILE, config)
    _write_text(folder / METADATA_FILE, metadata)
    if Path(weights).resolve() != (folder / WEIGHTS_FILE).resolve():
        tmp = folder / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
        shutil.copyfile(weights, tmp)
        os.replace(tmp, folder / WEIGHTS_FILE)
    _write_text(folder / CARD_FILE, model_card(entry))
    entry["files"] = {f: {"sha256": file_sha256(folder / f),
                          "size_bytes": (folder / f).stat().st_size} for f in LISTED_FILES}
    write_json_atomic(folder / PRESET_FILE, entry)
    return entry


# --------------------------------------------------------------------------------- reading
def read_preset(folder):
    """The `preset.json` of a local preset folder (a ValueError naming the folder if absent or
    not a keras-vae preset)."""
    path = Path(folder) / PRESET_FILE
    if not path.is_file():
        raise ValueError(f"{folder} is not a keras-vae preset folder: it has no {PRESET_FILE}. "
                         "Write one with `keras-vae zoo push` or kv.zoo.write_preset.")
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the preset is damaged.") from None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        raise ValueError(f"{path} is not a keras-vae preset (no \"format\": \"{FORMAT}\").")
    return entry


def _expected(entry, filename):
    """(sha256, size) a preset promises for one of its files."""
    spec = entry.get("files", {}).get(filename)
    if not isinstance(spec, dict) or not spec.get("sha256"):
        raise ValueError(f"Preset {entry.get('name')!r} lists no sha256 for {filename}; it "
                         "cannot be verified. Rewrite it with kv.zoo.write_preset.")
    return spec["sha256"], int(spec["size_bytes"])


def verify_folder(folder, entry, files=NEEDED_FILES, what=None):
    """Checks the sha256 of each of `files` in `folder` against `entry["files"]`."""
    for filename in files:
        sha, _ = _expected(entry, filename)
        path = Path(folder) / filename
        if not path.is_file() or file_sha256(path) != sha:
            raise IntegrityError(f"{path} of {what or entry.get('name')!r} is missing or does "
                                 f"not have the sha256 {sha} its preset.json lists; fetch the "
                                 "preset again.")


def build_from_folder(folder, entry, compile=True, **overrides):
    """The VAE of a verified preset folder: built from preset.json, weights loaded."""
    overrides.setdefault("name", entry["name"])
    vae = construct(entry, **overrides)
    try:
        vae.load_weights(str(Path(folder) / WEIGHTS_FILE))
    except Exception as err:
        raise ValueError(f"The weights in {folder} do not fit preset {entry['name']!r}'s "
                         f"architecture {entry['architecture']}: {err}") from None
    if compile:
        import keras

        vae.compile(optimizer=keras.optimizers.Adam(entry["train"]["learning_rate"]))
    return vae


def _check_overrides(handle, overrides):
    bad = sorted(set(overrides) - set(LOAD_OVERRIDES))
    if bad:
        raise ValueError(f"from_preset({handle!r}) cannot change {', '.join(bad)}: the weights "
                         f"fix the architecture. Allowed overrides: {', '.join(LOAD_OVERRIDES)}.")


def _zoo_entry_for_handle(handle):
    """The registry entry published under an hf:// handle (revision ignored), or None."""
    repo_id, _ = hub.parse_handle(handle)
    for entry in REGISTRY.values():
        if entry.get("sha256") and entry.get("handle") == hub.SCHEME + repo_id:
            return entry
    return None


def pull(handle, offline=None, cache_dir=None, verbose=True):
    """Fetches a preset from `hf://owner/name[@revision]` into huggingface_hub's cache,
    verified, and returns (folder, entry). A zoo model's handle is verified against the
    registry; any other against its own preset.json (pin `@revision` to fix that)."""
    entry = _zoo_entry_for_handle(handle)
    common = dict(what=f"preset {handle}", offline_mode=offline, cache_root=cache_dir,
                  verbose=verbose)
    if entry is not None:
        path = hub.download(handle, WEIGHTS_FILE, sha256=entry["sha256"],
                            size_bytes=entry["size_bytes"], **common)
        return Path(path).parent, entry
    path = hub.download(handle, PRESET_FILE, **common)
    remote = read_preset(Path(path).parent)
    for filename in NEEDED_FILES:
        sha, size = _expected(remote, filename)
        path = hub.download(handle, filename, sha256=sha, size_bytes=size, **common)
    return Path(path).parent, remote


def _pull_url(base, offline, cache_dir, verbose):
    """A preset folder served over http(s)/file://: preset.json, then each needed file,
    verified, into `<Keras cache>/models/keras_vae/presets/<sha256 of its URL>/`."""
    import hashlib

    folder = Path(_cache_dir(cache_dir)) / CACHE_SUBDIR / "presets" / hashlib.sha256(
        base.encode()).hexdigest()[:16]
    local = urllib.parse.urlsplit(base).scheme == "file"
    index = folder / PRESET_FILE
    if not (hub.offline(offline) and not local and index.is_file()):
        if hub.offline(offline) and not local:
            raise DownloadError(f"Preset {base} is not cached and offline mode is on; load it "
                                "once with network access or turn offline mode off.")
        _fetch_unverified_index(base + PRESET_FILE, index, verbose)
    entry = read_preset(folder)
    for filename in NEEDED_FILES:
        sha, size = _expected(entry, filename)
        target = folder / filename
        if target.is_file() and file_sha256(target) == sha:
            continue
        if hub.offline(offline) and not local:
            raise DownloadError(f"{filename} of preset {base} is not cached and offline mode is "
                                "on; load it once with network access.")
        fetch_url(base + filename, str(target), sha, size, f"preset {base}{filename}",
                  hint="Check the URL and the network.", verbose=verbose)
    return folder, entry


def _fetch_unverified_index(url, target, verbose):
    """preset.json itself has no hash to check: bounded by size, fetched fresh each time."""
    import urllib.request

    from keras_vae.zoo.fetch import download_timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=download_timeout()) as response:  # noqa: S310
            data = response.read(hub.PRESET_JSON_LIMIT + 1)
    except OSError as err:
        raise DownloadError(f"Could not fetch the preset index {url}: "
                            f"{getattr(err, 'reason', err)}. Check the URL and the network."
                            ) from None
    if len(data) > hub.PRESET_JSON_LIMIT:
        raise IntegrityError(f"{url} is larger than {hub.PRESET_JSON_LIMIT} bytes: not a "
                             "preset.json; check the URL.")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def from_preset(handle, base_url=None, offline=None, cache_dir=None, compile=True,
                verbose=True, **overrides):
    """A ready VAE from a preset handle; what `kv.VAE.from_preset` calls.

    Args:
        handle: a zoo name ("kw_mnist_z20"), `hf://owner/name` or `hf://owner/name@revision`,
            a local preset folder, or an http(s)/`file://` URL: a mirror of the zoo's weight
            files ending in a zoo name (`https://mirror/weights/kw_mnist_z20`, optionally with
            `.weights.h5`) or a preset folder (`https://host/presets/my_vae/`).
        base_url, offline, cache_dir, verbose: for zoo names, see `keras_vae.zoo.download`;
            `offline` and `cache_dir` apply to the other handles too.
        compile: compile with the recipe's Adam learning rate.
        **overrides: constructor arguments that do not change the weights: num_samples,
            seed, beta, name.

    Raises:
        ValueError (unknown name, bad handle, bad override), DownloadError (a
        FileNotFoundError), IntegrityError (a ValueError): each in one line naming the model,
        the URL and what to do.
    """
    _check_overrides(handle, overrides)
    if isinstance(handle, os.PathLike):
        handle = os.fspath(handle)
    if not isinstance(handle, str) or not handle:
        raise ValueError(f"A preset handle is a zoo name, hf://owner/name, a folder or a URL; "
                         f"got {handle!r}.")
    if handle in REGISTRY:
        return load(handle, base_url=base_url, offline=offline, cache_dir=cache_dir,
                    compile=compile, verbose=verbose, **overrides)
    if handle.startswith(hub.SCHEME):
        folder, entry = pull(handle, offline=offline, cache_dir=cache_dir, verbose=verbose)
        return build_from_folder(folder, entry, compile=compile, **overrides)
    scheme = urllib.parse.urlsplit(handle).scheme
    if scheme in ("http", "https", "file"):
        stem = handle.rstrip("/").rsplit("/", 1)[-1]
        name = stem[: -len(".weights.h5")] if stem.endswith(".weights.h5") else stem
        if name in REGISTRY:
            base = handle.rstrip("/")[: -len(stem)]
            return load(name, base_url=base, offline=offline, cache_dir=cache_dir,
                        compile=compile, verbose=verbose, **overrides)
        base = handle if handle.endswith("/") else handle + "/"
        folder, entry = _pull_url(base, offline, cache_dir, verbose)
        return build_from_folder(folder, entry, compile=compile, **overrides)
    folder = Path(handle).expanduser()
    if folder.is_dir():
        entry = read_preset(folder)
        verify_folder(folder, entry, what=str(folder))
        return build_from_folder(folder, entry, compile=compile, **overrides)
    if os.sep in handle or "/" in handle or handle.startswith("."):
        raise ValueError(f"No preset folder at {handle}; expected a folder with {PRESET_FILE}, "
                         "a zoo name, hf://owner/name or a URL.")
    get_entry(handle)  # raises: unknown zoo name, with suggestions
    raise AssertionError("unreachable")


def export_preset(name, folder, base_url=None, offline=None, overwrite=False, verbose=True):
    """Writes the preset folder of zoo model `name` (its verified weights, config, card)."""
    from keras_vae.zoo.downloader import download

    entry = get_entry(name)
    weights = download(name, base_url=base_url, offline=offline, verbose=verbose)
    return write_preset(entry, weights, folder, overwrite=overwrite)


def push(source, handle, token=None, message=None, base_url=None, verbose=True):
    """Uploads a preset to the Hugging Face Hub.

    Args:
        source: a zoo name (its preset folder is written from the registry and its verified
            weights) or a local preset folder.
        handle: `hf://owner/name` (optionally `@revision`, a branch).
        token: a Hugging Face token; None: huggingface_hub's login or $HF_TOKEN.

    Returns:
        (handle, commit URL).
    """
    hub.parse_handle(handle)
    with tempfile.TemporaryDirectory(prefix="keras-vae-push-") as tmp:
        if isinstance(source, str) and source in REGISTRY:
            entry = dict(get_entry(source))
            entry["handle"] = handle.split("@")[0]
            folder = Path(tmp) / source
            write_preset(entry, _weights_for(source, base_url, verbose), folder)
        else:
            folder = Path(source)
            verify_folder(folder, read_preset(folder), files=LISTED_FILES, what=str(folder))
        url = hub.upload(folder, handle, token=token, message=message)
    return handle, url


def _weights_for(name, base_url, verbose):
    from keras_vae.zoo.downloader import download

    return download(name, base_url=base_url, verbose=verbose)


register_preset_loader(from_preset)


__all__ = ["from_preset", "pull", "push", "write_preset", "export_preset", "read_preset",
           "verify_folder", "model_card", "size_limit"]

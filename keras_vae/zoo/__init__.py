"""The model zoo: pretrained VAEs, their measured quality, and a verified download path.

    import keras_vae as kv
    kv.zoo.list()                                  # one dict per model: name, test NLL, size...
    vae = kv.VAE.from_preset("kw_mnist_z20")       # or from_pretrained, kv.zoo.load
    vae = kv.VAE.from_preset("hf://owner/name")    # a preset on the Hugging Face Hub
    vae.sample(16, seed=0)

Command line: `keras-vae zoo list | info NAME | download [NAME ...] | build NAME --data PATH |
export NAME --out DIR | push NAME --to hf://owner/name`.

Presets (`keras_vae.zoo.preset`)
    A preset is a Keras model folder (config.json, metadata.json, model.weights.h5) plus
    preset.json (the registry entry, with the sha256 and size of every file) and a README.md
    model card with the Hugging Face metadata header. The registry is one preset.json per model
    in `keras_vae/zoo/presets/` (`registry.REGISTRY`), written by `keras-vae zoo build`.

Where the weights come from (`keras_vae.zoo.downloader`), first match wins
    1. a mirror: `base_url=` or `$KERAS_VAE_WEIGHTS_URL` (http(s), `file://` or a folder with
       NAME.weights.h5), fetched into `$KERAS_HOME/models/keras_vae/` (default ~/.keras);
    2. the presets packaged in this package (kw_digits_z2, mlp_digits_z8, conv_digits_z4);
    3. the `weights/` folder of the source checkout this package is imported from;
    4. the model's Hugging Face handle `hf://keras-vae/NAME` through huggingface_hub (its
       cache, `HF_HUB_OFFLINE`, `HF_ENDPOINT`).

    Offline: `KERAS_VAE_OFFLINE=1` or `HF_HUB_OFFLINE=1` (or `offline=True`) never touches the
    network: cached, packaged and checkout files are used, a local folder or `file://` base is
    still read, and anything else fails at once with a message that says how to get the file.

Integrity and bounds (`keras_vae.zoo.fetch`, `keras_vae.zoo.hub`)
    Every file is checked against the registry's sha256 before it is used. A download goes to a
    unique temporary name and is renamed only once verified; it stops when the server sends
    more than the expected size plus a small slack, and gives up after
    `$KERAS_VAE_DOWNLOAD_TIMEOUT` seconds (default 30) without data. On any failure (HTTP
    error, truncation, too much data, a stall, wrong hash, Ctrl-C) the partial file is removed
    and the error (`DownloadError`, a FileNotFoundError, or `IntegrityError`, a ValueError)
    names the model, the URL and what to do. A cached file that fails its hash is deleted and
    fetched again.

Reproducing a model
    `keras-vae zoo build NAME --data PATH` trains the registry's recipe with a fixed seed and
    deterministic ops, early-stops on the validation split, measures the test -ELBO and the
    importance-weighted test NLL (`keras_vae.evaluation`), writes `weights/NAME.weights.h5`
    and the registry entry `keras_vae/zoo/presets/NAME/preset.json` (sha256, size, epochs,
    wall time, the numbers; the command without machine paths).

Data sets
    - "binarized_mnist": the statically binarized MNIST of Larochelle & Murray (an .npz with
      uint8 0/1 arrays train/valid/test of shape (N, 784): 50k/10k/10k).
    - "digits": scikit-learn's bundled 8x8 digits (1797 images), x = load_digits().data / 16
      binarized at 0.5 (x > 0.5); split by index i: test if i % 10 == 0 (180), valid if
      i % 10 == 5 (180), train otherwise (1437). See `load_data`.
"""

from keras_vae.zoo.builder import build, hardware, load_data
from keras_vae.zoo.downloader import (
    CACHE_SUBDIR,
    DEFAULT_BASE_URL,
    OFFLINE_ENV,
    URL_ENV,
    DownloadError,
    IntegrityError,
    download,
    info,
)
from keras_vae.zoo.fetch import TIMEOUT_ENV
from keras_vae.zoo.loader import LOAD_OVERRIDES, load
from keras_vae.zoo.preset import (
    export_preset,
    from_preset,
    pull,
    push,
    read_preset,
    write_preset,
)
from keras_vae.zoo.registry import REGISTRY, list, released_names, table  # noqa: A004

__all__ = [
    "REGISTRY",
    "DEFAULT_BASE_URL",
    "DownloadError",
    "IntegrityError",
    "list",
    "info",
    "load",
    "download",
    "load_data",
    "build",
    "hardware",
    "table",
    "released_names",
    "CACHE_SUBDIR",
    "OFFLINE_ENV",
    "URL_ENV",
    "LOAD_OVERRIDES",
    "TIMEOUT_ENV",
    "from_preset",
    "pull",
    "push",
    "read_preset",
    "write_preset",
    "export_preset",
]

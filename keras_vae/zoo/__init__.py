"""The model zoo: pretrained VAEs, their measured quality, and a verified download path.

    import keras_vae as kv
    kv.zoo.list()                                  # one dict per model: name, test NLL, size...
    vae = kv.zoo.load("kw_mnist_z20")              # or kv.VAE.from_pretrained("kw_mnist_z20")
    vae.sample(16, seed=0)

Command line: `keras-vae zoo list | info NAME | download [NAME ...] | build NAME --data PATH`.

Where the weights come from
    Each model is a `.weights.h5` file (weights only, no optimizer state) plus constructor
    arguments kept here in `REGISTRY`, so the architecture is code and the file is data.
    The file is fetched from `<base URL>/<file>` with `keras.utils.get_file(...,
    file_hash=<sha256>)` into the Keras cache, `$KERAS_HOME/models/keras_vae/` (default
    `~/.keras/models/keras_vae/`), under a name that contains the hash, so a second load reads
    the cache and needs no network. The base URL is

    - `DEFAULT_BASE_URL`: the repository's `weights/` folder at the release tag of this
      version, `https://github.com/keras-vae/keras-vae/raw/v{version}/weights/`;
    - overridden by `$KERAS_VAE_WEIGHTS_URL` or `load(..., base_url=...)`: any http(s) URL of a
      mirror, a `file://` URL, or a local folder (e.g. the `weights/` folder of a checkout).

    Offline: `KERAS_VAE_OFFLINE=1` (or `offline=True`) never touches the network: a cached,
    verified file is used, a local folder or `file://` base is still read, and anything else
    fails at once with a message that says how to get the file.

Integrity
    `get_file` downloads straight to its target name and, when the hash of a fresh download
    does not match, raises but leaves the bad file in the cache. Here every download goes to a
    unique temporary `*.part-*` name, is checked against the registry's sha256, and only then
    is renamed (atomically) to its cache name; on any failure (HTTP error, truncation, wrong
    hash, Ctrl-C) the temporary file is removed, and the error (`DownloadError` or
    `IntegrityError`) names the model, the URL and the expected sha256. A cached file that
    fails its hash (e.g. written by an older tool and cut short) is deleted and fetched again.

Reproducing a model
    `keras-vae zoo build NAME --data PATH` trains the registry's recipe with a fixed seed and
    deterministic ops, early-stops on the validation split, measures the test -ELBO and the
    importance-weighted test NLL (`keras_vae.evaluation`), writes `weights/NAME.weights.h5`
    and prints the registry entry (sha256, size, epochs, wall time, the numbers).

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

"""Getting a zoo model's verified weight file (see the package docstring for sources, offline
mode and integrity). Where it comes from, first match wins:

1. a mirror named by `base_url=` or $KERAS_VAE_WEIGHTS_URL (http(s) URL, `file://` URL or a
   folder holding `NAME.weights.h5`): fetched into the Keras cache;
2. the preset folder shipped inside the package (the digits models): read in place;
3. the `weights/` folder of the source checkout this package is imported from: read in place;
4. the model's Hugging Face handle (`hf://keras-vae/NAME`): huggingface_hub's cache.
Every file is checked against the registry's sha256 before it is used."""

import glob
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

from keras_vae.files import file_sha256
from keras_vae.zoo import hub
from keras_vae.zoo.fetch import DownloadError, IntegrityError, fetch_url, remove
from keras_vae.zoo.registry import get_entry, packaged_folder

# The GitHub layout of the release files (weights/NAME.weights.h5 at a version's tag); kept for
# mirrors laid out like it. Not a default source any more: see the module docstring.
DEFAULT_BASE_URL = "https://github.com/keras-vae/keras-vae/raw/v{version}/weights/"
URL_ENV = "KERAS_VAE_WEIGHTS_URL"
OFFLINE_ENV = hub.OFFLINE_ENV
CACHE_SUBDIR = os.path.join("models", "keras_vae")
WEIGHTS_FILE = "model.weights.h5"  # a preset folder's weight file
HUB_OWNER = "keras-vae"


def default_handle(name):
    """The Hugging Face handle a zoo model is published under."""
    return f"hf://{HUB_OWNER}/{name}"


def checkout_weights():
    """The `weights/` folder of the source checkout this package is imported from, or None
    when it is installed (a wheel, site-packages) rather than a checkout."""
    root = Path(__file__).resolve().parents[2]
    project = root / "pyproject.toml"
    weights = root / "weights"
    try:
        if weights.is_dir() and 'name = "keras-vae"' in project.read_text(encoding="utf-8"):
            return weights
    except OSError:
        pass
    return None


def source(entry, base_url=None):
    """Where `download` gets a model's weight file now: ("mirror", base URL), ("package",
    file), ("checkout", file) or ("hub", handle)."""
    base = base_url or os.environ.get(URL_ENV)
    if base:
        return "mirror", _base_url(base_url)
    folder = packaged_folder(entry["name"]) if entry.get("name") else None
    if folder is not None:
        return "package", folder / WEIGHTS_FILE
    weights = checkout_weights()
    if weights is not None and (weights / entry["file"]).is_file():
        return "checkout", weights / entry["file"]
    return "hub", entry.get("handle") or default_handle(entry["name"])


def info(name):
    """The full registry entry of a model (a deep copy), plus where its file is and would come
    from.

    Returns:
        dict: the registry entry with "name", "url" (where `load` would fetch it now),
        "cache_path" (its place in the Keras cache) and "cached" (bool: present and verified).
    """
    entry = json.loads(json.dumps(get_entry(name)))
    kind, where = source(entry)
    if kind == "mirror":
        path, url = cache_path(entry, None), _url(entry, None)
    elif kind == "hub":
        repo_id, revision = hub.parse_handle(where)
        from huggingface_hub import try_to_load_from_cache

        url = hub.url(repo_id, WEIGHTS_FILE, revision)
        path = try_to_load_from_cache(repo_id, WEIGHTS_FILE, cache_dir=hub.cache_dir(),
                                      revision=revision)
        path = path if isinstance(path, str) else None
    else:
        path, url = str(where), Path(where).as_uri()
    entry.update({"name": name, "source": kind, "url": url, "cache_path": path,
                  "cached": bool(path) and os.path.exists(path)
                  and file_sha256(path) == entry["sha256"]})
    return entry


# --------------------------------------------------------------------------------- download
def _offline(offline):
    """The offline switch: `offline`, else $KERAS_VAE_OFFLINE or $HF_HUB_OFFLINE."""
    return hub.offline(offline)


def _base_url(base_url):
    """The base URL from the argument, $KERAS_VAE_WEIGHTS_URL or the default, as a URL ending
    in '/'; local folders become file:// URLs."""
    base = str(base_url or os.environ.get(URL_ENV))
    scheme = urllib.parse.urlsplit(base).scheme
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter: a local folder
        folder = Path(base).expanduser().resolve()
        if not folder.is_dir():
            raise DownloadError(f"The weights base {base!r} (from "
                                f"{'base_url' if base_url else URL_ENV}) is neither a URL nor "
                                "an existing folder.")
        base = folder.as_uri()
    return base if base.endswith("/") else base + "/"


def _url(entry, base_url):
    return urllib.parse.urljoin(_base_url(base_url), entry["file"])


def _cache_dir(cache_dir):
    """The cache root get_file will use: cache_dir, else $KERAS_HOME (read now), else
    ~/.keras; like get_file, /tmp/.keras when that is not writable."""
    if cache_dir is None:
        cache_dir = os.environ.get("KERAS_HOME") or os.path.join(
            os.path.expanduser("~"), ".keras")
    cache_dir = os.path.expanduser(str(cache_dir))
    os.makedirs(cache_dir, exist_ok=True)
    if not os.access(cache_dir, os.W_OK):
        cache_dir = os.path.join("/tmp", ".keras")
    return cache_dir


def _cache_name(entry):
    stem = entry["file"][: -len(".weights.h5")]
    return f"{stem}-{entry['sha256'][:12]}.weights.h5"


def cache_path(entry, cache_dir):
    return os.path.join(_cache_dir(cache_dir), CACHE_SUBDIR, _cache_name(entry))


def _remove_stale_parts(target, max_age_s=3600.0):
    """Deletes temporary files of earlier downloads of `target` that were killed (SIGKILL,
    power loss) and are older than `max_age_s`; running downloads are younger."""
    now = time.time()
    for part in glob.glob(glob.escape(target) + ".part-*"):
        try:
            if now - os.path.getmtime(part) > max_age_s:
                os.remove(part)
        except OSError:
            pass


def download(name, base_url=None, offline=None, cache_dir=None, verbose=True):
    """The path of a zoo model's verified weight file, fetched first when needed.

    Args:
        name: a zoo model name (see `list()`).
        base_url: a mirror: an http(s) URL, a `file://` URL or a local folder holding
            `NAME.weights.h5`. None: `$KERAS_VAE_WEIGHTS_URL`, else the packaged preset, the
            checkout's `weights/`, or the model's Hugging Face handle (module docstring).
        offline: True never uses the network (local and `file://` sources still work); None
            reads `$KERAS_VAE_OFFLINE` (1/true/yes turn it on; for the Hub also
            `$HF_HUB_OFFLINE`).
        cache_dir: the cache root; None: `$KERAS_HOME`, else `~/.keras`. Mirror files go to
            `<cache_dir>/models/keras_vae/<name>-<sha256[:12]>.weights.h5`; Hub files to
            huggingface_hub's cache (`<cache_dir>/hub` when cache_dir is given).
        verbose: print where the file comes from and a progress bar while downloading.

    Returns:
        str: path of the verified weight file (in a cache, the package or the checkout).

    Raises:
        ValueError: unknown model, or no released weights.
        DownloadError: (a FileNotFoundError) the file is not cached and cannot be fetched:
            offline mode, HTTP error such as 404, no connection.
        IntegrityError: (a ValueError) the fetched file's sha256 differs from the registry's,
            or the download was cut short. Nothing is left in the cache.
    """
    entry = get_entry(name)
    expected = entry["sha256"]
    kind, where = source(entry, base_url)
    if kind in ("package", "checkout"):
        if not Path(where).is_file() or file_sha256(where) != expected:
            fix = ("reinstall keras-vae" if kind == "package" else
                   f"restore it with `git checkout -- weights/{entry['file']}`")
            raise IntegrityError(f"The weight file {where} of zoo model {name!r} does not have "
                                 f"the registry's sha256 {expected}; {fix}.")
        return str(where)
    if kind == "hub":
        return hub.download(where, WEIGHTS_FILE, sha256=expected,
                            size_bytes=entry["size_bytes"], what=f"zoo model {name!r}",
                            offline_mode=offline, cache_root=cache_dir, verbose=verbose)
    target = cache_path(entry, cache_dir)
    if os.path.exists(target):
        if file_sha256(target) == expected:
            return target
        if verbose:
            print(f"keras-vae: the cached {target} does not have the expected sha256 "
                  f"{expected}; deleting it and fetching {name!r} again.", file=sys.stderr)
        remove(target)
    url = _url(entry, base_url)
    local = urllib.parse.urlsplit(url).scheme == "file"
    if _offline(offline) and not local:
        raise DownloadError(
            f"Zoo model {name!r} is not in the cache ({target}) and offline mode is on "
            f"({OFFLINE_ENV}=1 or offline=True), so it is not downloaded from {url}. Run "
            f"`keras-vae zoo download {name}` once with network access, point {URL_ENV} at a "
            "local folder holding the weight files, or turn offline mode off.")
    _remove_stale_parts(target)
    return fetch_url(url, target, expected, entry["size_bytes"], f"zoo model {name!r} from {url}",
                     hint=f"Check the network, or set {URL_ENV} to a mirror or to a local folder "
                          "with the weight files.", verbose=verbose)

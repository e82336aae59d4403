"""Fetching a zoo model's weight file into the Keras cache, verified against the registry's
sha256 (see the package docstring for sources, offline mode and integrity)."""

import contextlib
import glob
import io
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import uuid
from pathlib import Path

from keras_vae.version import __version__
from keras_vae.files import file_sha256
from keras_vae.zoo.registry import get_entry

DEFAULT_BASE_URL = "https://github.com/keras-vae/keras-vae/raw/v{version}/weights/"
URL_ENV = "KERAS_VAE_WEIGHTS_URL"
OFFLINE_ENV = "KERAS_VAE_OFFLINE"
CACHE_SUBDIR = os.path.join("models", "keras_vae")


class DownloadError(FileNotFoundError):
    """A weight file could not be fetched (HTTP error, no connection, offline and not cached)."""


class IntegrityError(ValueError):
    """A fetched or cached weight file does not have the registry's sha256 (or was cut short)."""


def info(name):
    """The full registry entry of a model (a deep copy), plus where its file is and would come
    from.

    Returns:
        dict: the registry entry with "name", "url" (where `load` would fetch it now),
        "cache_path" (its place in the Keras cache) and "cached" (bool: present and verified).
    """
    entry = json.loads(json.dumps(get_entry(name)))
    path = cache_path(entry, None)
    entry.update({"name": name, "url": _url(entry, None), "cache_path": path,
                  "cached": os.path.exists(path) and file_sha256(path) == entry["sha256"]})
    return entry


# --------------------------------------------------------------------------------- download
def _offline(offline):
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _base_url(base_url):
    """The base URL from the argument, $KERAS_VAE_WEIGHTS_URL or the default, as a URL ending
    in '/'; local folders become file:// URLs."""
    base = base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL.format(version=__version__)
    base = str(base)
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


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


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


def _root_cause(err):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (urllib.error.ContentTooShortError, urllib.error.HTTPError)):
            return err
        err = err.__cause__ or err.__context__
    return None


def download(name, base_url=None, offline=None, cache_dir=None, verbose=True):
    """Makes sure the verified weight file of a zoo model is in the Keras cache.

    Args:
        name: a zoo model name (see `list()`).
        base_url: where the files are: an http(s) URL, a `file://` URL or a local folder.
            None: `$KERAS_VAE_WEIGHTS_URL`, else `DEFAULT_BASE_URL` at this version's tag.
        offline: True never uses the network (local and `file://` sources still work); None
            reads `$KERAS_VAE_OFFLINE` (1/true/yes turn it on).
        cache_dir: the cache root; None: `$KERAS_HOME`, else `~/.keras`. Files go to
            `<cache_dir>/models/keras_vae/<name>-<sha256[:12]>.weights.h5`.
        verbose: print where the file comes from and a progress bar while downloading.

    Returns:
        str: path of the verified weight file in the cache.

    Raises:
        ValueError: unknown model, or no released weights.
        DownloadError: (a FileNotFoundError) the file is not cached and cannot be fetched:
            offline mode, HTTP error such as 404, no connection.
        IntegrityError: (a ValueError) the fetched file's sha256 differs from the registry's,
            or the download was cut short. Nothing is left in the cache.
    """
    import keras

    entry = get_entry(name)
    expected = entry["sha256"]
    target = cache_path(entry, cache_dir)
    if os.path.exists(target):
        if file_sha256(target) == expected:
            return target
        if verbose:
            print(f"keras-vae: the cached {target} does not have the expected sha256 "
                  f"{expected}; deleting it and fetching {name!r} again.", file=sys.stderr)
        _remove(target)
    url = _url(entry, base_url)
    local = urllib.parse.urlsplit(url).scheme == "file"
    if _offline(offline) and not local:
        raise DownloadError(
            f"Zoo model {name!r} is not in the cache ({target}) and offline mode is on "
            f"({OFFLINE_ENV}=1 or offline=True), so it is not downloaded from {url}. Run "
            f"`keras-vae zoo download {name}` once with network access, point {URL_ENV} at a "
            "local folder holding the weight files, or turn offline mode off.")

    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_parts(target)
    part_name = f"{os.path.basename(target)}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    part = os.path.join(folder, part_name)
    what = f"zoo model {name!r} from {url}"
    try:
        if verbose:
            print(f"keras-vae: fetching {what} (sha256 {expected}).", file=sys.stderr)
        try:
            # get_file prints a progress bar and checks the hash; it raises ValueError on a
            # mismatch (leaving the file: removed below) and a bare Exception on URL errors.
            # Its messages and progress bar go to stdout: send them to stderr (or nowhere), so
            # stdout keeps only results (`keras-vae zoo download` prints paths there).
            with contextlib.redirect_stdout(sys.stderr if verbose else io.StringIO()):
                got = keras.utils.get_file(fname=part_name, origin=url, file_hash=expected,
                                           hash_algorithm="sha256",
                                           cache_dir=_cache_dir(cache_dir),
                                           cache_subdir=CACHE_SUBDIR)
        except ValueError as err:
            actual = file_sha256(part) if os.path.exists(part) else "(no file)"
            size = os.path.getsize(part) if os.path.exists(part) else 0
            raise IntegrityError(
                f"The weight file of {what} is corrupt or incomplete: its sha256 is {actual} "
                f"({size} bytes) but the registry expects {expected} ({entry['size_bytes']} "
                "bytes). Nothing was kept in the cache; try again, or check the mirror set by "
                f"{URL_ENV}.") from err
        except Exception as err:  # get_file wraps URL errors in a plain Exception
            cause = _root_cause(err)
            if isinstance(cause, urllib.error.ContentTooShortError):
                raise IntegrityError(
                    f"The download of {what} was cut short ({cause.reason}); expected sha256 "
                    f"{expected} ({entry['size_bytes']} bytes). Nothing was kept in the "
                    "cache; try again.") from err
            if isinstance(cause, urllib.error.HTTPError):
                detail = f"HTTP {cause.code} {cause.reason}"
            else:
                detail = str(err)
            raise DownloadError(
                f"Could not fetch {what}: {detail}. Check the network, or set {URL_ENV} to a "
                "mirror or to a local folder with the weight files (expected sha256 "
                f"{expected}).") from err
        os.replace(got, target)
    finally:
        _remove(part)
    return target

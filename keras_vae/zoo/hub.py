"""Presets on the Hugging Face Hub: `hf://owner/name[@revision]` handles, verified downloads
into huggingface_hub's cache, and uploads.

Downloads go through `huggingface_hub.hf_hub_download`: its cache (`$HF_HUB_CACHE`, else
`$HF_HOME/hub`, else `~/.cache/huggingface/hub`), revision pinning (`@revision`: a branch, tag
or commit), `HF_HUB_OFFLINE=1` (also `KERAS_VAE_OFFLINE=1`) and `HF_ENDPOINT` (read at each call).
On top of it every file is bounded and verified:

- a file the registry (or a preset's `preset.json`) describes is read from the cache only when
  its sha256 matches, and a fresh download is checked before it is used; a file that fails is
  removed from the cache (blob and snapshot link), so nothing unverified stays usable;
- a download stops when the server sends more than the expected size plus a small slack
  (`fetch.size_limit`), and gives up when no byte arrives for `$KERAS_VAE_DOWNLOAD_TIMEOUT`
  seconds (default 30); huggingface_hub resumes a stalled transfer up to 5 times, 1 s apart, so
  a server that keeps stalling is given up on after about 6 x (timeout + 1) s;
- partial files: huggingface_hub writes each download to a unique `*.incomplete` name and
  removes it on every way out (errors and Ctrl-C); this module checks that none is left.
"""

import contextlib
import glob
import os
import sys
import time

from keras_vae.version import __version__
from keras_vae.files import file_sha256
from keras_vae.zoo.fetch import (
    DownloadError,
    IntegrityError,
    TIMEOUT_ENV,
    download_timeout,
    remove,
    size_limit,
)

SCHEME = "hf://"
OFFLINE_ENV = "KERAS_VAE_OFFLINE"
PRESET_JSON_LIMIT = 1 << 20  # a preset.json of a handle outside the registry: at most 1 MiB


def _truthy(value):
    return str(value or "").strip().lower() not in ("", "0", "false", "no", "off")


def parse_handle(handle):
    """`hf://owner/name[@revision]` -> ("owner/name", revision or None)."""
    text = str(handle)
    if not text.startswith(SCHEME):
        raise ValueError(f"{handle!r} is not a Hugging Face handle; expected "
                         "hf://owner/name (optionally @revision).")
    repo, _, revision = text[len(SCHEME):].partition("@")
    repo = repo.strip("/")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or (_ and not revision):
        raise ValueError(f"{handle!r} is not a Hugging Face handle; expected "
                         "hf://owner/name or hf://owner/name@revision.")
    return repo, revision or None


def offline(value=None):
    """Offline mode: `value` if given, else $KERAS_VAE_OFFLINE or $HF_HUB_OFFLINE (read now)."""
    if value is not None:
        return bool(value)
    return _truthy(os.environ.get(OFFLINE_ENV)) or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def endpoint():
    """$HF_ENDPOINT read now (huggingface_hub reads it once, at import), or None: the Hub."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def cache_dir(root=None):
    """huggingface_hub's cache folder: `root/hub` when a cache root is given, else
    $HF_HUB_CACHE, $HF_HOME/hub, or huggingface_hub's default (all read now)."""
    if root is not None:
        return os.path.join(os.path.expanduser(str(root)), "hub")
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def url(repo_id, filename, revision=None):
    """Where huggingface_hub fetches a file from."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint())


class _TooMuchData(Exception):
    pass


def _limited_progress(limit, verbose=True):
    """A huggingface_hub progress bar class that stops a download past `limit` bytes (and
    shows nothing unless `verbose`)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Limited(hf_tqdm):
        def __init__(self, *args, **kwargs):
            if not verbose:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            self.received = getattr(self, "received", 0) + (n or 0)
            if self.received > limit:
                raise _TooMuchData(self.received)
            return super().update(n)

    return Limited


@contextlib.contextmanager
def _online_with_timeouts(seconds):
    """huggingface_hub reads its timeouts and offline switch from module constants, set once
    at its import: set them for one call (made only when `offline()` says online now)."""
    from huggingface_hub import constants

    saved = (constants.HF_HUB_DOWNLOAD_TIMEOUT, constants.HF_HUB_ETAG_TIMEOUT,
             constants.HF_HUB_OFFLINE)
    constants.HF_HUB_DOWNLOAD_TIMEOUT = constants.HF_HUB_ETAG_TIMEOUT = seconds
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        (constants.HF_HUB_DOWNLOAD_TIMEOUT, constants.HF_HUB_ETAG_TIMEOUT,
         constants.HF_HUB_OFFLINE) = saved


def _repo_folder(cache, repo_id):
    from huggingface_hub import constants

    root = cache or constants.HF_HUB_CACHE
    return os.path.join(root, "models--" + repo_id.replace("/", "--"))


def _evict(path):
    """Removes a cached file: its snapshot link and the blob it points to."""
    blob = os.path.realpath(path)
    remove(path)
    if blob != os.path.abspath(path):
        remove(blob)


def _good(path, sha256):
    return sha256 is None or (os.path.isfile(path) and file_sha256(path) == sha256)


def download(handle, filename, sha256=None, size_bytes=None, what=None, offline_mode=None,
             cache_root=None, verbose=True):
    """One verified file of a Hub repository in huggingface_hub's cache.

    Args:
        handle: `hf://owner/name[@revision]`.
        filename: the file in the repository, e.g. "model.weights.h5".
        sha256, size_bytes: what the file must be (None: unknown, e.g. the `preset.json` of a
            handle outside the registry, which is then limited to 1 MiB).
        what: how messages name the model.
        offline_mode: True reads the cache only; None: $KERAS_VAE_OFFLINE / $HF_HUB_OFFLINE.
        cache_root: a cache root (files go to `cache_root/hub`); None: huggingface_hub's.

    Returns:
        str: the path of the verified file in the cache (a snapshot link).

    Raises:
        DownloadError: not found (404), no connection, stalled, or offline and not cached.
        IntegrityError: wrong sha256, cut short, or more data than expected.
    """
    from huggingface_hub import errors, hf_hub_download, try_to_load_from_cache

    repo_id, revision = parse_handle(handle)
    cache = cache_dir(cache_root)
    where = url(repo_id, filename, revision)
    what = f"{what or handle} ({where})"
    expected = (f"sha256 {sha256} ({size_bytes} bytes)" if sha256 else
                "the file listed by the preset")
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    if isinstance(cached, str):
        if sha256 is not None and _good(cached, sha256):
            return cached
        if sha256 is not None:  # damaged or stale: never used
            _evict(cached)
        elif offline(offline_mode):
            return cached
    if offline(offline_mode):
        raise DownloadError(
            f"{what} is not in the Hugging Face cache and offline mode is on "
            f"(HF_HUB_OFFLINE or {OFFLINE_ENV}); run `keras-vae zoo download` or load it once "
            "with network access, or turn offline mode off.")
    limit = size_limit(size_bytes) if size_bytes else PRESET_JSON_LIMIT
    started = time.time()
    timeout = download_timeout()
    if verbose:
        print(f"Downloading {filename} of {what}", file=sys.stderr)
    try:
        with _online_with_timeouts(timeout):
            path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache,
                                   endpoint=endpoint(),
                                   tqdm_class=_limited_progress(limit, verbose),
                                   library_name="keras-vae", library_version=__version__,
                                   etag_timeout=timeout)
    except _TooMuchData:
        raise IntegrityError(f"The server sent more than {limit} bytes for {what}; expected "
                             f"{expected}. Stopped and kept nothing; check the repository."
                             ) from None
    except (errors.RemoteEntryNotFoundError, errors.RepositoryNotFoundError,
            errors.RevisionNotFoundError) as err:
        status = getattr(getattr(err, "response", None), "status_code", 404)
        raise DownloadError(f"Could not fetch {what}: HTTP {status}, no such repository, "
                            "revision or file. Check the handle, or log in "
                            "(`hf auth login` / HF_TOKEN) for a private repository.") from None
    except errors.HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", "error")
        raise DownloadError(f"Could not fetch {what}: HTTP {status}. Try again later, or set "
                            "KERAS_VAE_WEIGHTS_URL to a mirror.") from None
    except errors.LocalEntryNotFoundError:
        raise DownloadError(f"Could not fetch {what}: the Hub could not be reached and the file "
                            "is not cached. Check the network or HF_ENDPOINT, or set "
                            "KERAS_VAE_WEIGHTS_URL to a mirror.") from None
    except OSError as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Consistency check failed" in text:
            raise IntegrityError(f"The download of {what} was cut short ({text}); expected "
                                 f"{expected}. Nothing was kept in the cache; try again."
                                 ) from None
        raise DownloadError(f"Could not fetch {what}: {text} (no data for {timeout:g} s stops "
                            f"a download: {TIMEOUT_ENV}). Nothing was kept; try again.") from None
    except Exception as err:  # httpx errors that escaped huggingface_hub's retries
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DownloadError(f"Could not fetch {what}: {type(err).__name__}: {text} (no data for "
                            f"{timeout:g} s stops a download: {TIMEOUT_ENV}). Nothing was kept; "
                            "try again.") from None
    finally:
        _remove_partials(cache, repo_id, started)
    if not _good(path, sha256):
        actual = file_sha256(path)
        size = os.path.getsize(path)
        _evict(path)
        raise IntegrityError(f"The file of {what} is corrupt: its sha256 is {actual} ({size} "
                             f"bytes) but {expected} was expected. It was removed from the "
                             "cache; try again, or check the repository.")
    return path


def _remove_partials(cache, repo_id, since, max_age_s=3600.0):
    """Removes `*.incomplete` files this download may have left (huggingface_hub removes its
    own; this is the guarantee, not the mechanism), and those of downloads killed long ago
    (SIGKILL, power loss: older than `max_age_s`; running downloads are younger)."""
    blobs = os.path.join(_repo_folder(cache, repo_id), "blobs")
    now = time.time()
    for part in glob.glob(os.path.join(glob.escape(blobs), "*.incomplete")):
        try:
            mtime = os.path.getmtime(part)
            if mtime >= since - 1 or now - mtime > max_age_s:
                os.remove(part)
        except OSError:
            pass


def upload(folder, handle, token=None, message=None, private=None):
    """Uploads a preset folder to `hf://owner/name` (created if missing); returns the commit
    URL. The token comes from `token`, else huggingface_hub's login / $HF_TOKEN."""
    from huggingface_hub import HfApi

    repo_id, revision = parse_handle(handle)
    api = HfApi(endpoint=endpoint(), token=token, library_name="keras-vae",
                library_version=__version__)
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 commit_message=message or "Upload keras-vae preset")
    except Exception as err:  # huggingface_hub's HTTP and token errors: one line
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"Could not push {folder} to {handle} ({endpoint() or 'the Hub'}): "
                         f"{text}. Log in with `hf auth login` or set HF_TOKEN to a token that "
                         "may write to that repository.") from None
    return getattr(info, "commit_url", None) or str(info)

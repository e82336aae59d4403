"""Bounded, verified downloads: every fetch stops at its expected size plus a small slack, gives
up when the connection is idle for `download_timeout()` seconds, checks the sha256 before the
file gets its final name, and removes its partial file on every way out (HTTP error, too much
data, a stalled or cut connection, wrong hash, Ctrl-C).

Settings (read at each download):
    KERAS_VAE_DOWNLOAD_TIMEOUT  seconds without a byte before a download gives up (default 30).
"""

import contextlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid

from keras_vae.files import file_sha256

TIMEOUT_ENV = "KERAS_VAE_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
CHUNK = 1 << 16


class DownloadError(FileNotFoundError):
    """A file could not be fetched (HTTP error, no connection, stalled, offline and not
    cached)."""


class IntegrityError(ValueError):
    """A fetched or cached file does not have the expected sha256, was cut short, or was longer
    than expected."""


def download_timeout():
    """Seconds a download may wait for its next byte: $KERAS_VAE_DOWNLOAD_TIMEOUT, else 30."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds; set it "
                         f"to e.g. 30 or unset it (default {DEFAULT_TIMEOUT_S:g}).")
    return value


def size_limit(size_bytes):
    """The most bytes a download of a file of `size_bytes` may deliver: its size plus 1% (at
    least 64 KiB) of slack; a server sending more is cut off."""
    return int(size_bytes) + max(1 << 16, int(size_bytes) // 100)


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _progress(total, verbose):
    """A keras Progbar on stderr (or nothing), updated with the byte count."""
    if not verbose:
        return lambda n: None
    import keras

    with contextlib.redirect_stdout(sys.stderr):
        bar = keras.utils.Progbar(total if total else None, unit_name="B")

    def update(n):
        with contextlib.redirect_stdout(sys.stderr):
            bar.update(n)

    return update


def fetch_url(url, target, sha256, size_bytes, what, hint, verbose=True):
    """Downloads `url` to `target` (atomically: a unique `TARGET.part-*` name first), checking
    the size limit, the idle timeout and the sha256.

    Args:
        url: http(s) or file:// URL.
        target: the final path; written only once the file verifies.
        sha256, size_bytes: what the file must be.
        what: how messages name the download, e.g. "zoo model 'x' from URL".
        hint: the sentence that says what to do about an HTTP or connection error.

    Raises:
        DownloadError: HTTP error (e.g. 404), no connection, or the connection stalled.
        IntegrityError: too much data, cut short, or wrong sha256.
    """
    timeout = download_timeout()
    limit = size_limit(size_bytes)
    folder = os.path.dirname(target) or "."
    os.makedirs(folder, exist_ok=True)
    part = os.path.join(folder, f"{os.path.basename(target)}.part-{os.getpid()}-"
                                f"{uuid.uuid4().hex[:8]}")
    expected = f"sha256 {sha256} ({size_bytes} bytes)"
    try:
        if verbose:
            print(f"Downloading data from {url}", file=sys.stderr)
        try:
            response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http/file)
        except urllib.error.HTTPError as err:
            raise DownloadError(f"Could not fetch {what}: HTTP {err.code} {err.reason}. {hint} "
                                f"(expected {expected}).") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise DownloadError(f"Could not fetch {what}: {reason}. {hint} (expected "
                                f"{expected}).") from None
        received = 0
        with response, open(part, "wb") as out:
            declared = response.headers.get("Content-Length")
            declared = int(declared) if declared and declared.isdigit() else None
            if declared is not None and declared > limit:
                raise IntegrityError(
                    f"The server announced {declared} bytes for {what}, more than the "
                    f"{size_bytes} expected; nothing was kept. Check the mirror.")
            update = _progress(declared or size_bytes, verbose)
            while True:
                try:
                    block = response.read(CHUNK)
                except http.client.IncompleteRead as err:
                    received += len(err.partial)
                    raise IntegrityError(
                        f"The download of {what} was cut short after {received} bytes; "
                        f"expected {expected}. Nothing was kept in the cache; try again.") from None
                except (socket.timeout, TimeoutError):
                    raise DownloadError(
                        f"The download of {what} stalled: no data for {timeout:g} s after "
                        f"{received} bytes ({TIMEOUT_ENV} sets the limit). Nothing was kept; "
                        f"try again. {hint}") from None
                except (ConnectionError, OSError) as err:
                    raise IntegrityError(
                        f"The download of {what} was cut short after {received} bytes ({err}); "
                        f"expected {expected}. Nothing was kept in the cache; try again."
                    ) from None
                if not block:
                    break
                received += len(block)
                if received > limit:
                    raise IntegrityError(
                        f"The server sent more than {limit} bytes for {what}, which should be "
                        f"{size_bytes}; stopped and kept nothing. Check the mirror.")
                out.write(block)
                update(received)
        if declared is not None and received < declared:
            raise IntegrityError(
                f"The download of {what} was cut short ({received} of {declared} bytes); "
                f"expected {expected}. Nothing was kept in the cache; try again.")
        actual = file_sha256(part)
        if actual != sha256:
            raise IntegrityError(
                f"The file of {what} is corrupt or incomplete: its sha256 is {actual} "
                f"({received} bytes) but the registry expects {expected}. Nothing was kept in "
                "the cache; try again, or check the mirror.")
        os.replace(part, target)
    finally:
        remove(part)
    return target


def file_url(base, name):
    """`base` (a URL ending in '/') joined with a file name."""
    return urllib.parse.urljoin(base, name)

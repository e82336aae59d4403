"""Small file utilities shared by every layer: hashing (manifests, the zoo's registry), atomic
writes (a temporary name, then os.replace) and the lock that keeps one writer per folder.

Nothing here imports Keras or TensorFlow."""

import contextlib
import hashlib
import json
import os


def file_sha256(path):
    """The sha256 hex digest of a file, read in 1 MiB blocks (manifests, the zoo's registry)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ============================================================================ atomic writes
# Every file keras-vae writes is written under a temporary name in the same folder and then
# renamed over the final name with os.replace, which is atomic on POSIX and Windows: a reader,
# or a rerun after a crash or `kill -9`, sees either the old file or the new one, never a part.
TEMP_MARK = ".tmp-"


def temp_name(path):
    """A temporary name beside `path` that keeps its extension (Keras and image writers pick
    the format from it): `dir/.NAME.tmp-PID-N.EXT`. Leftovers match `is_temp_name`."""
    directory, base = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(base)
    if stem.endswith(".weights"):  # Keras's weights files must end in .weights.h5
        stem, ext = stem[: -len(".weights")], ".weights" + ext
    temp_name.counter += 1
    return os.path.join(directory, f".{stem}{TEMP_MARK}{os.getpid()}-{temp_name.counter}{ext}")


temp_name.counter = 0


def is_temp_name(name):
    """Whether a file name is one `temp_name` makes (a leftover of a killed write)."""
    return name.startswith(".") and TEMP_MARK in name


def _fsync(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write instead of `path`; on success the file is flushed to
    disk and renamed over `path`, on any error (or exception) the temporary file is removed
    and `path` is left as it was.

        with atomic_path("model.keras") as tmp:
            model.save(tmp)
    """
    tmp = temp_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically (a temporary name, then os.replace)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def atomic_write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, data):
    """Writes `data` as indented, key-sorted JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_save_model(model, path, **kwargs):
    """`model.save(path)` written to a temporary name and renamed over `path`: a crash during
    the save leaves the previous file (or none), never a truncated one."""
    with atomic_path(path) as tmp:
        model.save(tmp, **kwargs)
    return path


def atomic_save_weights(model, path):
    """`model.save_weights(path)` (a .weights.h5 file) written atomically."""
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
    return path


def remove_temp_files(directory):
    """Removes the leftovers of killed atomic writes in `directory` (not recursive). Call it
    only while holding the directory's lock (`DirectoryLock`), so no write is in progress."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if is_temp_name(name):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    return removed


# ============================================================================ one writer
class LockedError(FileExistsError):
    """Another live process holds the lock; the message names it (pid, host, start time)."""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or cannot tell: assume alive)
    return True


class DirectoryLock:
    """An exclusive, inter-process lock on a folder: the file `LOCK_NAME` inside it holds the
    holder's pid, host and start time as JSON.

    Where `fcntl` exists (Linux, macOS) the lock is `flock` on that file, which the operating
    system releases when the holder dies, even by `kill -9`: a lock left by a dead process is
    never in the way. Elsewhere the file is created with O_EXCL, and a lock whose pid is dead on
    this host is taken over. A second holder gets `LockedError` at once (no waiting). Locks
    are re-entrant within one process.

        with DirectoryLock("runs/a", what="run directory"):
            ...
    """

    LOCK_NAME = ".keras-vae.lock"
    _held = {}  # realpath -> [lock, depth] of the locks this process holds

    def __init__(self, directory, what="folder"):
        self.directory = directory
        self.what = what
        self.path = os.path.join(directory, self.LOCK_NAME)
        self._fd = None

    def holder(self):
        """The holder's record {pid, host, started} as the lock file says, or {}."""
        try:
            with open(self.path) as handle:
                record = json.load(handle)
            return record if isinstance(record, dict) else {}
        except (OSError, ValueError):
            return {}

    def _refuse(self):
        record = self.holder()
        who = (f"pid {record.get('pid', '?')} on {record.get('host', '?')}, since "
               f"{record.get('started', '?')}") if record else "another process"
        raise LockedError(
            f"{self.directory} is in use by another keras-vae process ({who}); wait for it to "
            f"finish or stop it, then run the command again.")

    def _record(self):
        import socket
        import time
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()

    def acquire(self):
        key = os.path.realpath(self.directory)
        if key in self._held:
            self._held[key][1] += 1
            return self
        try:
            import fcntl
        except ImportError:
            fcntl = None
        for _ in range(100):
            if fcntl is not None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    self._refuse()
                try:  # the file we locked may have been removed by the previous holder
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except OSError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            else:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    import socket
                    record = self.holder()
                    if record.get("host") == socket.gethostname() and isinstance(
                            record.get("pid"), int) and not _pid_alive(record["pid"]):
                        with contextlib.suppress(OSError):
                            os.remove(self.path)  # stale: its holder died
                        continue
                    self._refuse()
            os.ftruncate(fd, 0)
            os.write(fd, self._record())
            self._fd = fd
            self._held[key] = [self, 1]
            return self
        self._refuse()

    def release(self):
        key = os.path.realpath(self.directory)
        entry = self._held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del self._held[key]
        lock = entry[0]
        with contextlib.suppress(OSError):
            os.remove(lock.path)  # before unlocking: a waiter then sees a fresh file
        with contextlib.suppress(OSError):
            os.close(lock._fd)
        lock._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

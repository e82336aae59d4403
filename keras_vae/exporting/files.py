"""Files of an export folder: hashes, entries, and moving a finished export into place."""

import os
import shutil
import tempfile
from pathlib import Path

from keras_vae.files import file_sha256


# --------------------------------------------------------------------------- files
def file_entries(root, rel):
    path = Path(root) / rel
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [{"path": p.relative_to(root).as_posix(), "sha256": file_sha256(p),
             "size_bytes": p.stat().st_size} for p in paths]


def move_into_place(tmp, out):
    """Replaces `out` by the finished folder `tmp` (renames on one filesystem)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

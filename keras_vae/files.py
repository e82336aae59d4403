"""Small file utilities shared by every layer: hashing (manifests, the zoo's registry).

Nothing here imports Keras or TensorFlow."""

import hashlib


def file_sha256(path):
    """The sha256 hex digest of a file, read in 1 MiB blocks (manifests, the zoo's registry)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""Streamed sha256 of files, cached per process: shared by provenance, checkpoints and fetches.

A module of its own so that `provenance` (which records the digests of a job's inputs) and
`checkpoint_hashes` (which caches the digests of a local checkpoint across runs, and which
`provenance` calls) both import it without importing each other.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HASH_CHUNK = 8 << 20

# Digests computed by this process, by (path, size, mtime): a job's provenance hashes every
# input, and a stage may hash the same input for its own record (e.g. the BARTScore weights).
_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Streamed sha256 hex digest of a file (constant memory, fine for multi-GB shards); a file
    this process hashed before, unchanged in size and mtime, is not read again."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]

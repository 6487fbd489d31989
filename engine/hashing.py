"""Content hashes shared by manifests, caches and exports (torch-free)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in chunks (model files can be several GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_size(path: str | os.PathLike) -> int | None:
    """Size of a regular file; None when ``path`` is not one or cannot be one (missing, a folder, a name too
    long for the file system, an embedded NUL byte, no permission): names read from manifests and cache
    records are data, and a bad one must read as "missing", never raise."""
    import stat

    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None

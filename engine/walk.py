"""Collect input files: recursive directory walk with symlink-loop protection (torch-free)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from .images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


def iter_inputs(paths: Iterable[str | os.PathLike], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> Iterator[str]:
    """Yield files to score, in a stable order.

    Files named explicitly are yielded whatever their extension (a bad one becomes an error row).
    Directories are walked recursively, keeping files with an image extension; symlinked
    directories are followed once (a loop is never entered twice).
    """
    seen_dirs: set[tuple[int, int]] = set()
    for p in paths:
        p = str(p)
        if not os.path.isdir(p):
            yield p  # missing or unreadable files become error rows later
            continue
        for root, dirs, files in os.walk(p, followlinks=True):
            try:
                st = os.stat(root)
            except OSError:
                dirs[:] = []
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                log.warning("skipping %s: already visited (symlink loop or duplicate)", root)
                dirs[:] = []
                continue
            seen_dirs.add(key)
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in extensions:
                    yield os.path.join(root, name)


def in_shard(path: str, num_shards: int, shard_id: int) -> bool:
    """Deterministic partition of inputs by a hash of the path (same on every machine)."""
    if num_shards <= 1:
        return True
    h = int.from_bytes(hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")
    return h % num_shards == shard_id

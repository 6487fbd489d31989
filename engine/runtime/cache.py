"""Content-keyed artifact cache (torch-free): ONNX graphs and TensorRT engines.

An artifact is stored under the hash of everything it depends on (weights hash or revision, spec
digest, precision, shape profile, runtime version and, for TensorRT, the GPU's compute capability)::

    <root>/<key[:2]>/<key>/artifact.json    key, the parts that made it, every file's sha256 and size
    <root>/<key[:2]>/<key>/<files...>

``load`` re-hashes every file and compares the stored key: a stale, foreign or corrupt artifact is
removed and rebuilt, never trusted because the file exists. Builds happen in a temporary folder
beside the target and are moved into place atomically, so an interrupted build leaves nothing.
Concurrent runs (threads or processes) sharing a cache build each artifact once: building and
replacing happen under a per-key file lock (``<key>.lock``), and a run that waited for the lock
loads what the other built.

Root: ``cache_dir`` argument, else ``$SEMGIR_CACHE``, else ``~/.cache/semgir-engine`` (``artifacts/`` inside).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..errors import SemgirError
from ..hashing import file_size, sha256_file
from ..locking import file_lock

log = logging.getLogger(__name__)

ARTIFACT_JSON = "artifact.json"
FORMAT = 1


class CacheError(SemgirError):
    """An artifact could not be built or stored."""


def default_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SEMGIR_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "semgir-engine"
    return base / "artifacts"


def artifact_key(parts: Mapping) -> str:
    """sha256 of the canonical JSON of ``parts`` (everything the artifact depends on)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class Artifact:
    key: str
    dir: Path
    files: tuple[str, ...]
    parts: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def path(self, name: str | None = None) -> Path:
        return self.dir / (name or self.files[0])


class ArtifactCache:
    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.root = default_root(cache_dir)

    def dir_for(self, key: str) -> Path:
        return self.root / key[:2] / key

    # -- load ----------------------------------------------------------------------------------
    def check(self, key: str) -> tuple[Artifact | None, str]:
        """The artifact under ``key`` if it is intact, else ``(None, why)``."""
        d = self.dir_for(key)
        mf = d / ARTIFACT_JSON
        if not mf.is_file():
            return None, "absent" if not d.exists() else "no artifact.json"
        try:
            info = json.loads(mf.read_bytes())
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
            return None, f"unreadable artifact.json ({exc})"
        if not isinstance(info, dict) or not isinstance(info.get("parts"), dict) or not isinstance(
                info.get("meta", {}), dict):
            return None, "malformed artifact.json"
        if info.get("key") != key or artifact_key(info["parts"]) != key:
            return None, "foreign artifact (its key does not match what it was built from)"
        files = info.get("files")
        if not files or not isinstance(files, list):
            return None, "no files recorded"
        for f in files:
            if not (isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("bytes"), int)
                    and isinstance(f.get("sha256"), str)):
                return None, "malformed file record in artifact.json"
            p = d / f["name"]
            size = file_size(p) if p.parent == d else None
            if size is None:
                return None, f"{f['name']!r} missing"
            if size != f["bytes"]:
                return None, f"{f['name']} has {size} bytes, recorded {f['bytes']} (truncated or replaced)"
            if sha256_file(p) != f["sha256"]:
                return None, f"{f['name']} sha256 differs from the record (corrupt or replaced)"
        return Artifact(key, d, tuple(f["name"] for f in files), info["parts"], info.get("meta", {})), "ok"

    def load(self, key: str) -> Artifact | None:
        art, why = self.check(key)
        if art is None and why != "absent":
            log.warning("cache: discarding artifact %s: %s", key[:16], why)
            self.remove(key)
        return art

    def remove(self, key: str) -> None:
        d = self.dir_for(key)
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)

    # -- build ---------------------------------------------------------------------------------
    def get_or_build(self, parts: Mapping, build: Callable[[Path], Mapping | None]) -> Artifact:
        """The cached artifact for ``parts``, or ``build(tmp_dir)`` it (the builder writes its files into
        ``tmp_dir`` and may return extra metadata), record every file's hash, and move it into place."""
        parts = json.loads(json.dumps(dict(parts), sort_keys=True, default=str))
        key = artifact_key(parts)
        art, _ = self.check(key)  # lock-free fast path: a complete artifact only ever appears by rename
        if art is not None:
            log.info("cache: hit %s (%s)", key[:16], parts.get("kind", "artifact"))
            return art
        target = self.dir_for(key)
        with file_lock(target.parent / f"{key}.lock"):
            art = self.load(key)  # built by another run while we waited, or a broken one to discard
            if art is not None:
                log.info("cache: hit %s (%s, built concurrently)", key[:16], parts.get("kind", "artifact"))
                return art
            return self._build(key, parts, target, build)

    def _build(self, key: str, parts: dict, target: Path, build: Callable[[Path], Mapping | None]) -> Artifact:
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=target.parent))
        try:
            t0 = time.perf_counter()
            meta = dict(build(tmp) or {})
            names = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != ARTIFACT_JSON)
            if not names:
                raise CacheError(f"building {parts.get('kind', 'artifact')} wrote no files")
            files = [{"name": n, "sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size} for n in names]
            meta.setdefault("build_seconds", round(time.perf_counter() - t0, 3))
            info = {"format": FORMAT, "key": key, "parts": parts, "files": files, "meta": meta,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / ARTIFACT_JSON).write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
            if target.exists():  # a broken leftover (load() said so): replace it
                shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("cache: built %s (%s) in %.1fs", key[:16], parts.get("kind", "artifact"), meta["build_seconds"])
        return Artifact(key, target, tuple(names), parts, meta)

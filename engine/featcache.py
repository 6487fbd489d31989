"""Persistent SemGIR feature cache: caption, regenerated image and CLIP embeddings per image (torch-free).

An entry is keyed by ``(image, version)``: ``image`` is the SHA-256 of the input's encoded
bytes (or of its pixels for in-memory inputs) and ``version`` is a hash of everything the
features depend on (weights, regeneration config, noise seed, library versions: see
:mod:`semgir_engine.semgir.features`). The detection head is *not* part of the key, so
training, evaluation and scoring share the same entries.

Layout under the cache folder (``$SEMGIR_CACHE/features`` or ``~/.cache/semgir-engine/features``)::

    index.sqlite                             the index (SQLite, WAL journal)
    v/<version[:16]>/<image[:2]>/<image>-<nonce>.png   regenerated image (open it with any viewer)
    v/<version[:16]>/<image[:2]>/<image>-<nonce>.npz   embeddings: image, regenerated, caption text

Crash safety: each file is written to a temporary name, fsync'ed and renamed; the index row
(which records both files' SHA-256 and the array shapes) is committed last. A kill at any point
leaves either no row (a miss; stray files are collected by :meth:`FeatureCache.prune`) or a
complete entry. Every read re-hashes the files and checks the shapes; a bad entry is dropped
and reads as a miss, so the caller recomputes and rewrites it. Nothing is trusted because a
file exists. A corrupt index (SQLite's ``quick_check`` fails at open) is moved aside as
``index.sqlite.corrupt-*`` and a new one started (its entries recompute; their files are collected
by :meth:`FeatureCache.prune`); the check and the swap happen under a file lock, so concurrent runs
agree on one new index.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from .locking import file_lock

log = logging.getLogger(__name__)

SCHEMA = 1
ORPHAN_GRACE_S = 3600.0  # stray files younger than this may belong to a writer in flight


def default_cache_dir() -> Path:
    """``$SEMGIR_CACHE/features`` (the engine's cache root, shared with the runtime's built artifacts),
    else ``~/.cache/semgir-engine/features``."""
    env = os.environ.get("SEMGIR_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "semgir-engine"
    return root / "features"


def resolve_cache_option(value: str | None, random_weights: bool = False) -> Path | None:
    """Turn a ``--feature-cache`` value into a folder, or None (off).

    ``off``/``none``: no cache. ``auto``/None: ``$SEMGIR_CACHE/features`` when that variable is
    set; otherwise the default folder for real weights and no cache for tiny/random weights (test
    and timing runs, whose timings a cache would falsify). Anything else is a folder.
    """
    if value is not None and value.lower() in ("off", "none", "no", "false", "0"):
        return None
    if value is None or value.lower() == "auto":
        if os.environ.get("SEMGIR_CACHE"):
            return default_cache_dir()
        return None if random_weights else default_cache_dir()
    if value.lower() == "default":
        return default_cache_dir()
    return Path(value).expanduser()


@dataclass(frozen=True)
class Features:
    """What SemGIR computes for one image before its heads."""

    caption: str
    regenerated: np.ndarray  # (H, W, 3) uint8
    emb_image: np.ndarray  # (D,) float32, CLIP image embedding of the candidate
    emb_regen: np.ndarray  # (D,) float32, CLIP image embedding of the regenerated image
    emb_text: np.ndarray | None = None  # (D,) float32, CLIP text embedding of the caption

    def detection(self) -> np.ndarray:
        """The detection head's input: [E(candidate) || E(regenerated)]."""
        return np.concatenate([self.emb_image, self.emb_regen]).astype(np.float32)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """tmp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass


def _png_bytes(pixels: np.ndarray, caption: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("caption", caption)
    info.add_text("software", "semgir-engine feature cache")
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


def _npz_bytes(f: Features) -> bytes:
    arrays = {"emb_image": np.asarray(f.emb_image, np.float32), "emb_regen": np.asarray(f.emb_regen, np.float32)}
    if f.emb_text is not None:
        arrays["emb_text"] = np.asarray(f.emb_text, np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _open_index(path: Path) -> sqlite3.Connection:
    """Connect (WAL, full sync) and verify the index; sqlite3.DatabaseError if it is not a sound database."""
    db = sqlite3.connect(path, timeout=60.0, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=60000")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {verdict}")
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


class CorruptEntry(Exception):
    """Internal: an entry failed verification (treated as a miss)."""


class FeatureCache:
    """The feature store. Safe to share between threads and between processes (SQLite WAL)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        with file_lock(self.root / "index.lock"):
            index = self.root / "index.sqlite"
            try:
                self._db = _open_index(index)
            except sqlite3.DatabaseError as exc:
                moved = index.with_name(f"index.sqlite.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
                log.warning("feature cache: the index %s is corrupt (%s); moved it to %s and started a new one "
                            "(its entries will be recomputed)", index, exc, moved.name)
                os.replace(index, moved)
                for extra in ("-wal", "-shm"):
                    index.with_name(index.name + extra).unlink(missing_ok=True)
                self._db = _open_index(index)
        with self._tx():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS entries (version TEXT NOT NULL, image TEXT NOT NULL, "
                "caption TEXT NOT NULL, png TEXT NOT NULL, png_sha TEXT NOT NULL, npz TEXT NOT NULL, "
                "npz_sha TEXT NOT NULL, dim INTEGER NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL, "
                "has_text INTEGER NOT NULL, bytes INTEGER NOT NULL, created REAL NOT NULL, accessed REAL NOT NULL, "
                "PRIMARY KEY (version, image))")
            self._db.execute("CREATE TABLE IF NOT EXISTS versions (version TEXT PRIMARY KEY, "
                             "description TEXT NOT NULL, created REAL NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
        self.hits = 0
        self.misses = 0
        self.dropped = 0  # corrupt entries found and removed

    # -- plumbing ----------------------------------------------------------------------------
    class _Tx:
        def __init__(self, cache: "FeatureCache"):
            self.c = cache

        def __enter__(self):
            self.c._lock.acquire()
            self.c._db.execute("BEGIN IMMEDIATE")
            return self.c._db

        def __exit__(self, exc_type, *_):
            try:
                self.c._db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.c._lock.release()

    def _tx(self) -> "_Tx":
        return FeatureCache._Tx(self)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _folder(self, version: str, image: str) -> Path:
        return self.root / "v" / version[:16] / image[:2]

    # -- versions ----------------------------------------------------------------------------
    def register_version(self, version: str, description: dict) -> None:
        """Remember what a version key stands for (shown by ``cache info``)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO versions VALUES (?, ?, ?)",
                       (version, json.dumps(description, sort_keys=True), time.time()))

    # -- read ----------------------------------------------------------------------------------
    def get(self, version: str, image: str, *, need_text: bool = False) -> Features | None:
        """The verified entry, or None (absent, corrupt, or lacking the text embedding when needed)."""
        with self._lock:
            row = self._db.execute(
                "SELECT caption, png, png_sha, npz, npz_sha, dim, height, width, has_text FROM entries "
                "WHERE version=? AND image=?", (version, image)).fetchone()
        if row is None:
            self.misses += 1
            return None
        try:
            feats = self._load(row)
        except CorruptEntry as exc:
            log.warning("feature cache: dropping a bad entry for %s (%s); it will be recomputed", image[:12], exc)
            self._drop(version, image, row[1], row[3])
            self.dropped += 1
            self.misses += 1
            return None
        if need_text and feats.emb_text is None:
            self.misses += 1
            return None
        with self._tx() as db:
            db.execute("UPDATE entries SET accessed=? WHERE version=? AND image=?", (time.time(), version, image))
        self.hits += 1
        return feats

    def _load(self, row) -> Features:
        caption, png, png_sha, npz, npz_sha, dim, height, width, has_text = row
        data = {}
        for name, digest in ((png, png_sha), (npz, npz_sha)):
            try:
                blob = (self.root / name).read_bytes()
            except OSError as exc:
                raise CorruptEntry(f"cannot read {name}: {exc}") from exc
            if _sha(blob) != digest:
                raise CorruptEntry(f"{name} does not match its recorded hash")
            data[name] = blob
        try:
            with Image.open(io.BytesIO(data[png])) as im:
                pixels = np.asarray(im.convert("RGB"))
            with np.load(io.BytesIO(data[npz]), allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a bad entry
            raise CorruptEntry(f"cannot decode: {exc}") from exc
        if pixels.shape != (height, width, 3):
            raise CorruptEntry(f"regenerated image has shape {pixels.shape}, expected {(height, width, 3)}")
        need = ["emb_image", "emb_regen"] + (["emb_text"] if has_text else [])
        for k in need:
            a = arrays.get(k)
            if a is None or a.shape != (dim,) or a.dtype != np.float32 or not np.isfinite(a).all():
                raise CorruptEntry(f"array {k} is missing or has the wrong shape/type")
        return Features(caption, pixels, arrays["emb_image"], arrays["emb_regen"],
                        arrays["emb_text"] if has_text else None)

    # -- write ---------------------------------------------------------------------------------
    def put(self, version: str, image: str, feats: Features) -> None:
        """Store one entry: files first (atomically), the index row last, in its own transaction."""
        regen = np.ascontiguousarray(feats.regenerated, dtype=np.uint8)
        if regen.ndim != 3 or regen.shape[2] != 3:
            raise ValueError(f"regenerated image must be (H, W, 3), got {regen.shape}")
        dim = int(np.asarray(feats.emb_image).shape[0])
        png_b, npz_b = _png_bytes(regen, feats.caption), _npz_bytes(feats)
        folder = self._folder(version, image)
        stem = f"{image}-{secrets.token_hex(4)}"
        png_p, npz_p = folder / f"{stem}.png", folder / f"{stem}.npz"
        _write_atomic(png_p, png_b)
        _write_atomic(npz_p, npz_b)
        rel = lambda p: p.relative_to(self.root).as_posix()  # noqa: E731
        now = time.time()
        with self._tx() as db:
            old = db.execute("SELECT png, npz FROM entries WHERE version=? AND image=?", (version, image)).fetchone()
            db.execute("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (version, image, feats.caption, rel(png_p), _sha(png_b), rel(npz_p), _sha(npz_b), dim,
                        regen.shape[0], regen.shape[1], int(feats.emb_text is not None), len(png_b) + len(npz_b),
                        now, now))
        if old is not None:
            self._unlink(old)

    def _unlink(self, names) -> None:
        for name in names:
            try:
                (self.root / name).unlink()
            except FileNotFoundError:
                pass

    def _drop(self, version: str, image: str, png: str, npz: str) -> None:
        """Remove the entry that refers to these files (not one another writer has put since)."""
        with self._tx() as db:
            db.execute("DELETE FROM entries WHERE version=? AND image=? AND png=?", (version, image, png))
        self._unlink((png, npz))

    # -- maintenance ---------------------------------------------------------------------------
    def info(self) -> dict:
        with self._lock:
            total = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM entries").fetchone()
            per = self._db.execute(
                "SELECT e.version, COUNT(*), SUM(e.bytes), MIN(e.created), MAX(e.accessed), v.description "
                "FROM entries e LEFT JOIN versions v ON v.version = e.version GROUP BY e.version "
                "ORDER BY MAX(e.accessed) DESC").fetchall()
        versions = []
        for version, n, nbytes, created, accessed, desc in per:
            versions.append({"version": version, "entries": n, "bytes": int(nbytes or 0),
                             "oldest": _iso(created), "last_used": _iso(accessed),
                             "description": json.loads(desc) if desc else None})
        return {"root": str(self.root), "entries": int(total[0]), "bytes": int(total[1]), "versions": versions}

    def prune(self, *, older_than_days: float | None = None, version: str | None = None,
              verify: bool = False) -> dict:
        """Remove entries not used for ``older_than_days`` and/or of ``version`` (a key or a prefix).

        Always removes stray files no entry refers to (left by a kill mid-write) once they are an
        hour old; ``verify`` also re-hashes every entry and drops the bad ones.
        """
        removed = 0
        where, args = [], []
        if older_than_days is not None:
            where.append("accessed < ?")
            args.append(time.time() - 86400.0 * older_than_days)
        if version is not None:
            where.append("version LIKE ?")
            args.append(version.replace("%", "") + "%")
        if where:
            with self._tx() as db:
                doomed = db.execute("SELECT png, npz FROM entries WHERE " + " AND ".join(where), args).fetchall()
                db.execute("DELETE FROM entries WHERE " + " AND ".join(where), args)
                db.execute("DELETE FROM versions WHERE version NOT IN (SELECT DISTINCT version FROM entries)")
            for names in doomed:
                self._unlink(names)
            removed = len(doomed)
        bad = 0
        if verify:
            with self._lock:
                rows = self._db.execute("SELECT version, image, caption, png, png_sha, npz, npz_sha, dim, height, "
                                        "width, has_text FROM entries").fetchall()
            for r in rows:
                try:
                    self._load(r[2:])
                except CorruptEntry as exc:
                    log.warning("dropping bad entry %s/%s: %s", r[0][:12], r[1][:12], exc)
                    self._drop(r[0], r[1], r[3], r[5])
                    bad += 1
        stray = self._collect_strays()
        return {"removed": removed, "corrupt": bad, "stray_files": stray}

    def _collect_strays(self) -> int:
        base = self.root / "v"
        if not base.is_dir():
            return 0
        with self._lock:
            live = {n for row in self._db.execute("SELECT png, npz FROM entries") for n in row}
        cutoff = time.time() - ORPHAN_GRACE_S
        n = 0
        for p in base.rglob("*"):
            if not p.is_file() or p.relative_to(self.root).as_posix() in live:
                continue
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        for d in sorted((d for d in base.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            try:
                d.rmdir()  # only empty folders go
            except OSError:
                pass
        return n


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None

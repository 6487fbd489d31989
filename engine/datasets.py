"""Labelled image manifests (CSV) for training and evaluation (torch-free).

A manifest is a CSV with at least the columns ``path,label,source``; ``label`` is ``real`` or
``ai``. Paths are resolved relative to the manifest's folder. Extra columns are kept verbatim.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError, SemgirError
from .hashing import sha256_file

log = logging.getLogger(__name__)

LABELS = {"real": 0, "ai": 1}
REQUIRED_COLUMNS = ("path", "label", "source")


class ManifestError(SemgirError):
    """The data manifest is missing, malformed, or asks for something it does not contain."""


@dataclass(frozen=True)
class Row:
    """One labelled image of a manifest."""

    path: Path  # absolute
    label: int  # 1 = ai, 0 = real
    source: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def label_name(self) -> str:
        return "ai" if self.label == 1 else "real"


@dataclass(frozen=True)
class Manifest:
    path: Path
    sha256: str
    rows: tuple[Row, ...]

    @property
    def sources(self) -> list[str]:
        return sorted({r.source for r in self.rows})

    def counts(self) -> dict[str, dict[str, int]]:
        """``{source: {"real": n, "ai": n}}``."""
        c = Counter((r.source, r.label_name) for r in self.rows)
        return {s: {"real": c[(s, "real")], "ai": c[(s, "ai")]} for s in self.sources}

    def select(self, sources: Iterable[str] | None = None, exclude: Iterable[str] | None = None) -> list[Row]:
        """Rows of the given sources (all when None), minus the excluded ones; unknown names raise."""
        known = set(self.sources)
        for name in list(sources or []) + list(exclude or []):
            if name not in known:
                raise ManifestError(f"unknown source {name!r}; valid: {', '.join(sorted(known))}")
        keep = set(sources) if sources else known
        drop = set(exclude or [])
        return [r for r in self.rows if r.source in keep and r.source not in drop]


def file_sha256(path: str | Path) -> str:
    return sha256_file(path)


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest CSV; raise :class:`ManifestError` with the line number on bad rows."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest not found: {p}")
    base = p.resolve().parent
    rows: list[Row] = []
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(f"{p}: missing column(s) {', '.join(missing)}; have {reader.fieldnames}")
            for rec in reader:
                i = reader.line_num
                if None in rec:
                    raise ManifestError(f"{p}:{i}: more fields than the header has columns")
                if any(rec[c] is None for c in REQUIRED_COLUMNS):
                    raise ManifestError(f"{p}:{i}: fewer fields than the header has columns")
                label = rec["label"].strip().lower()
                if label not in LABELS:
                    raise ManifestError(f"{p}:{i}: label must be 'real' or 'ai', got {rec['label']!r}")
                rel = rec["path"].strip()
                if not rel or "\0" in rel:
                    raise ManifestError(f"{p}:{i}: empty or invalid path {rel!r}")
                extra = {k: v for k, v in rec.items() if k not in REQUIRED_COLUMNS}
                rows.append(Row((base / rel).resolve(), LABELS[label], rec["source"].strip(), extra))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise ManifestError(f"{p}: not a valid CSV file: {exc}") from exc
    if not rows:
        raise ManifestError(f"{p}: no rows")
    return Manifest(p.resolve(), file_sha256(p), tuple(rows))


def read_manifests(paths: str | Path | Sequence[str | Path]) -> Manifest:
    """One manifest, or a combined read-only view over several (never copied).

    The view's rows keep their absolute paths; its ``path`` is a virtual ``combined-<n>.csv`` in
    the deepest folder holding every manifest (so paths relative to it stay valid), and its
    ``sha256`` hashes the member manifests' hashes in order. Source names must be unique across
    the members, so leave-one-source-out stays meaningful.
    """
    if isinstance(paths, (str, Path)):
        return read_manifest(paths)
    members = [read_manifest(p) for p in paths]
    if not members:
        raise ManifestError("no manifest given")
    if len(members) == 1:
        return members[0]
    seen: dict[str, Path] = {}
    for m in members:
        for s in m.sources:
            if s in seen:
                raise ManifestError(f"source {s!r} is in both {seen[s]} and {m.path}; source names must be unique")
            seen[s] = m.path
    import os

    base = Path(os.path.commonpath([str(m.path.parent) for m in members]))
    digest = hashlib.sha256("\n".join(m.sha256 for m in members).encode()).hexdigest()
    rows = tuple(r for m in members for r in m.rows)
    return Manifest(base / f"combined-{len(members)}.csv", digest, rows)


def stratified_split(rows: Sequence[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Split rows into (train, val), stratified by (source, label); deterministic for a seed."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups: dict[tuple[str, int], list[Row]] = {}
    for r in sorted(rows, key=lambda r: str(r.path)):
        groups.setdefault((r.source, r.label), []).append(r)
    rng = random.Random(seed)
    train: list[Row] = []
    val: list[Row] = []
    for key in sorted(groups):
        g = groups[key][:]
        rng.shuffle(g)
        n_val = max(1, int(round(fraction * len(g)))) if len(g) > 1 else 0
        val += g[:n_val]
        train += g[n_val:]
    return train, val


def load_pixels(rows: Sequence[Row], *, progress: bool = False) -> tuple[list[np.ndarray], list[Row]]:
    """Decode rows to uint8 RGB arrays (kept in RAM); skip and log undecodable items."""
    from .images import load_image

    it: Iterable[Row] = rows
    if progress:
        from tqdm import tqdm

        it = tqdm(rows, desc="decode", unit="img", leave=False)
    images: list[np.ndarray] = []
    kept: list[Row] = []
    for r in it:
        try:
            images.append(load_image(r.path).pixels)
            kept.append(r)
        except InputError as exc:
            log.warning("skipping %s: %s", r.path, exc)
    return images, kept

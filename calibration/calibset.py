"""Versioned calibration sets: which images post-training quantization is calibrated on (torch-free).

A calibration set is a small JSON file of image paths *relative to a data root* with their sha256,
label and source, never the images themselves::

    {"format": 1, "name": "aigi-train-128", "version": 1, "data_root": "aigi",
     "drawn_from": {"manifest": "aigi/manifest.csv", "manifest_sha256": "...", "seed": 0, ...},
     "items": [{"path": "faces_stylegan2/real/real_1_b8ae644d.jpg", "sha256": "...",
                "label": "real", "source": "faces_stylegan2"}, ...]}

Its :attr:`CalibrationSet.digest` hashes the items (paths, hashes, labels) and is part of every key
derived from it (calibration tensors, quantized graphs, TensorRT calibration caches), so changing
one image changes every artifact calibrated on it. ``load_images`` re-hashes each file: a missing
or changed image is reported for that item and the rest load.

Draw sets from images the evaluated models never validate on: :func:`draw_calibration_set` takes an
``exclude`` set of paths (e.g. the patch detector's held-out split, see :func:`patch_eval_paths`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError, SemgirError
from ..hashing import sha256_file

log = logging.getLogger(__name__)

FORMAT = 1
#: the committed calibration sets (``calibration/sets/*.json``)
SETS_DIR = Path(__file__).resolve().parent / "sets"
#: where relative data roots are resolved when no ``data_dir`` is given
DEFAULT_DATA_DIRS = ("../shared/data", "/work/shared/data")


class CalibrationSetError(SemgirError):
    """A calibration set file is missing or malformed, or too few of its images could be loaded."""


@dataclass(frozen=True)
class CalibItem:
    path: str  # relative to the set's data root
    sha256: str
    label: str  # "real" | "ai"
    source: str = ""


@dataclass(frozen=True)
class CalibrationSet:
    name: str
    version: int
    data_root: str  # relative to the data directory (e.g. "aigi"), or absolute
    items: tuple[CalibItem, ...]
    drawn_from: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def digest(self) -> str:
        """sha256 (16 hex) of name, version and every item: part of every derived artifact's key."""
        blob = json.dumps({"name": self.name, "version": self.version,
                           "items": [asdict(i) for i in self.items]}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}:{self.digest}"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for it in self.items:
            out[it.label] = out.get(it.label, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"format": FORMAT, "name": self.name, "version": self.version, "data_root": self.data_root,
                "digest": self.digest, "drawn_from": self.drawn_from, "items": [asdict(i) for i in self.items]}

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, p)
        return p

    def root(self, data_dir: str | os.PathLike | None = None) -> Path:
        """The folder the item paths are relative to."""
        if os.path.isabs(self.data_root):
            return Path(self.data_root)
        bases = [Path(data_dir)] if data_dir else [Path(os.environ["SEMGIR_DATA_DIR"])] if \
            os.environ.get("SEMGIR_DATA_DIR") else [Path(d) for d in DEFAULT_DATA_DIRS]
        for b in bases:
            if (b / self.data_root).is_dir():
                return b / self.data_root
        raise CalibrationSetError(f"calibration set {self.name}: data root {self.data_root!r} not found under "
                                  f"{', '.join(str(b) for b in bases)} (pass data_dir / --data-dir or set SEMGIR_DATA_DIR)")

    def load_images(self, data_dir: str | os.PathLike | None = None, min_fraction: float = 0.9,
                    verify: bool = True) -> tuple[list[np.ndarray], list[CalibItem], list[tuple[CalibItem, str]]]:
        """(decoded RGB images, their items, [(item, error)] for those that failed). A file that is
        missing, changed (sha256) or undecodable is reported and skipped; fewer than
        ``min_fraction`` of the items loading raises :class:`CalibrationSetError`."""
        from ..images import load_image

        root = self.root(data_dir)
        images, ok, failed = [], [], []
        for it in self.items:
            p = root / it.path
            try:
                if verify and sha256_file(p) != it.sha256:
                    raise InputError("sha256 differs from the calibration set (file changed)")
                images.append(load_image(str(p)).pixels)
                ok.append(it)
            except (OSError, InputError) as exc:
                failed.append((it, str(exc)))
                log.warning("calibration set %s: %s: %s", self.name, it.path, exc)
        if len(ok) < min_fraction * len(self.items):
            raise CalibrationSetError(f"calibration set {self.name}: only {len(ok)}/{len(self.items)} images "
                                      f"loaded (first error: {failed[0][1] if failed else '-'})")
        return images, ok, failed


def load_calibration_set(path_or_name: str | os.PathLike) -> CalibrationSet:
    """A calibration set from a JSON file, or by name from the committed sets (``aigi-train-128``)."""
    p = Path(path_or_name)
    if not p.is_file():
        named = SETS_DIR / f"{path_or_name}.json"
        if not named.is_file():
            have = sorted(q.stem for q in SETS_DIR.glob("*.json")) if SETS_DIR.is_dir() else []
            raise CalibrationSetError(f"no calibration set {str(path_or_name)!r} (a JSON file, or one of: "
                                      f"{', '.join(have) or 'none committed'})")
        p = named
    try:
        d = json.loads(p.read_text())
        if d.get("format") != FORMAT:
            raise CalibrationSetError(f"{p}: unknown calibration set format {d.get('format')!r}")
        items = tuple(CalibItem(**i) for i in d["items"])
        cs = CalibrationSet(d["name"], int(d["version"]), d["data_root"], items, d.get("drawn_from", {}))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CalibrationSetError(f"{p} is not a calibration set: {exc}") from exc
    if d.get("digest") not in (None, cs.digest):
        raise CalibrationSetError(f"{p}: recorded digest {d['digest']} does not match its items ({cs.digest}); "
                                  "the file was edited by hand")
    return cs


def draw_calibration_set(manifest_path: str | os.PathLike, name: str, *, n_real: int = 64, n_ai: int = 64,
                         seed: int = 0, version: int = 1, exclude: Iterable[str | os.PathLike] = (),
                         data_dir: str | os.PathLike | None = None) -> CalibrationSet:
    """Draw ``n_real`` + ``n_ai`` images from a data manifest, spread evenly over its sources
    (seeded), skipping ``exclude`` (absolute paths) and files listed twice. Paths are stored relative
    to ``data_dir`` when the manifest lies under it (portable between machines), else absolute."""
    from ..datasets import read_manifest

    m = read_manifest(manifest_path)
    excluded = {os.path.realpath(p) for p in exclude}
    seen: set[str] = set()
    pools: dict[tuple[int, str], list] = {}
    for r in m.rows:
        rp = os.path.realpath(r.path)
        if rp in excluded or rp in seen:
            continue
        seen.add(rp)
        pools.setdefault((r.label, r.source), []).append(r)
    rng = random.Random(seed)
    chosen = []
    for label, want in ((0, n_real), (1, n_ai)):
        keys = sorted(k for k in pools if k[0] == label)
        if want and not keys:
            raise CalibrationSetError(f"{manifest_path}: no {'ai' if label else 'real'} images to draw from")
        for k in keys:
            rng.shuffle(pools[k])
        picked, i = [], 0
        while len(picked) < want and any(pools[k] for k in keys):  # round robin over the sources
            k = keys[i % len(keys)]
            if pools[k]:
                picked.append(pools[k].pop())
            i += 1
        if len(picked) < want:
            raise CalibrationSetError(f"{manifest_path}: only {len(picked)} {'ai' if label else 'real'} images "
                                      f"available, {want} asked")
        chosen += picked
    base = Path(data_dir).resolve() if data_dir else m.path.parent.parent.resolve()
    mdir = m.path.parent.resolve()
    try:
        data_root = str(mdir.relative_to(base))
    except ValueError:
        data_root = str(mdir)
    items = tuple(CalibItem(str(Path(r.path).resolve().relative_to(mdir)), sha256_file(r.path), r.label_name, r.source)
                  for r in sorted(chosen, key=lambda r: str(r.path)))
    drawn = {"manifest": str(Path(data_root) / m.path.name), "manifest_sha256": m.sha256, "seed": seed,
             "n_real": n_real, "n_ai": n_ai, "excluded": len(excluded)}
    return CalibrationSet(name, version, data_root, items, drawn)


def patch_eval_paths(manifest_path: str | os.PathLike, patch_models: Iterable[str] | None = None) -> list[str]:
    """Paths the patch detectors are evaluated on (per model: the rows its weights never trained on,
    see :func:`~semgir_engine.patch.evaluate.heldout_rows`), over ``patch_models`` (default: every
    shipped model): what a calibration set must not contain, so that accuracy after quantization is
    measured on images the calibration never saw."""
    from ..datasets import read_manifest
    from ..patch.detector import read_model_manifest, resolve_manifest, shipped_models
    from ..patch.evaluate import heldout_rows

    m = read_manifest(manifest_path)
    out: dict[str, None] = {}
    for name in (shipped_models() if patch_models is None else patch_models):
        meta = read_model_manifest(resolve_manifest(name))
        out.update(dict.fromkeys(str(r.path) for r in heldout_rows(m, meta)[0]))
    return list(out)


def split_items(items: Sequence, fraction: float = 0.25, seed: int = 0) -> tuple[list, list]:
    """(calibration part, validation part): a seeded split of a set's items, so that quantized graphs
    are checked on inputs they were not calibrated on."""
    idx = list(range(len(items)))
    random.Random(seed).shuffle(idx)
    n_val = max(1, int(round(fraction * len(items)))) if len(items) > 1 else 0
    val = set(idx[:n_val])
    return [items[i] for i in range(len(items)) if i not in val], [items[i] for i in sorted(val)]

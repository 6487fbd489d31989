"""The report's rows: results read back, joined to labels, with thumbnails (Pillow only)."""

from __future__ import annotations

import base64
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import InputError
from ..images import load_image
from ..results import Result, iter_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Labels:
    """Ground truth by absolute path and, where the manifest has one, by file sha256."""

    by_path: dict[str, tuple[int, str]]
    by_sha: dict[str, tuple[int, str]]
    manifest: str

    def get(self, r: Result) -> tuple[int, str] | None:
        hit = self.by_path.get(os.path.realpath(r.path))
        if hit is None and r.sha256:
            hit = self.by_sha.get(r.sha256)
        return hit


def read_labels(manifests: str | os.PathLike | list) -> Labels:
    """Labels of one manifest or several (later ones win on a path they share)."""
    from ..datasets import read_manifest

    paths = manifests if isinstance(manifests, (list, tuple)) else [manifests]
    by_path, by_sha, names = {}, {}, []
    for m in paths:
        man = read_manifest(m)
        names.append(str(man.path))
        for row in man.rows:
            by_path[os.path.realpath(row.path)] = (row.label, row.source)
            sha = row.extra.get("sha256")
            if sha:
                by_sha[sha] = (row.label, row.source)
    return Labels(by_path, by_sha, ", ".join(names))


def thumbnail_uri(path: str | os.PathLike, size: int) -> str | None:
    """A small JPEG thumbnail as a ``data:`` URI (decoded like scoring does: EXIF rotation, CMYK, alpha)."""
    try:
        im = Image.fromarray(load_image(path).pixels)
    except (InputError, OSError) as exc:
        log.debug("no thumbnail for %s: %s", path, exc)
        return None
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def file_uri(path: str | os.PathLike) -> str:
    return Path(os.path.abspath(path)).as_uri()


def load_results(path: str | os.PathLike) -> list[Result]:
    """Every row of a results file; a path scored twice (resume after a crash) keeps its last row."""
    rows: dict[str, Result] = {}
    for r in iter_rows(path):
        rows[r.path] = r
    return list(rows.values())


def verdict(r: Result) -> str:
    if not r.ok:
        return "error"
    return r.label or "no verdict"


def report_rows(results: list[Result], labels: Labels | None, *, thumb_px: int, embed_limit: int,
                base: Path) -> list[dict]:
    """The JSON rows the page renders. Images are embedded as thumbnails for the first ``embed_limit``
    rows and linked (``file:`` URIs) beyond, so a 10,000-row page stays small."""
    out = []
    for k, r in enumerate(results):
        cand = Path(r.path) if os.path.isabs(r.path) else base / r.path
        regen = None
        if r.regeneration:
            regen = Path(r.regeneration) if os.path.isabs(r.regeneration) else base / r.regeneration
        embed = k < embed_limit
        truth = labels.get(r) if labels is not None else None
        row = {
            "i": k, "path": r.path, "name": os.path.basename(r.path), "p_ai": r.p_ai, "verdict": verdict(r),
            "stage": r.stage or r.method, "p_patch": r.p_patch, "p_semgir": r.p_semgir, "caption": r.caption,
            "error": r.error, "note": r.note, "random_weights": r.random_weights, "model": r.model_version,
            "size": f"{r.width}x{r.height}" if r.width else None,
            "ms": round(sum(r.timings_ms.values()), 1) if r.timings_ms else None,
            "img": (thumbnail_uri(cand, thumb_px) if embed else file_uri(cand)) if cand.is_file() else None,
            "regen": ((thumbnail_uri(regen, thumb_px) if embed else file_uri(regen))
                      if regen is not None and regen.is_file() else None),
            "truth": None if truth is None else ("ai" if truth[0] == 1 else "real"),
            "source": None if truth is None else truth[1],
        }
        out.append(row)
    return out

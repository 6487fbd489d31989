"""Keep SemGIR's regenerated images (`score --save-regenerations DIR`), so a report can show them (torch-free).

One PNG per scored image, named by the candidate's content hash and the noise seed (the
regeneration depends on both), written atomically; the row's ``regeneration`` field holds its path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def regeneration_name(sha256: str | None, pixels: np.ndarray, seed: int) -> str:
    key = sha256 or hashlib.sha256(repr(pixels.shape).encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()
    return f"{key[:24]}-seed{int(seed)}.png"


def save_regenerations(folder: str | os.PathLike, sha256s: Sequence[str | None], images: Sequence[np.ndarray],
                       seed: int) -> list[str]:
    """Write each regenerated image (uint8 RGB) under ``folder``; return their absolute paths."""
    root = Path(folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for sha, im in zip(sha256s, images):
        a = np.asarray(im, np.uint8)
        path = root / regeneration_name(sha, a, seed)
        tmp = path.with_name(path.name + ".tmp")
        Image.fromarray(a).save(tmp, format="PNG")
        os.replace(tmp, path)
        out.append(str(path))
    return out

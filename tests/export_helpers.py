"""Shared by the export and ONNX Runtime tests: one tiny export per test session (module-level cache,
so that two test modules reuse it), and small images."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from conftest import make_image


@lru_cache(maxsize=None)
def tiny_export_dir() -> tuple[Path, tuple]:
    """Every registered component exported (fp32, validated) at tiny size, once per session."""
    from semgir_engine.export.onnx_export import export_components
    from semgir_engine.semgir.sources import ModelSource

    d = Path(tempfile.mkdtemp(prefix="semgir-tiny-export-"))
    atexit.register(shutil.rmtree, d, True)
    records = export_components("all", ModelSource.parse("tiny"), d / "export")
    return d / "export", tuple(records)


def images(n: int) -> list[np.ndarray]:
    return [np.asarray(make_image(i, size=(40 + 6 * i, 36 + 4 * i))) for i in range(n)]

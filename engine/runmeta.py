"""Run metadata beside a results file (`RESULTS.meta.json`): configuration, versions, timings (torch-free).

`score --out FILE` writes it; `report` reads it for its "run" section. Only libraries already
imported by the run are listed, so writing it never loads torch.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .batch import RunSummary
    from .scorer import ScorerConfig

LIBRARIES = ("numpy", "PIL", "torch", "onnxruntime", "diffusers", "transformers", "open_clip", "tensorrt")


def meta_path(results: str | os.PathLike) -> Path:
    p = Path(results)
    return p.with_name(p.name + ".meta.json")


def run_meta(config: "ScorerConfig", summary: "RunSummary") -> dict:
    from . import __version__

    libs = {}
    for name in LIBRARIES:
        mod = sys.modules.get(name)
        if mod is not None:
            libs[name] = str(getattr(mod, "__version__", "?"))
    return {"created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "engine_version": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "command": " ".join(sys.argv), "cwd": os.getcwd(), "config": asdict(config), "libraries": libs, "summary": asdict(summary)}


def write_run_meta(results: str | os.PathLike, config: "ScorerConfig", summary: "RunSummary") -> Path:
    """Write ``RESULTS.meta.json`` atomically (one per results file; a resumed run replaces it)."""
    path = meta_path(results)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(run_meta(config, summary), indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_run_meta(results: str | os.PathLike) -> dict | None:
    path = meta_path(results)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None

"""`import semgir_engine` and the runtime modules stay free of torch and the model libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "open_clip", "tensorrt")


def test_runtime_imports_without_heavy_libraries():
    code = (
        "import sys, semgir_engine, semgir_engine.scorer, semgir_engine.results, semgir_engine.batch, "
        "semgir_engine.registry, semgir_engine.spec, semgir_engine.images, semgir_engine.preprocess, "
        "semgir_engine.semgir.pipeline, semgir_engine.cli, semgir_engine.runtime.ort_patch, "
        "semgir_engine.runtime.ort_semgir, semgir_engine.cascade, semgir_engine.calibration.cascade, "
        "semgir_engine.report, semgir_engine.regenstore, semgir_engine.runmeta\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

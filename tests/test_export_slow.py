"""Opt-in (``--run-slow``): export the full-size random-weight components and validate them.

Minutes of CPU and, for the UNet, ~13 GB of memory; not for CI. Results (max difference, cosine,
export time, file size) are appended as JSON lines to ``$SEMGIR_SLOW_REPORT`` when it is set.
"""

from __future__ import annotations

import json
import os

import pytest

from semgir_engine import registry

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundles():
    from semgir_engine.export.onnx_export import Bundles
    from semgir_engine.semgir.sources import ModelSource

    return Bundles(ModelSource.parse("random"))


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.names())
def test_full_size_random_export_validates(name, bundles, tmp_path):
    from semgir_engine.export.onnx_export import export_component

    rec = export_component(name, bundles.src, tmp_path, bundles=bundles)
    spec = registry.get(name, "full")
    assert rec.validation["max_abs_diff"] <= spec.tolerance.fp32_atol
    assert rec.validation["min_cosine"] > 0.9999
    report = os.environ.get("SEMGIR_SLOW_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps({"component": name, "precision": rec.precision, "size_bytes": rec.size_bytes,
                                "seconds": rec.export_seconds, **{k: rec.validation[k] for k in
                                                                   ("max_abs_diff", "min_cosine")},
                                "points": rec.validation["points"]}) + "\n")

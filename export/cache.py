"""Validated ONNX graphs in the content-keyed artifact cache (:mod:`semgir_engine.runtime.cache`).

>>> art = cached_onnx("semgir_head", ModelSource.parse("tiny"))   # doctest: +SKIP
>>> art.path()   # .../artifacts/ab/ab12.../semgir_head.fp32.onnx

The key covers the weights (hash or revision), the spec digest, precision, opset, the shape
profile and the exporter/runtime versions; a changed input gives a new key, a tampered file is
detected on load and rebuilt.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import registry
from ..runtime.cache import Artifact, ArtifactCache
from ..spec import ModelSize, Precision


def onnx_key_parts(name: str, src, precision: Precision = Precision.FP32, opset: int = 18) -> dict:
    from .onnx_export import versions, weights_fingerprint

    spec = registry.get(name, "tiny" if src.size is ModelSize.TINY else "full")
    v = versions()
    return {
        "kind": "onnx",
        "component": name,
        "weights": weights_fingerprint(src)["fingerprint"],
        "spec_digest": spec.digest(),
        "precision": Precision(precision).value,
        "opset": opset,
        "profile": {k: list(p) for k, p in spec.profile.items()},
        "runtime": {"torch": v.get("torch"), "onnx": v.get("onnx"), "onnxruntime": v.get("onnxruntime")},
    }


def cached_onnx(name: str, src, precision: Precision = Precision.FP32, opset: int = 18,
                cache_dir: str | os.PathLike | None = None, bundles=None) -> Artifact:
    """The validated ONNX graph of ``name`` from the cache, exported (and validated) on a miss."""
    from .onnx_export import export_component, read_manifest

    parts = onnx_key_parts(name, src, precision, opset)

    def build(tmp: Path) -> dict:
        rec = export_component(name, src, tmp, Precision(precision), opset, force=True, bundles=bundles)
        entry = read_manifest(tmp)["components"][name][Precision(precision).value]
        (tmp / "manifest.json").unlink()  # the artifact record replaces it
        return {"validation": rec.validation, "export_seconds": rec.export_seconds, "file": entry["file"]}

    return ArtifactCache(cache_dir).get_or_build(parts, build)

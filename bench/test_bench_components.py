"""Component latency, torch eager vs ONNX Runtime, at batch 1 and 8 (pytest-benchmark).

    .venv/bin/python -m pytest bench/ --benchmark-only                 # tiny components
    .venv/bin/python -m pytest bench/ --benchmark-only --bench-size random   # full size (minutes)
"""

from __future__ import annotations

import pytest

from semgir_engine import registry

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

COMPONENTS = ["clip_image", "clip_text", "sd_text_encoder", "blip_vision", "vae_decoder", "unet", "semgir_head",
              "patch_cnn"]


def _inputs(name, size, batch):
    from semgir_engine.bench.components import _inputs as make, _overrides

    spec = registry.get(name, "tiny" if size == "tiny" else "full")
    res = None if size == "tiny" else 256
    return spec, make(name, spec, _overrides(name, spec, batch, res, "tiny" if size == "tiny" else "full"),
                      150 if size == "tiny" else 30000)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name", COMPONENTS)
def test_torch(benchmark, bundles, bench_size, name, batch):
    from semgir_engine.semgir.components import run_torch

    spec, x = _inputs(name, bench_size, batch)
    module = bundles.module(name)
    with torch.inference_mode():
        benchmark.pedantic(run_torch, args=(module, x, spec), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name", COMPONENTS)
def test_onnxruntime(benchmark, bundles, bench_size, export_dir, name, batch):
    pytest.importorskip("onnxruntime")
    from semgir_engine.bench.components import ensure_exported
    from semgir_engine.runtime.ort import OrtRunner
    from semgir_engine.spec import Precision

    spec, x = _inputs(name, bench_size, batch)
    runner = OrtRunner(ensure_exported(name, bundles.src, export_dir, Precision.FP32, bundles), device="cpu")
    benchmark.pedantic(lambda: runner(**x), rounds=3, warmup_rounds=1)

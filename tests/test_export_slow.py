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


#: Documented exception: the random full-size BLIP text decoder (initializer_range 0.1, see configs)
#: is ill-conditioned: torch fp32 itself differs from torch fp64 by ~1.4 in the logits (cosine 0.993).
#: Its ONNX graph is held to the same standard instead: |onnx - fp64| within 3x |torch fp32 - fp64|.
ILL_CONDITIONED = ("blip_text_decoder", "blip_text_decoder_init", "blip_text_decoder_with_past")


def _conditioning_check(name, module, path):
    import copy

    import numpy as np
    import torch

    from semgir_engine.export.validate import sample_inputs
    from semgir_engine.runtime.ort import OrtRunner
    from semgir_engine.semgir.components import run_torch

    spec = registry.get(name, "full")
    inputs = sample_inputs(spec, "min")
    ref32 = run_torch(module, inputs, spec)
    m64 = copy.deepcopy(module).double()
    in64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in inputs.items()}
    with torch.no_grad():
        out = m64(*[torch.from_numpy(in64[n]) for n in spec.input_names()])
    out = out if isinstance(out, tuple) else (out,)
    ref64 = {n: o.numpy() for n, o in zip(spec.output_names(), out)}
    got = OrtRunner(path, device="cpu")(**inputs)
    worst = {}
    for n in spec.output_names():
        torch_err = float(np.abs(ref32[n] - ref64[n]).max())
        onnx_err = float(np.abs(got[n] - ref64[n]).max())
        assert onnx_err <= 3 * torch_err + spec.tolerance.fp32_atol, (n, onnx_err, torch_err)
        worst[n] = {"onnx_vs_fp64": onnx_err, "torch32_vs_fp64": torch_err}
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.names())
def test_full_size_random_export_validates(name, bundles, tmp_path):
    from semgir_engine.export.onnx_export import export_component

    spec = registry.get(name, "full")
    if name in ILL_CONDITIONED:
        rec = export_component(name, bundles.src, tmp_path, bundles=bundles, check=False)
        rec.validation.update(max_abs_diff=float("nan"), min_cosine=float("nan"), points=[],
                              conditioning=_conditioning_check(name, bundles.module(name), rec.path))
    else:
        rec = export_component(name, bundles.src, tmp_path, bundles=bundles)
        assert rec.validation["max_abs_diff"] <= spec.tolerance.fp32_atol
        assert rec.validation["min_cosine"] > 0.9999
    report = os.environ.get("SEMGIR_SLOW_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps({"component": name, "precision": rec.precision, "size_bytes": rec.size_bytes,
                                "seconds": rec.export_seconds, **{k: rec.validation[k] for k in
                                                                   ("max_abs_diff", "min_cosine")},
                                "points": rec.validation["points"],
                                "conditioning": rec.validation.get("conditioning")}) + "\n")

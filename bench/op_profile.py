"""Where the time goes, per operator, in ONNX Runtime and in torch eager, for one component.

Explains a component's speed-up: when both runtimes spend most of their time in the same
matrix-multiply or convolution kernels, removing everything else bounds what one can gain over
the other. Usage (the graph comes from a `semgir-engine bench`/`export` directory)::

    python -m semgir_engine.bench.op_profile sd_text_encoder --batch 8 --export-dir /tmp/bench-onnx
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile


#: torch operators that are the dense kernels (matrix products, convolutions, fused attention)
TORCH_DENSE = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
               "aten::_scaled_dot_product_flash_attention_for_cpu")
ORT_DENSE = ("MatMul", "FusedMatMul", "Gemm", "Conv", "FusedConv", "Attention", "MultiHeadAttention")


def _inputs(name: str, batch: int, size: str) -> dict:
    from .components import _inputs as make, _overrides
    from .. import registry

    spec = registry.get(name, size)
    return make(name, spec, _overrides(name, spec, batch, 256 if size == "full" else None, size),
                150 if size == "tiny" else 30000)


def ort_profile(onnx_path: str, x: dict, runs: int = 3, threads: int = 2) -> dict[str, float]:
    """ms per run spent in each ONNX operator type (kernel time)."""
    import onnxruntime as ort

    from ..runtime.ort import feeds_for, session_options

    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    feeds = feeds_for(sess, x)
    for _ in range(runs + 1):  # the first run warms up; profiling covers every run, averaged
        sess.run(None, feeds)
    with open(sess.end_profiling()) as fh:
        events = json.load(fh)
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    return {k: v / 1000.0 / (runs + 1) for k, v in per_op.most_common()}


def torch_profile(module, x: dict, spec, runs: int = 3) -> dict[str, float]:
    """ms per run of self CPU time in each torch operator."""
    import torch

    from ..semgir.components import run_torch

    with torch.inference_mode():
        run_torch(module, x, spec)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                run_torch(module, x, spec)
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    return {e.key: e.self_cpu_time_total / 1000.0 / runs for e in ev}


def summarise(per_op: dict[str, float], dense: tuple[str, ...]) -> dict:
    total = sum(per_op.values())
    d = sum(v for k, v in per_op.items() if k in dense)
    return {"total_ms": total, "dense_ms": d, "dense_share": d / total if total else float("nan"),
            "top": dict(list(per_op.items())[:5])}


def main(argv=None) -> dict:
    import torch

    from .. import registry
    from ..semgir.components import Bundles
    from ..semgir.sources import ModelSource
    from ..spec import Precision
    from .components import ensure_exported

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("component")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", default="random")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export-dir", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    size = "tiny" if a.models == "tiny" else "full"
    src = ModelSource.parse(a.models)
    path = ensure_exported(a.component, src, a.export_dir, Precision.FP32, None, models=a.models)
    x = _inputs(a.component, a.batch, size)
    ort_ops = ort_profile(str(path), x, threads=a.threads)
    spec = registry.get(a.component, size)
    t_ops = torch_profile(Bundles(src).module(a.component), x, spec)
    res = {"component": a.component, "batch": a.batch, "onnxruntime": summarise(ort_ops, ORT_DENSE),
           "torch": summarise(t_ops, TORCH_DENSE)}
    o, t = res["onnxruntime"], res["torch"]
    res["bound"] = t["total_ms"] / o["dense_ms"] if o["dense_ms"] else None
    print(json.dumps(res, indent=2))  # a script's output
    print(f"{a.component} b{a.batch}: torch {t['total_ms']:.0f} ms ({100 * t['dense_share']:.0f}% dense kernels, "
          f"{t['dense_ms']:.0f} ms); onnxruntime {o['total_ms']:.0f} ms ({100 * o['dense_share']:.0f}% dense, "
          f"{o['dense_ms']:.0f} ms); ORT speed-up bound if all else were free: {res['bound']:.2f}x")
    return res


if __name__ == "__main__":
    main()

# OpenVINO CPU per-layer profile (PERF_COUNT), one inference after warm-up, 2 threads, random normal inputs.
# Usage: python ov_profile.py GRAPH.onnx|IR.xml fp32|bf16|int8 BATCH [CxHxW for dynamic inputs | NAME=DxD.. per input, batch excluded]
"""Per-layer-type time of one OpenVINO CPU inference (PERF_COUNT), fp32 vs bf16 (vs int8 IR)."""
import sys, time, collections, json
import numpy as np, openvino as ov
path, prec, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
core = ov.Core()
m = core.read_model(path)
cfg = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[prec], "PERFORMANCE_HINT": "LATENCY",
       "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "2", "PERF_COUNT": "YES"}
feeds = {}
for inp in m.inputs:
    ps = inp.get_partial_shape()
    named = dict(a.split("=", 1) for a in sys.argv[4:] if "=" in a)
    dims = named.get(inp.get_any_name(), sys.argv[4] if len(sys.argv) > 4 and not named else None)
    shape = [batch] + [int(x) for x in dims.split("x") if x] if dims is not None else [batch if i == 0 else d.get_length() for i, d in enumerate(ps)]
    feeds[inp.get_any_name()] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
c = core.compile_model(m, "CPU", cfg)
r = c.create_infer_request()
r.infer(feeds)
t = time.perf_counter(); r.infer(feeds); wall = time.perf_counter() - t
agg = collections.defaultdict(float); ex = collections.defaultdict(float)
for p in r.profiling_info:
    us = p.real_time.total_seconds() * 1e6 if hasattr(p.real_time, "total_seconds") else float(p.real_time) 
    agg[p.node_type] += us; ex[(p.node_type, p.exec_type)] += us
tot = sum(agg.values())
print(f"{path} {prec} b{batch}: wall {wall*1000:.0f} ms, sum of layers {tot/1000:.0f} ms")
for (nt, et), us in sorted(ex.items(), key=lambda x: -x[1])[:12]:
    print(f"  {nt:24s} {et:36s} {us/1000:8.1f} ms {100*us/tot:5.1f}%")

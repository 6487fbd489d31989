# INT8 IR compiled with INFERENCE_PRECISION_HINT f32 vs bf16: time and output cosine (VAE decoder latent 4x32x32).
# Usage: python ov_int8_bf16_hint.py INT8_IR.xml BATCH
import sys, time, numpy as np, openvino as ov
path, batch = sys.argv[1], int(sys.argv[2])
core = ov.Core(); m = core.read_model(path)
shape=[batch,4,32,32]
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
outs={}
for hint in ["f32","bf16"]:
    c = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "2"})
    r = c.create_infer_request(); r.infer([x])
    ts=[]
    for _ in range(3):
        t=time.perf_counter(); res=r.infer([x]); ts.append(time.perf_counter()-t)
    outs[hint]=np.array(list(res.values())[0]).ravel()
    print(hint, "median %.3f s"%np.median(ts), flush=True)
a,b=outs["f32"],outs["bf16"]
print("cos int8f32 vs int8bf16", float(a@b/np.linalg.norm(a)/np.linalg.norm(b)))

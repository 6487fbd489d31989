"""One BLIP decoder step (``blip_text_decoder_with_past``, its accepted INT8 IR) on OpenVINO, batch 8 by default, with
inputs copied into the request (OpenVINO's default, what ``OvRunner`` did before) and shared (what it does
now), same process, interleaved. Usage: python decoder_step.py EXPORT_DIR [rounds] [batch]"""

import json
import sys
import time

import numpy as np

from semgir_engine.runtime.openvino import OvRunner

export, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 8
m = json.load(open(f"{export}/manifest.json"))
runner = OvRunner(f"{export}/{m['components']['blip_text_decoder_with_past']['int8']['openvino']['file']}", "int8")
past_tokens = 10
shape = {i.get_any_name(): i.get_partial_shape() for i in runner.compiled.inputs}
layers, _, _, heads, _, dim = (d.get_length() if d.is_static else None for d in shape["past"])
rng = np.random.default_rng(0)
feeds = {"input_ids": np.ones((batch, 1), np.int64),
         "past": rng.standard_normal((layers, 2, batch, heads, past_tokens, dim), np.float32),
         "cross_past": rng.standard_normal((layers, 2, batch, heads, 577, dim), np.float32)}
print(f"batch {batch}, cross_past {feeds['cross_past'].shape}: {feeds['cross_past'].nbytes / 1e6:.0f} MB")


def copied():
    res = runner.request.infer(feeds)  # OpenVINO's default: inputs copied into the request
    return {p.get_any_name(): np.array(v, copy=True) for p, v in res.items()}


ms = {"copied": [], "shared (OvRunner)": []}
ref = runner(**feeds)
for _ in range(2):  # warm-up at this shape, both ways
    copied(), runner(**feeds)
assert all(np.array_equal(ref[k], v) for k, v in copied().items())  # same outputs either way
for _ in range(rounds):
    for label, fn in (("copied", copied), ("shared (OvRunner)", lambda: runner(**feeds))):
        t = time.perf_counter()
        fn()
        ms[label].append(1000 * (time.perf_counter() - t))
for label, v in ms.items():
    print(f"{label}: median {np.median(v):.1f} ms, best {min(v):.1f} ms per step ({rounds} rounds)")

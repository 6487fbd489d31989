"""Images per second of a patch-shuffle model on this CPU, at batch 1 and batch 32.

Measures the runtime path end to end from decoded uint8 images (preprocessing included) and the
network alone, median of timed repeats after warm-up. Usage::

    python -m semgir_engine.bench.patch_throughput [--model PATH|--preset NAME] [--threads 2] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np


def measure(detector, batch_sizes=(1, 32), *, n_images: int = 64, repeats: int = 5, seed: int = 0,
            image_size: tuple[int, int] = (384, 384)) -> dict:
    """{batch: {"end_to_end_img_s", "network_img_s"}} for a loaded :class:`PatchDetector`."""
    import torch

    from semgir_engine.patch.preprocess import prepare_batch

    rng = np.random.default_rng(seed)
    imgs = [rng.integers(0, 256, (*image_size, 3), dtype=np.uint8) for _ in range(n_images)]
    out = {}
    for b in batch_sizes:
        n = max(b, min(n_images, 4 * b))
        detector.predict(imgs[:b], batch_size=b)  # warm-up
        e2e, net = [], []
        x = torch.from_numpy(prepare_batch(imgs[:b], detector.preprocess))
        for _ in range(repeats):
            t = time.perf_counter()
            detector.predict(imgs[:n], batch_size=b)
            e2e.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            with torch.inference_mode():
                detector.model.predict_logits(x)
            net.append(b / (time.perf_counter() - t))
        out[b] = {"end_to_end_img_s": statistics.median(e2e), "network_img_s": statistics.median(net)}
    return out


def main(argv=None) -> dict:
    import torch

    from semgir_engine.patch.detector import PatchDetector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model.json or run folder (default: shipped model)")
    ap.add_argument("--preset", default=None, help="time an untrained preset instead (tiny, small, ...)")
    ap.add_argument("--fused-spec", default=None,
                    help="time an untrained fused detector with this feature spec instead (e.g. global:s4-head)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="append the result as JSON to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.fused_spec:
        from semgir_engine.patch.detector import PatchDetector as D
        from semgir_engine.patch.fused import FusedConfig, build_fused

        fc = FusedConfig(feature_spec=a.fused_spec)
        det = D(build_fused(fc), {"version": f"untrained-fused-{a.fused_spec}", "threshold": 0.5, "temperature": 1.0,
                                  "preprocessing": fc.preprocess.to_dict(), "config": fc.to_dict()})
    elif a.preset:
        from semgir_engine.patch.detector import PatchDetector as D
        from semgir_engine.patch.model import build_model, get_config

        cfg = get_config(a.preset)
        det = D(build_model(cfg), {"version": f"untrained-{a.preset}", "preprocessing": cfg.preprocess.to_dict(),
                                   "threshold": 0.5, "temperature": 1.0, "config": cfg.to_dict()})
    else:
        det = PatchDetector.load(a.model)
    res = {
        "model": det.version,
        "macs_per_image": det.model.cfg.macs_per_image() if hasattr(det.model.cfg, "macs_per_image") else None,
        "threads": a.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "input": "384x384 uint8 RGB (centre crop 256)",
        "results": measure(det, repeats=a.repeats),
    }
    text = json.dumps(res, indent=2)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(json.dumps(res) + "\n")
    print(text)  # a script's output, not library code
    return res


if __name__ == "__main__":
    main()

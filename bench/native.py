"""Patch detector throughput: the native runtime (libsemgir, C++) vs the Python ONNX Runtime backend.

Same export, same images, same run, same ORT thread count. Two levels:

* library: ``libsemgir``'s batch call (through ctypes, in this process) vs
  ``Scorer(method="patch", backend="onnxruntime")`` -- decode + preprocess + ORT + calibration;
* command line: ``semgir-score`` vs ``semgir-engine score --backend onnxruntime`` as processes
  (start-up included), writing jsonl.

    python -m semgir_engine.bench.native --export-dir E --images DIR [--n 200] [--batch-size 32] \\
        [--threads 2] [--repeats 3] --out bench/results/native
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "native"
EXTS = {".jpg", ".jpeg", ".png", ".webp"}


class _Result(ctypes.Structure):  # include/semgir.h: semgir_result
    _fields_ = [("status", ctypes.c_int), ("p_ai", ctypes.c_double), ("label", ctypes.c_int),
                ("width", ctypes.c_int32), ("height", ctypes.c_int32), ("sha256", ctypes.c_char * 65),
                ("error", ctypes.c_char * 512), ("note", ctypes.c_char * 256), ("decode_ms", ctypes.c_double),
                ("model_ms", ctypes.c_double)]


class _Options(ctypes.Structure):  # include/semgir.h: semgir_options
    _fields_ = [("struct_size", ctypes.c_uint32), ("method", ctypes.c_int), ("runtime", ctypes.c_int),
                ("precision", ctypes.c_char_p), ("intra_threads", ctypes.c_int32), ("verify_hashes", ctypes.c_int32),
                ("max_pixels", ctypes.c_int64), ("max_bytes", ctypes.c_int64)]


class NativeScorer:
    """libsemgir through ctypes: open, batch-score files, close."""

    def __init__(self, export_dir: Path, threads: int, runtime: int = 0, lib: Path = BUILD / "libsemgir.so"):
        self.lib = ctypes.CDLL(str(lib))
        self.lib.semgir_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Options), ctypes.POINTER(ctypes.c_void_p)]
        self.lib.semgir_score_files.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t,
                                                ctypes.POINTER(_Result)]
        self.lib.semgir_close.argtypes = [ctypes.c_void_p]
        self.lib.semgir_last_error.restype = ctypes.c_char_p
        self.lib.semgir_runtimes.restype = ctypes.c_char_p
        self.runtimes = self.lib.semgir_runtimes().decode()
        opt = _Options()
        self.lib.semgir_options_init(ctypes.byref(opt))
        opt.intra_threads = threads
        opt.runtime = runtime  # 0 onnxruntime, 1 openvino
        self.h = ctypes.c_void_p()
        if self.lib.semgir_open(str(export_dir).encode(), ctypes.byref(opt), ctypes.byref(self.h)) != 0:
            raise RuntimeError(self.lib.semgir_last_error().decode())

    def score(self, paths: list[str], batch_size: int) -> list[float | None]:
        out: list[float | None] = []
        for i in range(0, len(paths), batch_size):
            chunk = [p.encode() for p in paths[i : i + batch_size]]
            arr = (ctypes.c_char_p * len(chunk))(*chunk)
            res = (_Result * len(chunk))()
            self.lib.semgir_score_files(self.h, arr, len(chunk), res)
            out += [r.p_ai if r.status == 0 else None for r in res]
        return out

    def close(self) -> None:
        self.lib.semgir_close(self.h)


def _images(root: Path, n: int) -> list[str]:
    files = sorted(str(f) for f in root.rglob("*") if f.suffix.lower() in EXTS)
    if not files:
        raise click.UsageError(f"no images under {root}")
    step = max(len(files) / n, 1)
    return [files[int(i * step) % len(files)] for i in range(n)]


def _interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median seconds and last output of each contender, run round-robin (one warm-up round first)
    so that a change in machine load falls on all of them alike."""
    times: dict = {k: [] for k in fns}
    outs: dict = {}
    for r in range(repeats + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            if r:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs


@click.command()
@click.option("--export-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--n", type=click.IntRange(1), default=200, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="ORT intra-op threads, both sides.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(export_dir, images, n, batch_size, threads, repeats, out):
    from semgir_engine.scorer import Scorer, ScorerConfig

    os.environ["SEMGIR_ORT_THREADS"] = str(threads)
    paths = _images(images, n)
    load_before = os.getloadavg()[0]
    rows = []

    native = NativeScorer(export_dir, threads)
    fns = {"native": lambda: native.score(paths, batch_size)}
    ov = NativeScorer(export_dir, threads, runtime=1) if "openvino" in native.runtimes else None
    if ov is not None:
        fns["openvino"] = lambda: ov.score(paths, batch_size)
    cfg = ScorerConfig(method="patch", backend="onnxruntime", export_dir=str(export_dir), batch_size=batch_size)
    scorer = Scorer(cfg)
    fns["python"] = lambda: [r.p_ai for r in scorer.score(paths)]
    t, p = _interleaved(fns, repeats)
    scorer.close()
    native.close()
    if ov is not None:
        ov.close()

    def diff(a, b):
        pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
        return max(abs(x - y) for x, y in pairs), len(pairs)

    max_diff, n_both = diff(p["native"], p["python"])
    rows.append({"level": "library (in-process, decode included)", "python_ort_img_s": n / t["python"],
                 "native_img_s": n / t["native"], "speedup": t["python"] / t["native"]})
    ov_diff = None
    if ov is not None:
        ov_diff, _ = diff(p["openvino"], p["python"])
        rows.append({"level": "library, native on OpenVINO (fp32)", "python_ort_img_s": n / t["python"],
                     "native_img_s": n / t["openvino"], "speedup": t["python"] / t["openvino"]})

    env = dict(os.environ, SEMGIR_ORT_THREADS=str(threads))
    cli_py = [str(Path(sys.executable).with_name("semgir-engine")), "-q", "score", *paths, "--backend", "onnxruntime",
              "--export-dir", str(export_dir), "--method", "patch", "--batch-size", str(batch_size), "--no-progress",
              "--out", str(out / ".py.jsonl"), "--overwrite"]
    cli_nat = [str(BUILD / "semgir-score"), "--export-dir", str(export_dir), "--batch-size", str(batch_size), *paths]
    out.mkdir(parents=True, exist_ok=True)
    tc, _ = _interleaved({"python": lambda: subprocess.run(cli_py, env=env, capture_output=True, check=False),
                          "native": lambda: subprocess.run(cli_nat, env=env, capture_output=True, check=False)}, repeats)
    t_cli_py, t_cli_nat = tc["python"], tc["native"]
    (out / ".py.jsonl").unlink(missing_ok=True)
    rows.append({"level": "command line (process start-up included)", "python_ort_img_s": n / t_cli_py,
                 "native_img_s": n / t_cli_nat, "speedup": t_cli_py / t_cli_nat})

    import onnxruntime

    meta = {"images": n, "source": str(images), "batch_size": batch_size, "ort_threads": threads, "repeats": repeats,
            "max_abs_p_ai_diff": max_diff, "max_abs_p_ai_diff_openvino": ov_diff,
            "scored_by_both": n_both, "onnxruntime": onnxruntime.__version__, "native_runtimes": native.runtimes,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "command": "python -m semgir_engine.bench.native " + " ".join(sys.argv[1:])}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Patch detector: native (libsemgir) vs Python ONNX Runtime backend", "",
             f"{n} images from `{images}`, batch {batch_size}, {threads} ORT threads on both sides, median of "
             f"{repeats} rounds after a warm-up round, contenders interleaved in each round, same run. Max |p_ai| "
             f"difference native vs Python {max_diff:.2e} over {n_both} images"
             + (f", OpenVINO vs Python {ov_diff:.2e}." if ov_diff is not None else "."),
             "", "| level | Python ORT img/s | native img/s | speed-up |", "|---|---|---|---|"]
    lines += [f"| {r['level']} | {r['python_ort_img_s']:.1f} | {r['native_img_s']:.1f} | {r['speedup']:.2f}x |"
              for r in rows]
    lines += ["", f"Machine: {meta['cpus']} CPUs, 1-minute load average {meta['load_average_1min'][0]} before and "
              f"{meta['load_average_1min'][1]} after (shared with other jobs: absolute rates are noisy, the "
              "interleaved ratios less so).", "", f"Command: `{meta['command']}`", ""]
    (out / "report.md").write_text("\n".join(lines))
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()

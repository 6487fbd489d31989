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


def _timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up (sessions, page cache)
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


@click.command()
@click.option("--export-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--n", type=click.IntRange(1), default=200, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="ORT intra-op threads, both sides.")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(export_dir, images, n, batch_size, threads, repeats, out):
    from semgir_engine.scorer import Scorer, ScorerConfig

    os.environ["SEMGIR_ORT_THREADS"] = str(threads)
    paths = _images(images, n)
    rows = []

    native = NativeScorer(export_dir, threads)
    t_nat, p_nat = _timed(lambda: native.score(paths, batch_size), repeats)
    native.close()
    t_ov = ov_diff = None
    if "openvino" in native.runtimes:
        ov = NativeScorer(export_dir, threads, runtime=1)
        t_ov, p_ov = _timed(lambda: ov.score(paths, batch_size), repeats)
        ov.close()
    cfg = ScorerConfig(method="patch", backend="onnxruntime", export_dir=str(export_dir), batch_size=batch_size)
    with Scorer(cfg) as scorer:
        t_py, res = _timed(lambda: scorer.score(paths), repeats)
    p_py = [r.p_ai for r in res]
    both = [(a, b) for a, b in zip(p_nat, p_py) if a is not None and b is not None]
    max_diff = max(abs(a - b) for a, b in both) if both else None
    rows.append({"level": "library (in-process, decode included)", "python_ort_img_s": n / t_py,
                 "native_img_s": n / t_nat, "speedup": t_py / t_nat})
    if t_ov is not None:
        rows.append({"level": "library, native on OpenVINO (fp32)", "python_ort_img_s": n / t_py,
                     "native_img_s": n / t_ov, "speedup": t_py / t_ov})
        ov_diff = max(abs(a - b) for a, b in zip(p_ov, p_py) if a is not None and b is not None)
        meta_ov = f" OpenVINO vs Python ORT: max |p_ai| difference {ov_diff:.2e}."

    env = dict(os.environ, SEMGIR_ORT_THREADS=str(threads))
    cli_py = [str(Path(sys.executable).with_name("semgir-engine")), "-q", "score", *paths, "--backend", "onnxruntime",
              "--export-dir", str(export_dir), "--method", "patch", "--batch-size", str(batch_size), "--no-progress",
              "--out", str(out / ".py.jsonl"), "--overwrite"]
    cli_nat = [str(BUILD / "semgir-score"), "--export-dir", str(export_dir), "--batch-size", str(batch_size), *paths]
    out.mkdir(parents=True, exist_ok=True)
    t_cli_py, _ = _timed(lambda: subprocess.run(cli_py, env=env, capture_output=True, check=False), repeats)
    t_cli_nat, _ = _timed(lambda: subprocess.run(cli_nat, env=env, capture_output=True, check=False), repeats)
    (out / ".py.jsonl").unlink(missing_ok=True)
    rows.append({"level": "command line (process start-up included)", "python_ort_img_s": n / t_cli_py,
                 "native_img_s": n / t_cli_nat, "speedup": t_cli_py / t_cli_nat})

    import onnxruntime

    meta = {"images": n, "source": str(images), "batch_size": batch_size, "ort_threads": threads, "repeats": repeats,
            "max_abs_p_ai_diff": max_diff, "max_abs_p_ai_diff_openvino": ov_diff if t_ov is not None else None,
            "scored_by_both": len(both), "onnxruntime": onnxruntime.__version__, "native_runtimes": native.runtimes,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "command": "python -m semgir_engine.bench.native " + " ".join(sys.argv[1:])}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Patch detector: native (libsemgir) vs Python ONNX Runtime backend", "",
             f"{n} images from `{images}`, batch {batch_size}, {threads} ORT threads on both sides, median of "
             f"{repeats} runs after a warm-up, same run. Max |p_ai| difference {max_diff:.2e} over {len(both)} images."
             + (meta_ov if t_ov is not None else ""),
             "", "| level | Python ORT img/s | native img/s | speed-up |", "|---|---|---|---|"]
    lines += [f"| {r['level']} | {r['python_ort_img_s']:.1f} | {r['native_img_s']:.1f} | {r['speedup']:.2f}x |"
              for r in rows]
    lines += ["", f"Command: `{meta['command']}`", ""]
    (out / "report.md").write_text("\n".join(lines))
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()

"""Timing primitives and machine description for the benchmarks (torch-free).

Speed claims are ratios measured in the same run: this machine is shared and noisy, so absolute
times move between runs while ratios between backends hold much better.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    min_ms: float
    repeats: int
    items: int  # items per call (the batch size)
    peak_rss_mb: float | None

    @property
    def items_per_s(self) -> float:
        return 1000.0 * self.items / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["items_per_s"] = self.items_per_s
        return d


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def measure(fn: Callable[[], object], *, items: int = 1, warmup: int = 1, repeats: int = 5,
            max_seconds: float | None = None) -> Timing:
    """Warm up, then time ``repeats`` calls (stopping early after ``max_seconds``, at least 1 call)."""
    for _ in range(warmup):
        fn()
    reset = _reset_peak_rss()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - t0))
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    times.sort()
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return Timing(statistics.median(times), p90, times[0], len(times), items, peak_rss_mb() if reset else None)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """CPU/GPU model and library versions, recorded with every result file."""
    libs = {}
    for d in ("numpy", "torch", "diffusers", "transformers", "open_clip_torch", "onnx", "onnxruntime",
              "onnxruntime-gpu", "tensorrt"):
        try:
            libs[d] = md.version(d)
        except md.PackageNotFoundError:
            pass
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "libraries": libs, "gpu": None}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def machine_kind(info: dict) -> str:
    """A folder name for bench/results/: gpu model or 'cpu-<cores>c'."""
    if info.get("gpu"):
        return "gpu-" + "".join(c if c.isalnum() else "-" for c in info["gpu"].lower()).strip("-")
    return f"cpu-{info.get('cores')}c"

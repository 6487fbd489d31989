"""Load test of `semgir-engine serve` on loopback: many concurrent clients, bounded in count and time.

Starts the service as a subprocess on 127.0.0.1 (tiny SemGIR models by default), waits for
``/readyz``, then sends ``--requests`` requests of one image each, ``--concurrency`` of them in
flight at once, and stops by itself at ``--time-cap`` seconds whatever is left. Reports
throughput, latency percentiles, errors and the batch sizes the service formed (from
``/metrics``). Usage::

    python -m semgir_engine.bench.load_test [--requests 256] [--concurrency 256] [--max-batch-size 16]
        [--max-wait-ms 20] [--time-cap 300] [--out bench/results/serve_load.md]

Only loopback addresses are accepted (``--url`` for a service already running).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np


def _png(seed: int, size=(48, 40)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _batch_stats(metrics: str) -> dict:
    buckets = {float(m.group(1)): float(m.group(2)) for m in
               re.finditer(r'^semgir_batch_size_bucket\{le="([0-9.]+)"\} (\S+)$', metrics, re.M)}
    count = float(re.search(r"^semgir_batch_size_count (\S+)$", metrics, re.M).group(1))
    total = float(re.search(r"^semgir_batch_size_sum (\S+)$", metrics, re.M).group(1))
    return {"batches": int(count), "images": int(total), "mean_batch_size": total / count if count else 0.0,
            "batches_of_1": int(buckets.get(1.0, 0.0)),
            "histogram_le": {str(int(k)): int(v) for k, v in sorted(buckets.items())}}


async def _run_load(url: str, n_requests: int, concurrency: int, time_cap: float, request_timeout: float) -> dict:
    import httpx

    images = [_png(i) for i in range(min(n_requests, 64))]
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout, limits=limits) as client:
        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/score", files=[("images", (f"r{i}.png", images[i % len(images)],
                                                                          "image/png"))])
                    ok = r.status_code == 200 and r.json()["results"][0]["error"] is None
                    key = str(r.status_code) if ok or r.status_code != 200 else "200-row-error"
                except httpx.HTTPError as exc:
                    key, ok = type(exc).__name__, False
                statuses[key] = statuses.get(key, 0) + 1
                if ok:
                    latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(one(i)) for i in range(n_requests)]
        done, pending = await asyncio.wait(tasks, timeout=time_cap)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.perf_counter() - t0
        metrics = (await client.get("/metrics")).text
    n_ok = len(latencies)
    return {
        "requests": n_requests, "concurrency": concurrency, "completed_ok": n_ok,
        "errors": n_requests - n_ok, "unfinished_at_cap": len(pending), "statuses": statuses,
        "wall_s": wall, "throughput_rps": n_ok / wall if wall > 0 else 0.0,
        "latency_s": {"p50": _percentile(latencies, 50), "p90": _percentile(latencies, 90),
                      "p99": _percentile(latencies, 99), "max": max(latencies) if latencies else float("nan"),
                      "mean": statistics.fmean(latencies) if latencies else float("nan")},
        "batching": _batch_stats(metrics),
    }


def _wait_ready(url: str, proc: subprocess.Popen | None, timeout: float) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the service exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}/readyz not ready after {timeout}s")


def _markdown(res: dict, args: argparse.Namespace) -> str:
    lat, b = res["latency_s"], res["batching"]
    return "\n".join([
        "# HTTP service load test (loopback)",
        "",
        f"`python -m semgir_engine.bench.load_test --requests {args.requests} --concurrency {args.concurrency} "
        f"--max-batch-size {args.max_batch_size} --max-wait-ms {args.max_wait_ms} --threads {args.threads}`",
        "",
        f"- models: `--method {args.method} --models {args.models}` (tiny SemGIR: random weights, 32 px "
        f"regeneration, {args.steps} steps); torch threads: {args.threads}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs while measured); "
        f"Python {platform.python_version()}",
        f"- service: uvicorn, one process, dynamic batching up to {args.max_batch_size} images or "
        f"{args.max_wait_ms} ms",
        f"- load: {res['requests']} requests of one 48x40 PNG each, {res['concurrency']} in flight at once, "
        f"time cap {args.time_cap:.0f} s",
        "",
        "| metric | value |",
        "|---|---|",
        f"| completed OK | {res['completed_ok']} / {res['requests']} |",
        f"| errors | {res['errors']} (statuses: {json.dumps(res['statuses'])}) |",
        f"| wall time | {res['wall_s']:.1f} s (service ready after {res.get('ready_s', 0):.1f} s, not counted) |",
        f"| throughput | {res['throughput_rps']:.1f} requests/s (= images/s) |",
        f"| latency p50 | {1000 * lat['p50']:.0f} ms |",
        f"| latency p90 | {1000 * lat['p90']:.0f} ms |",
        f"| latency p99 | {1000 * lat['p99']:.0f} ms |",
        f"| latency max | {1000 * lat['max']:.0f} ms |",
        f"| batches formed | {b['batches']} (mean {b['mean_batch_size']:.1f} images, {b['batches_of_1']} of size 1) |",
        "",
        ("Latency here is dominated by queueing: all requests arrive at once and the model works through "
         "them in batches, so p50 is about half the wall time." if res["concurrency"] >= res["requests"] else
         f"With {res['concurrency']} requests in flight, latency is about the time to score that many images "
         "(a batch forming while the previous one runs)."),
        "Throughput is the model's batched rate on this CPU; the service adds decoding and HTTP on the "
        "event loop / thread pool.",
        "",
        f"Batch size histogram (cumulative, le): `{json.dumps(b['histogram_le'])}`",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--time-cap", type=float, default=300.0, help="stop after this many seconds, whatever is left")
    ap.add_argument("--url", default=None, help="a running service (loopback only); default: start one")
    ap.add_argument("--method", default="semgir")
    ap.add_argument("--models", default="tiny")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the service")
    ap.add_argument("--out", default=None, help="write a markdown report here")
    ap.add_argument("--json", dest="json_out", default=None, help="write the raw numbers here")
    args = ap.parse_args(argv)
    if args.requests < 1 or args.requests > 10_000:
        ap.error("--requests must be in [1, 10000]")
    if args.time_cap <= 0 or args.time_cap > 1800:
        ap.error("--time-cap must be in (0, 1800] seconds")

    proc = None
    if args.url:
        host = urlparse(args.url).hostname or ""
        from semgir_engine.serve import is_loopback

        if not is_loopback(host):
            ap.error("--url must be a loopback address (127.0.0.0/8, ::1, localhost)")
        url = args.url.rstrip("/")
    else:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                   HF_HUB_OFFLINE="1")
        cmd = [sys.executable, "-m", "semgir_engine.cli", "-q", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--method", args.method, "--models", args.models, "--steps", str(args.steps),
               "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
               "--request-timeout", str(args.time_cap), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, env=env)
    try:
        ready_s = _wait_ready(url, proc, timeout=300)
        res = asyncio.run(_run_load(url, args.requests, args.concurrency, args.time_cap, args.time_cap))
        res["ready_s"] = ready_s
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(_markdown(res, args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=2))
    return 0 if res["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Soak: many concurrent requests of mixed kinds against the real service on loopback.

Starts ``semgir-engine serve`` (tiny models by default) in a child process and sends
``--requests`` requests at once, drawn (seeded) from a mix of:

- ``good``: a PNG or JPEG of 40-160 px; must end in 200 with its own row (path and sha256 checked);
- ``corrupt``: truncated PNG, random bytes, invalid base64 JSON; must end in 400;
- ``oversize_body``: a body over ``--max-body-bytes``; must end in 413;
- ``oversize_pixels``: a small PNG of more than ``--max-pixels`` pixels; must end in 400;
- ``disconnect``: headers and half the body on a raw socket, then the client hangs up.

503 answers (the service's bounds) are retried after ``Retry-After``, like a well-behaved client;
so is a request whose connection the server closed before answering (the HTTP/1.1 keep-alive race:
a pooled connection reused just as the server's keep-alive timeout closes it; scoring is
idempotent, so a retry is safe). Both are counted. The service's memory (``VmRSS`` of the child)
is read after start-up, after a warm-up round of the same mix (the baseline) and after the soak.
Pass/fail: no good request lost (each checked by path and sha256), no 5xx as the final answer to
bad input, no 5xx but 503 in the service's own count, as many 200s counted by the service as
received by the client (nothing scored and its answer lost), ready afterwards with nothing in
flight or queued, RSS after the soak within ``--rss-tolerance-mb`` of the baseline. Usage::

    python -m semgir_engine.bench.soak [--requests 1000] [--method semgir --models tiny]
        [--out bench/results/soak.md] [--json bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .load_test import _free_port, _percentile, _wait_ready

KINDS = {"good": 0.70, "corrupt": 0.10, "oversize_body": 0.05, "oversize_pixels": 0.05, "disconnect": 0.10}
EXPECTED = {"good": 200, "corrupt": 400, "oversize_body": 413, "oversize_pixels": 400}


def _image(rng: random.Random, fmt: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_requests(n: int, seed: int, max_body_bytes: int, max_pixels: int) -> list[dict]:
    """``n`` request specs: kind, name, body bytes or JSON, expected status (seeded, reproducible)."""
    from PIL import Image

    rng = random.Random(seed)
    kinds, weights = zip(*KINDS.items())
    big_px = io.BytesIO()
    side = int(max_pixels ** 0.5) + 16
    Image.new("L", (side, side)).save(big_px, "PNG")  # small file, too many pixels
    out = []
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        name = f"{kind}-{i}.{'png' if i % 2 else 'jpg'}"
        req: dict = {"i": i, "kind": kind, "name": name, "json": None, "data": None}
        if kind in ("good", "disconnect"):
            size = (rng.randint(40, 160), rng.randint(40, 160))
            req["data"] = _image(rng, "PNG" if i % 2 else "JPEG", size)
        elif kind == "corrupt":
            r = rng.random()
            if r < 0.4:
                good = _image(rng, "PNG", (64, 64))
                req["data"] = good[: rng.randint(10, len(good) - 10)]
            elif r < 0.8:
                req["data"] = rng.randbytes(rng.randint(1, 4000))
            else:
                req["json"] = {"images": [{"name": name, "data": "not base64 %%%"}]}
        elif kind == "oversize_body":
            req["data"] = rng.randbytes(max_body_bytes + rng.randint(1, max_body_bytes // 2))
        else:
            req["data"] = big_px.getvalue()
        if req["data"] is not None:
            req["sha256"] = hashlib.sha256(req["data"]).hexdigest()
        out.append(req)
    return out


def _multipart(name: str, data: bytes, boundary: str = "soakboundary") -> tuple[bytes, str]:
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def _disconnect(host: str, port: int, req: dict) -> str:
    body, ctype = _multipart(req["name"], req["data"])
    head = (f"POST /v1/score HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    try:
        _, writer = await asyncio.open_connection(host, port)
        writer.write(head + body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # hang up mid-upload (RST)
        return "hung-up"
    except OSError as exc:
        return type(exc).__name__


async def run_soak(url: str, reqs: list[dict], concurrency: int, timeout: float, max_retries: int = 100,
                   transport_retries: int = 3) -> dict:
    import httpx
    from urllib.parse import urlparse

    u = urlparse(url)
    sem = asyncio.Semaphore(concurrency)
    rows: list[dict] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def one(req: dict) -> None:
            async with sem:
                t0 = time.perf_counter()
                rec = {"i": req["i"], "kind": req["kind"], "status": None, "retries_503": 0, "retries_transport": 0,
                       "ok": False}
                if req["kind"] == "disconnect":
                    rec["status"] = await _disconnect(u.hostname, u.port, req)
                    rec["ok"] = True
                    rows.append(rec)
                    return
                while True:
                    try:
                        if req["json"] is not None:
                            r = await client.post("/v1/score", json=req["json"])
                        else:
                            r = await client.post("/v1/score", files=[("images", (req["name"], req["data"],
                                                                                  "application/octet-stream"))])
                    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError) as exc:
                        if rec["retries_transport"] < transport_retries:  # closed before any answer: retry
                            rec["retries_transport"] += 1
                            rec.setdefault("transport_errors", []).append(type(exc).__name__)
                            continue
                        rec["status"] = type(exc).__name__
                        break
                    except httpx.HTTPError as exc:
                        rec["status"] = type(exc).__name__
                        break
                    if r.status_code == 503 and "retry-after" in r.headers and rec["retries_503"] < max_retries:
                        rec["retries_503"] += 1
                        await asyncio.sleep(float(r.headers["retry-after"]) * (0.5 + random.random()))
                        continue
                    rec["status"] = r.status_code
                    if req["kind"] == "good" and r.status_code == 200:
                        res = r.json()["results"]
                        rec["ok"] = (len(res) == 1 and res[0]["path"] == req["name"] and res[0]["error"] is None
                                     and res[0]["sha256"] == req["sha256"] and 0.0 <= res[0]["p_ai"] <= 1.0)
                    else:
                        rec["ok"] = r.status_code == EXPECTED[req["kind"]]
                    break
                rec["latency_s"] = time.perf_counter() - t0
                rows.append(rec)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in reqs))
        wall = time.perf_counter() - t0
        metrics = (await client.get("/metrics")).text
        ready = (await client.get("/readyz")).status_code
    return {"rows": rows, "wall_s": wall, "metrics": metrics, "ready_after": ready}


def _rss_mb(pid: int) -> dict:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1)) / 1024 for k in ("VmRSS", "VmHWM")}


def _gauge(metrics: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", metrics, re.M)
    return float(m.group(1)) if m else float("nan")


def _statuses(metrics: str) -> dict[str, int]:
    return {st: int(float(v)) for st, v in re.findall(
        r'^semgir_requests_total\{method="POST",route="/v1/score",status="(\d+)"\} (\S+)$', metrics, re.M)}


def summarise(res: dict, n: int, before: dict[str, int] | None = None) -> dict:
    """The soak's numbers; ``before``: the service's status counts before this round (the warm-up's)."""
    rows = res["rows"]
    before = before or {}
    after = _statuses(res["metrics"])
    server = {st: after.get(st, 0) - before.get(st, 0) for st in sorted(set(after) | set(before))}
    by_kind: dict[str, dict] = {}
    for k in KINDS:
        rs = [r for r in rows if r["kind"] == k]
        statuses: dict[str, int] = {}
        for r in rs:
            statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        by_kind[k] = {"sent": len(rs), "as_expected": sum(r["ok"] for r in rs), "statuses": statuses,
                      "retries_503": sum(r["retries_503"] for r in rs),
                      "retries_transport": sum(r["retries_transport"] for r in rs)}
    good = [r for r in rows if r["kind"] == "good"]
    lat = [r["latency_s"] for r in good if r["ok"]]
    bad = [r for r in rows if r["kind"] in ("corrupt", "oversize_body", "oversize_pixels")]
    return {
        "requests": n, "answered": len(rows), "wall_s": round(res["wall_s"], 2),
        "good_lost": sum(not r["ok"] for r in good) + (n - len(rows)),
        "bad_input_5xx": sum(isinstance(r["status"], int) and r["status"] >= 500 for r in bad),
        "bad_input_unexpected": sum(not r["ok"] for r in bad),
        "throughput_good_rps": round(len(lat) / res["wall_s"], 2) if res["wall_s"] > 0 else 0.0,
        "latency_good_s": {"p50": round(_percentile(lat, 50), 3), "p90": round(_percentile(lat, 90), 3),
                           "p99": round(_percentile(lat, 99), 3), "max": round(max(lat), 3) if lat else None},
        "retries_503": sum(r["retries_503"] for r in rows),
        "retries_transport": sum(r["retries_transport"] for r in rows),
        "transport_errors": sorted({e for r in rows for e in r.get("transport_errors", [])}),
        "client_200": sum(r["status"] == 200 for r in rows),
        "by_kind": by_kind, "ready_after": res["ready_after"],
        "server_statuses": server,  # POST /v1/score answers this round, as the service counted them
        "server_5xx_not_503": sum(v for st, v in server.items() if st.startswith("5") and st != "503"),
        "answers_lost": server.get("200", 0) - sum(r["status"] == 200 for r in rows),
        "in_flight_after": _gauge(res["metrics"], "semgir_requests_in_flight"),
        "queue_depth_after": _gauge(res["metrics"], "semgir_queue_depth"),
    }


def _markdown(s: dict, args) -> str:
    mem = s["memory_mb"]
    lines = [
        "# Soak: mixed concurrent requests against the real service (loopback)", "",
        f"`python -m semgir_engine.bench.soak --requests {args.requests} --concurrency {args.concurrency} "
        f"--method {args.method} --models {args.models} --seed {args.seed}`", "",
        f"- service: `semgir-engine serve --method {args.method} --models {args.models} --max-batch-size "
        f"{args.max_batch_size} --max-body-bytes {args.max_body_bytes} --max-pixels {args.max_pixels} "
        f"--max-concurrent-requests {args.max_concurrent_requests} --max-queue {args.max_queue}` (one process, "
        "torch 1 thread)",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs; Python "
        f"{platform.python_version()}",
        f"- load: {s['requests']} requests sent at once ({args.concurrency} connections), mix "
        + ", ".join(f"{k} {v['sent']}" for k, v in s["by_kind"].items())
        + f"; a warm-up round of {args.warmup} requests of the same mix first", "",
        f"**{'PASS' if s['pass'] else 'FAIL'}**: good requests lost {s['good_lost']}, 5xx for bad input "
        f"{s['bad_input_5xx']}, 5xx other than 503 in the service's own count {s['server_5xx_not_503']}, answers "
        f"scored but not received {s['answers_lost']}, ready afterwards: "
        f"{s['ready_after'] == 200}, in flight / queued afterwards: "
        f"{s['in_flight_after']:.0f} / {s['queue_depth_after']:.0f}, RSS after vs baseline: "
        f"{mem['after_vs_baseline']:+.1f} MB (tolerance {args.rss_tolerance_mb:g} MB)", "",
        "| kind | sent | as expected | final statuses | 503 retries | retries after a closed connection |",
        "|---|---|---|---|---|---|"]
    for k, v in s["by_kind"].items():
        lines.append(f"| {k} | {v['sent']} | {v['as_expected']} | {json.dumps(v['statuses'])} | {v['retries_503']} | "
                     f"{v['retries_transport']} |")
    lat = s["latency_good_s"]
    lines += ["", "| metric | value |", "|---|---|",
              f"| wall time | {s['wall_s']:.1f} s |",
              f"| throughput (good requests = images) | {s['throughput_good_rps']:.1f} /s |",
              f"| latency of good requests p50 / p90 / p99 / max (incl. 503 retries) | {lat['p50']:.2f} / "
              f"{lat['p90']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f} s |",
              f"| 503 answers retried | {s['retries_503']} |",
              f"| requests retried after the server closed the connection unanswered | {s['retries_transport']} "
              f"({', '.join(s['transport_errors']) or 'none'}) |",
              f"| POST /v1/score answers by status, as the service counted them (this round) | "
              f"{json.dumps(s['server_statuses'])} |",
              f"| service RSS: started / baseline (after warm-up) / after soak / peak | {mem['started']:.0f} / "
              f"{mem['baseline']:.0f} / {mem['after_abs']:.0f} / {mem['peak']:.0f} MB |", "",
              "`disconnect` requests send their headers and half the body, then reset the connection; they get "
              "no answer by design (status `hung-up`). All requests arrive at once, so latency is mostly queueing "
              "behind the model; 503s are the service's bounds at work (the client waits `Retry-After` and "
              "retries).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=None, help="connections at once (default: --requests)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="requests of the warm-up round that sets the memory baseline (default: --requests, at the "
                         "same concurrency, so the baseline has seen the same peak)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="semgir")
    ap.add_argument("--models", default="tiny")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-body-bytes", type=int, default=1 << 20)
    ap.add_argument("--max-pixels", type=int, default=1_000_000)
    ap.add_argument("--max-concurrent-requests", type=int, default=128)
    ap.add_argument("--max-queue", type=int, default=512)
    ap.add_argument("--timeout", type=float, default=600.0, help="client timeout per request (s)")
    ap.add_argument("--rss-tolerance-mb", type=float, default=64.0)
    ap.add_argument("--out", default=None, help="markdown report")
    ap.add_argument("--json", dest="json_out", default=None, help="raw numbers")
    args = ap.parse_args(argv)
    if not 1 <= args.requests <= 10_000:
        ap.error("--requests must be in [1, 10000]")
    args.concurrency = args.concurrency or args.requests
    args.warmup = args.requests if args.warmup is None else args.warmup
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "semgir_engine.cli", "-q", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--method", args.method, "--models", args.models, "--max-batch-size", str(args.max_batch_size),
           "--max-body-bytes", str(args.max_body_bytes), "--max-pixels", str(args.max_pixels),
           "--max-concurrent-requests", str(args.max_concurrent_requests), "--max-queue", str(args.max_queue),
           "--request-timeout", str(args.timeout), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env)
    try:
        _wait_ready(url, proc, timeout=300)
        mem = {"started": _rss_mb(proc.pid)["VmRSS"]}
        before = None
        if args.warmup:
            warm = make_requests(args.warmup, args.seed + 1, args.max_body_bytes, args.max_pixels)
            before = _statuses(asyncio.run(run_soak(url, warm, min(args.concurrency, args.warmup),
                                                    args.timeout))["metrics"])
        time.sleep(1.0)
        mem["baseline"] = _rss_mb(proc.pid)["VmRSS"]
        reqs = make_requests(args.requests, args.seed, args.max_body_bytes, args.max_pixels)
        res = asyncio.run(run_soak(url, reqs, args.concurrency, args.timeout))
        time.sleep(1.0)
        after = _rss_mb(proc.pid)
        mem.update(after_abs=after["VmRSS"], peak=after["VmHWM"], after_vs_baseline=after["VmRSS"] - mem["baseline"])
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    s = summarise(res, args.requests, before)
    s["memory_mb"] = {k: round(v, 1) for k, v in mem.items()}
    s["service_alive_after"] = alive
    s["pass"] = bool(alive and s["good_lost"] == 0 and s["bad_input_5xx"] == 0 and s["server_5xx_not_503"] == 0
                     and s["answers_lost"] == 0
                     and s["bad_input_unexpected"] == 0
                     and s["ready_after"] == 200 and s["in_flight_after"] == 0 and s["queue_depth_after"] == 0
                     and s["memory_mb"]["after_vs_baseline"] <= args.rss_tolerance_mb)
    print(json.dumps(s, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(_markdown(s, args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(s, indent=2) + "\n")
    return 0 if s["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

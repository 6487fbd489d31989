"""`semgir-engine serve`: the HTTP service's command (the web stack is imported only when it runs)."""

from __future__ import annotations

import click

from .images import DEFAULT_MAX_PIXELS


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Loopback by default; anything else exposes an unauthenticated service.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-batch-size", type=click.IntRange(1), default=8, show_default=True,
              help="Most images in one model batch.")
@click.option("--max-wait-ms", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Longest time the oldest queued image waits for a batch to fill.")
@click.option("--max-body-bytes", type=click.IntRange(1), default=32 * 1024 * 1024, show_default=True,
              help="Larger request bodies get 413.")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Larger images get 400 (decompression-bomb guard).")
@click.option("--max-images", "max_images_per_request", type=click.IntRange(1), default=64, show_default=True,
              help="Most images in one request.")
@click.option("--request-timeout", "request_timeout_s", type=click.FloatRange(0, min_open=True), default=60.0,
              show_default=True, help="Seconds before a request gets 504.")
@click.option("--method", type=click.Choice(["auto", "semgir", "patch"]), default="auto", show_default=True)
@click.option("--models", default=None, metavar="tiny|random|DIR", help="SemGIR models (as for `score`).")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnxruntime", "tensorrt"]), default="auto",
              show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device (cpu, cuda, cuda:1).")
@click.option("--export-dir", type=click.Path(exists=True, file_okay=False, path_type=str), default=None,
              help="SemGIR ONNX export (`semgir-engine export`) for --backend onnxruntime|tensorrt|auto.")
@click.option("--steps", type=click.IntRange(1), default=4, show_default=True, help="Regeneration steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--patch-model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Patch-detector checkpoint (default: the shipped model).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level.")
def serve_cmd(host, port, max_batch_size, max_wait_ms, max_body_bytes, max_pixels, max_images_per_request,
              request_timeout_s, method, models, backend, device, export_dir, steps, seed, patch_model, log_level):
    """Serve POST /v1/score over HTTP with dynamic batching (plus /healthz, /readyz, /metrics, /docs)."""
    from .scorer import ScorerConfig
    from .serve import run

    cfg = ScorerConfig(method=method, models=models, backend=backend, device=device, export_dir=export_dir,
                       batch_size=max_batch_size, seed=seed, steps=steps, patch_model=patch_model,
                       max_pixels=max_pixels)
    run(cfg, host=host, port=port, log_level=log_level, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        max_body_bytes=max_body_bytes, max_pixels=max_pixels, request_timeout_s=request_timeout_s,
        max_images_per_request=max_images_per_request)

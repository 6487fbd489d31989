"""`semgir-engine serve`: the HTTP service's command (the web stack is imported only when it runs)."""

from __future__ import annotations

import click

from .cli_options import cascade_options, scorer_options
from .images import DEFAULT_MAX_PIXELS


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Loopback by default; any other address needs --token-file (or --insecure).")
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
@click.option("--max-queue", type=click.IntRange(1), default=512, show_default=True,
              help="Most images waiting for the model; past it requests get 503 with Retry-After.")
@click.option("--max-concurrent-requests", type=click.IntRange(1), default=128, show_default=True,
              help="Most score requests handled at once (bounds memory); past it 503 with Retry-After.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="File holding a bearer token: every route but /healthz and /readyz then needs "
                   "'Authorization: Bearer TOKEN'.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without --token-file.")
@click.option("--drain-timeout", "drain_timeout_s", type=click.FloatRange(0), default=30.0, show_default=True,
              help="On SIGTERM, seconds the requests in flight get to finish.")
@scorer_options
@cascade_options
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level.")
def serve_cmd(host, port, max_batch_size, max_wait_ms, max_body_bytes, max_pixels, max_images_per_request,
              request_timeout_s, max_queue, max_concurrent_requests, token_file, insecure, drain_timeout_s, method,
              models, backend, device, export_dir, precision, steps, seed, patch_model, cascade_band,
              max_regen_fraction, log_level):
    """Serve POST /v1/score over HTTP with dynamic batching (plus /healthz, /readyz, /metrics, /docs)."""
    from .scorer import ScorerConfig
    from .serve import run

    cfg = ScorerConfig(method=method, models=models, backend=backend, device=device, export_dir=export_dir,
                       precision=precision, batch_size=max_batch_size, seed=seed, steps=steps, patch_model=patch_model,
                       max_pixels=max_pixels, cascade_band=cascade_band, max_regen_fraction=max_regen_fraction)
    run(cfg, host=host, port=port, log_level=log_level, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        max_body_bytes=max_body_bytes, max_pixels=max_pixels, request_timeout_s=request_timeout_s,
        max_images_per_request=max_images_per_request, max_queue=max_queue,
        max_concurrent_requests=max_concurrent_requests, token_file=token_file, insecure=insecure,
        drain_timeout_s=drain_timeout_s)

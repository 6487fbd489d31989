"""The HTTP service: FastAPI app with dynamic batching over one :class:`~semgir_engine.scorer.Scorer`.

Endpoints
---------
``POST /v1/score``
    Score one or more images. Either ``multipart/form-data`` with one or more file parts (any
    field name; the part's filename becomes the row's ``path``), or JSON
    ``{"images": ["<base64>", {"name": "a.png", "data": "<base64>"}, ...]}``.
    Answers ``{"results": [row, ...], ...}`` where each row is ``Result.to_dict()``, in order.
``GET /healthz``  the process is alive (200 even while models load).
``GET /readyz``   200 once the models are loaded, 503 before (or if loading failed).
``GET /metrics``  Prometheus text: requests, images, batch sizes, latencies, errors.
``GET /openapi.json`` (and ``/docs``)  the OpenAPI schema.

Limits and errors: a body over ``max_body_bytes`` gets 413 (checked on Content-Length and while
streaming); an image over ``max_pixels`` or one that cannot be decoded gets 400 with the reason
for each bad image (nothing of that request is scored); a request not answered within
``request_timeout_s`` gets 504; a wrong method 405; 503 while loading. Bad input never reaches
the model worker, and the worker survives a failed batch (its callers get 500).

Bounded under load: at most ``max_concurrent_requests`` score requests are read and decoded at
once and at most ``max_queue`` images wait for the model; past either bound a request gets 503
with ``Retry-After`` at once, so memory is bounded by about ``max_concurrent_requests x
max_body_bytes`` and no backlog grows. A :class:`~semgir_engine.errors.SystematicError` from the
model (the model or session cannot run at all) fails its batch with 500 and turns ``/readyz`` to
503 for good: a load balancer stops sending work to a replica that cannot score.

Auth: with a bearer token (``token``), every route but ``/healthz`` and ``/readyz`` needs
``Authorization: Bearer <token>`` (401 otherwise). On SIGTERM (``run``) the service stops
accepting connections, ``/readyz`` says ``draining``, requests in flight are answered, then the
models are released.

Models load in the lifespan hook, in a background thread, so the port opens at once and
``/readyz`` tells when scoring can start; nothing loads at import. Decoding runs in a thread
pool and the models in one worker thread: the event loop is never blocked.

Network: the CLI binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import os
import stat
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from .batching import BatcherClosed, DynamicBatcher
from .errors import InputError, MissingDependencyError, SemgirError, SystematicError
from .images import DEFAULT_MAX_PIXELS, DecodedImage, load_image
from .results import Result
from .scorer import Scorer, ScorerConfig

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.requests import ClientDisconnect
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "fastapi", "serve", "the HTTP service") from exc
try:
    import uvicorn
except ImportError as exc:  # pragma: no cover
    raise MissingDependencyError("uvicorn", "serve", "the HTTP service") from exc
try:
    import prometheus_client as prom
except ImportError as exc:  # pragma: no cover
    raise MissingDependencyError("prometheus-client", "serve", "the HTTP service's /metrics") from exc

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
ROUTES = ("/v1/score", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
#: routes a prober may call without the bearer token
OPEN_ROUTES = ("/healthz", "/readyz")


class ServeConfigError(SemgirError):
    """The service cannot start as configured (unreadable token file, non-loopback bind without a token)."""


@dataclass(frozen=True)
class ServeSettings:
    """Service limits and batching knobs (the scorer has its own :class:`ScorerConfig`)."""

    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images_per_request: int = 64
    request_timeout_s: float = 60.0
    max_queue: int = 512  # images waiting for the model; more -> 503 + Retry-After
    max_concurrent_requests: int = 128  # score requests being read/decoded/scored at once; more -> 503
    retry_after_s: int = 1
    token: str | None = None  # bearer token; None = no authentication (loopback only, or --insecure)

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if min(self.max_body_bytes, self.max_pixels, self.max_images_per_request, self.max_queue,
               self.max_concurrent_requests, self.retry_after_s) < 1:
            raise ValueError("limits must be >= 1")
        if self.max_queue < self.max_images_per_request:
            raise ValueError("max_queue must hold at least one full request (>= max_images_per_request)")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")
        if self.token is not None and not self.token:
            raise ValueError("token must not be empty")


class ScoreResponse(BaseModel):
    """``results`` holds one row per image, in request order; each row is ``Result.to_dict()``."""

    results: list[Result]
    method: str
    model_version: str
    random_weights: bool


class ErrorResponse(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str, kind: str, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.kind, self.errors, self.headers = status, detail, kind, errors, headers


# -- metrics ---------------------------------------------------------------------------------------
class Metrics:
    """Prometheus metrics in a registry of the app's own (several apps can live in one process)."""

    def __init__(self, max_batch_size: int):
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("semgir_requests", "HTTP requests by route, method and status",
                                     ["route", "method", "status"], registry=r)
        self.latency = prom.Histogram("semgir_request_latency_seconds", "Request latency by route", ["route"],
                                      buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60),
                                      registry=r)
        self.images = prom.Counter("semgir_images", "Images scored", registry=r)
        buckets = sorted({1, 2, 4, 8, 16, 32, 64, 128, max_batch_size})
        self.batch_size = prom.Histogram("semgir_batch_size", "Images per model batch", buckets=buckets, registry=r)
        self.batch_latency = prom.Histogram("semgir_batch_latency_seconds", "Model time per batch",
                                            buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=r)
        self.errors = prom.Counter("semgir_errors", "Failed requests by kind", ["kind"], registry=r)
        self.queue_depth = prom.Gauge("semgir_queue_depth", "Images waiting for a batch", registry=r)
        self.in_flight = prom.Gauge("semgir_requests_in_flight", "Score requests being handled", registry=r)
        self.ready = prom.Gauge("semgir_ready", "1 when the models are loaded", registry=r)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)
        self.images.inc(size)


class _Guard:
    """Pure ASGI middleware for every route: bearer token (401), body size limit (413), the bound on
    concurrent score requests (503 + Retry-After), request metrics."""

    def __init__(self, app, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics
        self.max_body_bytes = settings.max_body_bytes
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        counted = False
        try:
            length = _content_length(scope)
            token = self.settings.token
            if token is not None and path not in OPEN_ROUTES and not _authorized(scope, token):
                self.metrics.errors.labels("unauthorized").inc()
                await self._reject(receive, send_wrapper, length, 401, "missing or wrong bearer token",
                                   [(b"www-authenticate", b'Bearer realm="semgir-engine"')])
                return
            if length is not None and length > self.max_body_bytes:
                self.metrics.errors.labels("too_large").inc()
                await self._reject(receive, send_wrapper, length, 413, f"request body of {length} bytes exceeds "
                                                                      f"the limit of {self.max_body_bytes} bytes")
                return
            if route == "/v1/score":
                if self.in_flight >= self.settings.max_concurrent_requests:
                    self.metrics.errors.labels("overloaded").inc()
                    await self._reject(receive, send_wrapper, length, 503,
                                       f"overloaded: {self.in_flight} requests in flight (limit "
                                       f"{self.settings.max_concurrent_requests}); retry later",
                                       [(b"retry-after", str(self.settings.retry_after_s).encode())])
                    return
                self.in_flight += 1
                counted = True
                self.metrics.in_flight.set(self.in_flight)
            received = 0

            async def limited_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        raise _HTTPError(413, f"request body exceeds the limit of {self.max_body_bytes} bytes",
                                         "too_large")
                return message

            await self.app(scope, limited_receive, send_wrapper)
        finally:
            if counted:
                self.in_flight -= 1
                self.metrics.in_flight.set(self.in_flight)
            self.metrics.requests.labels(route, scope.get("method", ""), str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)

    async def _reject(self, receive, send, length: int | None, status: int, detail: str,
                      headers: list[tuple[bytes, bytes]] = ()) -> None:
        """Answer without handing the request to the app; a moderately sized body is read and discarded
        first, so the client reads the answer instead of a connection reset."""
        if length is None or length <= DRAIN_FACTOR * self.max_body_bytes:
            await _drain(receive, DRAIN_FACTOR * self.max_body_bytes)
        await _send_json(send, status, {"detail": detail}, headers)


#: status recorded (metrics, access log) for a request whose client hung up mid-upload (nginx's convention)
CLIENT_CLOSED = 499

#: an oversize body up to this multiple of the limit is read and discarded before the 413 goes out;
#: larger ones get the 413 at once and the connection is closed
DRAIN_FACTOR = 4


async def _drain(receive, limit: int) -> None:
    seen = 0
    while seen <= limit:
        message = await receive()
        seen += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _authorized(scope, token: str) -> bool:
    want = b"bearer " + token.encode()
    for k, v in scope.get("headers", ()):
        if k == b"authorization":
            return len(v) == len(want) and v[:7].lower() == want[:7] and hmac.compare_digest(v[7:], want[7:])
    return False


def _content_length(scope) -> int | None:
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": data})


# -- request parsing -------------------------------------------------------------------------------
async def _read_images(request: Request, settings: ServeSettings) -> tuple[list[str], list[bytes]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    names: list[str] = []
    blobs: list[bytes] = []
    if ctype == "multipart/form-data":
        form = await request.form(max_files=settings.max_images_per_request, max_fields=100)
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    names.append(value.filename or f"{key}-{len(names)}")
                    blobs.append(await value.read())
        finally:
            await form.close()
    elif ctype == "application/json":
        try:
            payload = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting: RecursionError
            raise _HTTPError(400, f"body is not valid JSON: {exc}", "bad_request") from exc
        images = payload.get("images") if isinstance(payload, dict) else None
        if not isinstance(images, list):
            raise _HTTPError(400, 'JSON body must be {"images": [base64 string or {"name", "data"}, ...]}',
                             "bad_request")
        if len(images) > settings.max_images_per_request:
            raise _HTTPError(413, f"{len(images)} images exceed the limit of {settings.max_images_per_request} "
                                  "per request", "too_large")
        for i, item in enumerate(images):
            name, data = f"image-{i}", item
            if isinstance(item, dict):
                name, data = str(item.get("name") or name), item.get("data")
            if not isinstance(data, str):
                raise _HTTPError(400, f"image {i}: expected a base64 string", "bad_request")
            try:
                blobs.append(base64.b64decode(data, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise _HTTPError(400, f"image {i} ({name!r}): invalid base64: {exc}", "bad_image") from exc
            names.append(name)
    else:
        raise _HTTPError(415, "send multipart/form-data (file parts) or application/json "
                              '({"images": [base64, ...]})', "bad_request")
    if not blobs:
        raise _HTTPError(400, "no images in the request", "bad_request")
    if len(blobs) > settings.max_images_per_request:
        raise _HTTPError(413, f"{len(blobs)} images exceed the limit of {settings.max_images_per_request} "
                              "per request", "too_large")
    return names, blobs


def _decode_all(settings: ServeSettings, names: Sequence[str], blobs: Sequence[bytes]) -> list[DecodedImage]:
    """Decode every image under the service's limits, or raise 400 naming each bad one."""
    decoded, errors = [], []
    for i, (name, data) in enumerate(zip(names, blobs)):
        try:
            decoded.append(load_image(data, max_pixels=settings.max_pixels, max_bytes=settings.max_body_bytes))
        except InputError as exc:
            errors.append({"index": i, "name": name, "error": str(exc)})
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise _HTTPError(400, f"image {first['index']} ({first['name']!r}): {first['error']}{more}", "bad_image",
                         errors)
    return decoded


# -- the app ---------------------------------------------------------------------------------------
class _State:
    def __init__(self, config: ScorerConfig, settings: ServeSettings, factory: Callable[[ScorerConfig], Scorer]):
        self.config, self.settings, self.factory = config, settings, factory
        self.metrics = Metrics(settings.max_batch_size)
        self.scorer: Scorer | None = None
        self.batcher: DynamicBatcher | None = None
        self.load_error: str | None = None
        self.load_task: asyncio.Task | None = None
        self.fault: str | None = None  # a SystematicError seen while scoring: not ready any more
        self.draining = False  # SIGTERM received: finishing what is in flight

    @property
    def ready(self) -> bool:
        return self.batcher is not None and self.fault is None and not self.draining

    def on_fault(self, exc: SystematicError) -> None:
        if self.fault is None:
            log.error("systematic fault: the models cannot score; /readyz now fails: %s", exc)
        self.fault = f"{type(exc).__name__}: {exc}"
        self.metrics.ready.set(0)

    async def load(self) -> None:
        t0 = time.perf_counter()
        try:
            scorer = await asyncio.to_thread(self.factory, self.config)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz; the process stays up for probes
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("loading the models failed")
            return
        self.scorer = scorer
        batcher = DynamicBatcher(lambda payloads, names: scorer.score_decoded(payloads, names),
                                 max_batch_size=self.settings.max_batch_size, max_wait_ms=self.settings.max_wait_ms,
                                 on_batch=self.metrics.on_batch)
        batcher.start()
        self.batcher = batcher
        self.metrics.ready.set(1)
        log.info("models loaded in %.1fs: %s (%s)", time.perf_counter() - t0, scorer.method, scorer.version)

    async def close(self) -> None:
        self.metrics.ready.set(0)
        if self.load_task is not None and not self.load_task.done():
            self.load_task.cancel()
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            await batcher.stop()
        if self.scorer is not None:
            self.scorer.close()
            self.scorer = None


def create_app(config: ScorerConfig = ScorerConfig(), *, max_batch_size: int = 8, max_wait_ms: float = 10.0,
               max_body_bytes: int = 32 * 1024 * 1024, max_pixels: int | None = None,
               request_timeout_s: float = 60.0, max_images_per_request: int = 64, max_queue: int = 512,
               max_concurrent_requests: int = 128, retry_after_s: int = 1, token: str | None = None,
               token_file: str | os.PathLike | None = None,
               scorer_factory: Callable[[ScorerConfig], Scorer] = Scorer):
    """Build the ASGI app. Nothing loads until the server runs the lifespan hook.

    ``max_pixels`` (default: ``config.max_pixels``) bounds each decoded image; each image's
    encoded size is bounded by the body limit. ``token`` (or ``token_file``, see
    :func:`read_token`) turns on bearer authentication. ``scorer_factory(config)`` builds the
    scorer (tests use it to control loading).
    """
    if token_file is not None:
        token = read_token(token_file)
    settings = ServeSettings(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes,
                             max_pixels=max_pixels or config.max_pixels, request_timeout_s=request_timeout_s,
                             max_images_per_request=max_images_per_request, max_queue=max_queue,
                             max_concurrent_requests=max_concurrent_requests, retry_after_s=retry_after_s,
                             token=token)
    config = replace(config, max_pixels=settings.max_pixels, max_bytes=min(config.max_bytes, max_body_bytes),
                     batch_size=max(config.batch_size, max_batch_size))
    state = _State(config, settings, scorer_factory)

    async def lifespan(app):
        state.load_task = asyncio.create_task(state.load())
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(title="semgir-engine", description="Tell AI-generated images from real ones.",
                  version=_version(), lifespan=lifespan)
    app.state.semgir = state

    @app.exception_handler(_HTTPError)
    async def _on_http_error(request: Request, exc: _HTTPError):
        state.metrics.errors.labels(exc.kind).inc()
        body: dict[str, Any] = {"detail": exc.detail}
        if exc.errors:
            body["errors"] = exc.errors
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="The models are loaded", responses={503: {"model": ErrorResponse}})
    async def readyz():
        if state.ready:
            assert state.scorer is not None
            return {"status": "ready", "method": state.scorer.method, "model_version": state.scorer.version}
        if state.draining:
            return JSONResponse({"status": "draining", "detail": "shutting down"}, status_code=503)
        if state.load_error or state.fault:
            return JSONResponse({"status": "failed", "detail": state.load_error or state.fault}, status_code=503)
        return JSONResponse({"status": "loading", "detail": "models are loading"}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics():
        if state.batcher is not None:
            state.metrics.queue_depth.set(state.batcher.queue_depth)
        return PlainTextResponse(prom.generate_latest(state.metrics.registry), media_type=prom.CONTENT_TYPE_LATEST)

    score_body = {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
            "application/json": {"schema": {
                "type": "object", "required": ["images"],
                "properties": {"images": {"type": "array", "items": {"oneOf": [
                    {"type": "string", "format": "byte"},
                    {"type": "object", "required": ["data"],
                     "properties": {"name": {"type": "string"}, "data": {"type": "string", "format": "byte"}}}]}}}}},
        },
    }

    retry = {"Retry-After": str(settings.retry_after_s)}

    @app.post(f"{API_PREFIX}/score", summary="Score images", response_model=ScoreResponse,
              openapi_extra={"requestBody": score_body},
              responses={400: {"model": ErrorResponse, "description": "bad image or request"},
                         413: {"model": ErrorResponse, "description": "body, image count or pixels over the limit"},
                         401: {"model": ErrorResponse, "description": "missing or wrong bearer token"},
                         503: {"model": ErrorResponse, "description": "models not loaded yet, overloaded "
                                                                         "(Retry-After), or unable to score"},
                         504: {"model": ErrorResponse, "description": "not answered within the request timeout"}})
    async def score(request: Request):
        try:
            return await asyncio.wait_for(_score(request), timeout=settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise _HTTPError(504, f"not answered within the request timeout of {settings.request_timeout_s}s",
                             "timeout") from None

    async def _score(request: Request):
        batcher, scorer = state.batcher, state.scorer
        if batcher is None or scorer is None or state.fault:
            raise _HTTPError(503, state.fault or state.load_error or "models are loading; see /readyz", "not_ready",
                             headers=None if state.fault or state.load_error else retry)
        try:
            names, blobs = await _read_images(request, settings)
        except ClientDisconnect:  # the client hung up mid-upload: nobody to answer, nothing to log as an error
            raise _HTTPError(CLIENT_CLOSED, "the client closed the connection before sending the whole body",
                             "client_disconnect") from None
        decoded = await run_in_threadpool(_decode_all, settings, names, blobs)
        del blobs
        waiting = batcher.live_depth
        if waiting + len(decoded) > settings.max_queue:
            raise _HTTPError(503, f"overloaded: {waiting} images queued (limit {settings.max_queue}); retry later",
                             "overloaded", headers=retry)
        try:
            results: list[Result] = await batcher.submit(decoded, names)
        except BatcherClosed as exc:
            raise _HTTPError(503, str(exc), "not_ready", headers=retry) from exc
        except SystematicError as exc:
            state.on_fault(exc)
            raise _HTTPError(500, f"the models cannot score: {exc}", "systematic") from exc
        except Exception as exc:  # noqa: BLE001 - the worker failed this batch; it lives on
            log.exception("scoring failed")
            raise _HTTPError(500, f"scoring failed: {type(exc).__name__}: {exc}", "internal") from exc
        failed = [r for r in results if r.error]
        if failed:
            state.metrics.errors.labels("scoring").inc(len(failed))
        return JSONResponse({"results": [r.to_dict() for r in results], "method": scorer.method,
                             "model_version": scorer.version, "random_weights": scorer.random_weights})

    app.add_middleware(_Guard, settings=settings, metrics=state.metrics)
    return app


def read_token(path: str | os.PathLike) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped); refused if unreadable or empty.
    A file other users can read is accepted with a warning."""
    try:
        st = os.stat(path)
        text = open(path, encoding="utf-8").read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeConfigError(f"cannot read the token file {path}: {exc}") from exc
    if not text or any(c.isspace() for c in text):
        raise ServeConfigError(f"the token file {path} must hold one token (non-empty, no whitespace)")
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("the token file %s is readable by other users (chmod 600 it)", path)
    return text


def _version() -> str:
    from . import __version__

    return __version__


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(config: ScorerConfig, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
        token_file: str | os.PathLike | None = None, insecure: bool = False, drain_timeout_s: float = 30.0,
        **app_kwargs) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn, one process; the batcher needs a single model owner).

    A non-loopback ``host`` needs a ``token_file`` unless ``insecure`` (refused otherwise). On
    SIGTERM, requests in flight get up to ``drain_timeout_s`` seconds to finish.
    """
    token = read_token(token_file) if token_file is not None else None
    if not is_loopback(host):
        if token is None and not insecure:
            raise ServeConfigError(f"refusing to bind {host}, a non-loopback address, without authentication: "
                                   "give --token-file FILE (or --insecure to serve it open)")
        if token is None:
            log.warning("binding %s without authentication (--insecure): anyone who can reach it can use it", host)
    fix_malloc_mmap_threshold()
    app = create_app(config, token=token, **app_kwargs)
    server = DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1,
                                            timeout_graceful_shutdown=drain_timeout_s))
    server.run()


#: glibc's ``M_MMAP_THRESHOLD`` (mallopt) and the value the service sets
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024


def fix_malloc_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Give glibc a fixed mmap threshold (unless ``MALLOC_MMAP_THRESHOLD_`` is set by the user).

    glibc raises its threshold each time a large block is freed, after which the per-batch buffers
    (decoded images, activations) come from the heap and are rarely returned: a long-running
    service's RSS then wanders. Measured with the 120-request soak (fused default detector): RSS
    after the soak vs its warm-up baseline +36 to +138 MB by default (5 runs), +4.9 and +6.5 MB with a
    fixed 256 KiB threshold (buffers above it are mapped and unmapped). Returns whether it was
    applied (False off glibc, or when the environment decides)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    import ctypes
    import ctypes.util

    try:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and hasattr(libc, "mallopt") and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except OSError:
        return False


class DrainingServer(uvicorn.Server):
    """uvicorn's server, marking the app as draining (``/readyz`` 503) as soon as a signal arrives;
    uvicorn then stops accepting, lets requests in flight finish (``timeout_graceful_shutdown``)
    and runs the lifespan shutdown, which releases the models."""

    def handle_exit(self, sig, frame) -> None:
        state = getattr(getattr(self.config.app, "state", None), "semgir", None)
        if state is not None and not state.draining:
            state.draining = True
            state.metrics.ready.set(0)
            log.warning("signal %s: draining (%d images queued), then stopping", sig,
                        state.batcher.live_depth if state.batcher else 0)
        super().handle_exit(sig, frame)

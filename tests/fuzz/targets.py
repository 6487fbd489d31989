"""Fuzz targets: every byte-level entry point of the engine, each a function ``target(data: bytes)``.

The invariant is the same everywhere: an input gives a result or the engine's typed error
(:class:`~semgir_engine.errors.SemgirError` and its subclasses); anything else escaping is a
defect (atheris reports it as a crash). Hangs and memory blow-ups are caught by the runner's
``-timeout`` and ``-rss_limit_mb`` (see ``run.py``).

Targets do their own imports lazily (``setup()``), so ``run.py`` can instrument them with atheris
first and the pytest replay can import this module cheaply.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

#: pixel limit used by the image and request targets (keeps each input fast, like a service would)
FUZZ_MAX_PIXELS = 1 << 20
#: body limit of the fuzzed service (bodies above it must give 413, never 5xx)
FUZZ_MAX_BODY = 1 << 20

_TMP = Path(tempfile.mkdtemp(prefix="semgir-fuzz-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


class InvariantViolation(AssertionError):
    """A target returned something that breaks its contract (not merely an exception)."""


# -- images ------------------------------------------------------------------------------------
def image(data: bytes) -> None:
    """``decode_bytes``: any bytes give an 8-bit RGB array within the pixel limit, or InputError."""
    import numpy as np

    from semgir_engine.errors import InputError
    from semgir_engine.images import decode_bytes

    try:
        d = decode_bytes(data, max_pixels=FUZZ_MAX_PIXELS)
    except InputError:
        return
    px = d.pixels
    if not (isinstance(px, np.ndarray) and px.dtype == np.uint8 and px.ndim == 3 and px.shape[2] == 3):
        raise InvariantViolation(f"decoded pixels {type(px)} {getattr(px, 'shape', None)} {getattr(px, 'dtype', None)}")
    if px.shape[0] * px.shape[1] > FUZZ_MAX_PIXELS or 0 in px.shape:
        raise InvariantViolation(f"decoded shape {px.shape} outside (0, {FUZZ_MAX_PIXELS}] pixels")


# -- result files (resume readers) ----------------------------------------------------------------
def _results(fmt: str) -> Callable[[bytes], None]:
    def target(data: bytes) -> None:
        from semgir_engine.errors import SemgirError
        from semgir_engine.results import Result, RowWriter, iter_rows, journal_path

        out = _TMP / f"results.{fmt}"
        for p in (out, journal_path(out)):
            p.unlink(missing_ok=True)
        (journal_path(out) if fmt == "parquet" and data[:1] == b"{" else out).write_bytes(data)
        try:
            rows = list(iter_rows(out))
        except SemgirError:
            rows = None
        if rows is not None and not all(isinstance(r, Result) for r in rows):
            raise InvariantViolation("iter_rows yielded a non-Result")
        try:
            w = RowWriter(out, fmt, resume=True)
        except SemgirError:
            return
        if not all(isinstance(p, str) for p in w.done):
            raise InvariantViolation(f"resume set holds non-paths: {sorted(map(repr, w.done))[:3]}")
        w._fh.close()  # close the handle without rewriting the file (parquet's close() merges the journal)

    target.__name__ = f"results_{fmt}"
    return target


results_jsonl = _results("jsonl")
results_csv = _results("csv")
results_parquet = _results("parquet")


# -- data manifests (training / evaluation) -------------------------------------------------------
def manifest_csv(data: bytes) -> None:
    """``read_manifest``: a Manifest of labelled rows, or ManifestError."""
    from semgir_engine.datasets import ManifestError, read_manifest

    p = _TMP / "manifest.csv"
    p.write_bytes(data)
    try:
        m = read_manifest(p)
    except ManifestError:
        return
    if not m.rows or any(r.label not in (0, 1) or not isinstance(r.source, str) for r in m.rows):
        raise InvariantViolation("manifest rows without a 0/1 label or a source")


# -- export manifests (ONNX Runtime backends) -------------------------------------------------------
def export_manifest(data: bytes) -> None:
    """``load_manifest`` + ``component_entry`` of an export directory: an entry or ExportDirError."""
    from semgir_engine.errors import SemgirError
    from semgir_engine.runtime.manifest import component_entry, load_manifest

    d = _TMP / "export"
    d.mkdir(exist_ok=True)
    (d / "manifest.json").write_bytes(data)
    try:
        m = load_manifest(d)
        for name in ("patch_cnn", "semgir_head"):
            component_entry(d, m, name, "fp32", verify=True)
    except SemgirError:
        return


# -- built-artifact records (ONNX graphs, TensorRT engines in the artifact cache) -----------------------
ARTIFACT_PARTS = {"kind": "fuzz", "n": 1}


def artifact_record(data: bytes) -> None:
    """``ArtifactCache.check`` of an artifact whose ``artifact.json`` is ``data``: (artifact, "ok") or
    (None, why), never an exception (a bad record means rebuild)."""
    from semgir_engine.runtime.cache import ArtifactCache, artifact_key

    cache = ArtifactCache(_TMP / "artifacts")
    key = artifact_key(ARTIFACT_PARTS)
    d = cache.dir_for(key)
    d.mkdir(parents=True, exist_ok=True)
    (d / "graph.bin").write_bytes(b"graph")
    (d / "artifact.json").write_bytes(data)
    art, why = cache.check(key)
    if (art is None) == (why == "ok") or (art is not None and not all((art.dir / f).is_file() for f in art.files)):
        raise InvariantViolation(f"check() gave {art!r}, {why!r}")


# -- the HTTP service's request parsing (full ASGI app, real scorer) --------------------------------
class _Service:
    """The real app (real patch-detector scorer) driven in-process over ASGI, lifespan included."""

    def __init__(self):
        from semgir_engine.scorer import ScorerConfig
        from semgir_engine.serve import create_app

        token = _TMP / "token"
        token.write_text("fuzz-token\n")
        token.chmod(0o600)
        self.app = create_app(ScorerConfig(method="patch"), max_body_bytes=FUZZ_MAX_BODY,
                              max_pixels=FUZZ_MAX_PIXELS, max_images_per_request=8, request_timeout_s=30,
                              max_wait_ms=0, token_file=str(token))
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._start())

    async def _start(self):
        inbox: asyncio.Queue = asyncio.Queue()
        started = asyncio.Event()

        async def send(msg):
            if msg["type"] == "lifespan.startup.complete":
                started.set()
            elif msg["type"] == "lifespan.startup.failed":
                raise RuntimeError(msg.get("message"))

        await inbox.put({"type": "lifespan.startup"})
        self._lifespan = asyncio.ensure_future(self.app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                                        inbox.get, send))
        await asyncio.wait_for(started.wait(), 60)
        state = self.app.state.semgir
        while not state.ready:
            if state.load_error:
                raise RuntimeError(state.load_error)
            await asyncio.sleep(0.05)

    def request(self, raw: bytes) -> tuple[int, bytes]:
        return self.loop.run_until_complete(asyncio.wait_for(self._request(raw), 60))

    async def _request(self, raw: bytes) -> tuple[int, bytes]:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        first = lines[0].split(b" ")
        method = first[0].decode("latin-1") if first and first[0] else "POST"
        path = first[1].decode("latin-1") if len(first) > 1 else "/v1/score"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers.append((name.strip().lower(), value.strip()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path.split("?")[0], "raw_path": path.encode("latin-1"),
                 "query_string": path.partition("?")[2].encode("latin-1"), "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
        chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)] or [b""]
        sent = {"status": None, "body": b""}

        async def receive():
            if chunks:
                c = chunks.pop(0)
                return {"type": "http.request", "body": c, "more_body": bool(chunks)}
            await asyncio.sleep(3600)  # the app asked past the end of the body: it must not (timeout)

        async def send(msg):
            if msg["type"] == "http.response.start":
                sent["status"] = msg["status"]
            elif msg["type"] == "http.response.body":
                sent["body"] += msg.get("body", b"")

        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # the app let an exception escape: the server would answer 500
            raise InvariantViolation(f"exception escaped the app: {type(exc).__name__}: {exc}") from exc
        return sent["status"], sent["body"]


_service: _Service | None = None


def request(data: bytes) -> None:
    """One raw HTTP request (request line, headers, body) into the service: never a 5xx, never a hang."""
    import json

    global _service
    if _service is None:
        _service = _Service()
    if b"\r\n\r\n" not in data:
        return
    status, body = _service.request(data)
    if status is None or status >= 500:
        raise InvariantViolation(f"status {status} for bad input: {body[:300]!r}")
    if status == 200 and data.startswith(b"POST /v1/score"):
        rows = json.loads(body)["results"]
        if not rows or any(r["error"] is None and not (0.0 <= r["p_ai"] <= 1.0) for r in rows):
            raise InvariantViolation(f"bad 200 body {body[:300]!r}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "image": image,
    "results_jsonl": results_jsonl,
    "results_csv": results_csv,
    "results_parquet": results_parquet,
    "manifest_csv": manifest_csv,
    "export_manifest": export_manifest,
    "artifact_record": artifact_record,
    "request": request,
}

#: what atheris instruments for each target (coverage feedback comes from these packages' Python code)
INSTRUMENT = {
    "image": ("PIL", "semgir_engine.images"),
    "results_jsonl": ("semgir_engine.results",),
    "results_csv": ("semgir_engine.results",),
    "results_parquet": ("semgir_engine.results",),
    "manifest_csv": ("semgir_engine.datasets",),
    "export_manifest": ("semgir_engine.runtime.manifest",),
    "artifact_record": ("semgir_engine.runtime.cache",),
    "request": ("semgir_engine.serve", "starlette", "multipart", "python_multipart", "fastapi", "PIL"),
}

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS = FUZZ_DIR / "corpus"
CRASHERS = FUZZ_DIR / "crashers"


def seeds(name: str) -> list[Path]:
    """The committed seed corpus and every kept crasher of a target."""
    out = []
    for base in (CORPUS / name, CRASHERS / name):
        if base.is_dir():
            out += sorted(p for p in base.iterdir() if p.is_file())
    return out


os.environ.setdefault("OMP_NUM_THREADS", "1")

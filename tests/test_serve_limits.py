"""The service's bounds and faults, on the real shipped patch detector: bearer token, the in-flight
and queue bounds (503 + Retry-After), a systematic model fault failing readiness, draining on
SIGTERM (in-process and a real signal to a real `semgir-engine serve`), non-loopback refusal."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from serve_helpers import LiveServer, png  # noqa: E402

from semgir_engine.errors import SystematicError  # noqa: E402
from semgir_engine.scorer import Scorer, ScorerConfig  # noqa: E402

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def patch_scorer():
    with Scorer(ScorerConfig(method="patch")) as s:
        yield s


class Injected:
    """The real scorer behind a gate (to hold batches in the worker) and an optional injected fault."""

    def __init__(self, scorer, gate_open: bool = True, fault: Exception | None = None):
        self._s, self.fault, self.closed, self.batches = scorer, fault, False, 0
        self.gate = threading.Event()
        if gate_open:
            self.gate.set()

    def __getattr__(self, name):
        return getattr(self._s, name)

    def score_decoded(self, decoded, names):
        self.batches += 1
        if not self.gate.wait(60):
            raise RuntimeError("gate never opened")
        if self.fault is not None:
            raise self.fault
        return self._s.score_decoded(decoded, names)

    def close(self):
        self.closed = True


def app_for(scorer, **kw):
    from semgir_engine.serve import create_app

    return create_app(ScorerConfig(method="patch"), scorer_factory=lambda cfg: scorer, **kw)


def one(name="a.png", seed=1):
    return [("images", (name, png(seed), "image/png"))]


async def _post_many(url, n, files_for, headers=None):
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        return await asyncio.gather(*(c.post("/v1/score", files=files_for(i), headers=headers) for i in range(n)))


def _wait(cond, timeout=120.0):  # generous: CI machines are shared and slow
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def test_bearer_token(patch_scorer, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret-token\n")
    os.chmod(tok, 0o600)
    with LiveServer(app_for(Injected(patch_scorer), token_file=tok)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        srv.wait_ready(c)  # /readyz and /healthz need no token (probes)
        assert c.get("/healthz").status_code == 200
        r = c.post("/v1/score", files=one())
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        for bad in ("Bearer wrong", "Bearer s3cret-token2", "Basic s3cret-token", "Bearer", "s3cret-token"):
            assert c.post("/v1/score", files=one(), headers={"Authorization": bad}).status_code == 401, bad
        assert c.get("/metrics").status_code == 401 and c.get("/openapi.json").status_code == 401
        ok = {"Authorization": "Bearer s3cret-token"}
        r = c.post("/v1/score", files=one(), headers=ok)
        assert r.status_code == 200 and r.json()["results"][0]["error"] is None
        assert c.post("/v1/score", files=one(), headers={"authorization": "bearer s3cret-token"}).status_code == 200
        assert 'semgir_errors_total{kind="unauthorized"} 8.0' in c.get("/metrics", headers=ok).text


def test_token_file_must_hold_a_token(tmp_path):
    from semgir_engine.serve import ServeConfigError, read_token

    for text in ("", "  \n", "two words"):
        (tmp_path / "t").write_text(text)
        with pytest.raises(ServeConfigError, match="one token"):
            read_token(tmp_path / "t")
    with pytest.raises(ServeConfigError, match="cannot read"):
        read_token(tmp_path / "missing")


def test_too_many_requests_in_flight_get_503_with_retry_after(patch_scorer):
    inj = Injected(patch_scorer, gate_open=False)
    app = app_for(inj, max_concurrent_requests=2, max_wait_ms=0, max_batch_size=1)
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        srv.wait_ready(c)
        held = threading.Thread(target=lambda: asyncio.run(_post_many(srv.url, 2, lambda i: one(f"h{i}.png", i))))
        held.start()
        _wait(lambda: inj.batches >= 1 and 'semgir_requests_in_flight 2.0' in c.get("/metrics").text)
        r = c.post("/v1/score", files=one("over.png"))
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "in flight" in r.json()["detail"]
        assert c.get("/readyz").status_code == 200  # overload is not unreadiness
        inj.gate.set()
        held.join(60)
        assert c.post("/v1/score", files=one("after.png")).status_code == 200


def test_full_queue_gives_503_with_retry_after_and_accepted_work_completes(patch_scorer):
    inj = Injected(patch_scorer, gate_open=False)
    app = app_for(inj, max_queue=4, max_images_per_request=2, max_batch_size=2, max_wait_ms=0)
    state = app.state.semgir
    two = lambda i: [("images", (f"r{i}a.png", png(10 + i), "image/png")),  # noqa: E731
                     ("images", (f"r{i}b.png", png(20 + i), "image/png"))]
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        srv.wait_ready(c)
        out = {}
        t = threading.Thread(target=lambda: out.update(r=asyncio.run(_post_many(srv.url, 3, two))))
        t.start()  # one batch of 2 held in the worker, 4 images queued: the queue is full
        _wait(lambda: inj.batches == 1 and state.batcher.live_depth == 4)
        r = c.post("/v1/score", files=one("over.png"))
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "queued" in r.json()["detail"]
        inj.gate.set()
        t.join(60)
        assert [x.status_code for x in out["r"]] == [200, 200, 200]
        assert all(row["error"] is None for x in out["r"] for row in x.json()["results"])
        assert 'semgir_errors_total{kind="overloaded"} 1.0' in c.get("/metrics").text


def test_systematic_fault_fails_readiness(patch_scorer):
    inj = Injected(patch_scorer, fault=SystematicError("patch_cnn graph is corrupt (injected)"))
    with LiveServer(app_for(inj, max_wait_ms=0)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        srv.wait_ready(c)
        r = c.post("/v1/score", files=one())
        assert r.status_code == 500 and "cannot score" in r.json()["detail"] and "injected" in r.json()["detail"]
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "failed" and "injected" in r.json()["detail"]
        inj.fault = None  # even if the fault went away, a replica that failed systematically stays out
        r = c.post("/v1/score", files=one())
        assert r.status_code == 503 and "retry-after" not in r.headers
        assert c.get("/healthz").status_code == 200 and "semgir_ready 0.0" in c.get("/metrics").text


def test_an_ordinary_batch_failure_keeps_readiness(patch_scorer):
    inj = Injected(patch_scorer, fault=RuntimeError("one bad batch"))
    with LiveServer(app_for(inj, max_wait_ms=0)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        srv.wait_ready(c)
        assert c.post("/v1/score", files=one()).status_code == 500
        assert c.get("/readyz").status_code == 200


def test_drain_answers_requests_in_flight_then_releases_the_models(patch_scorer):
    from semgir_engine.serve import DrainingServer

    inj = Injected(patch_scorer, gate_open=False)
    app = app_for(inj, max_wait_ms=0, max_batch_size=1)
    srv = LiveServer(app, server_cls=DrainingServer)
    with srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        srv.wait_ready(c)
        out = {}
        t = threading.Thread(target=lambda: out.update(r=asyncio.run(
            _post_many(srv.url, 3, lambda i: one(f"d{i}.png", i)))))
        t.start()
        _wait(lambda: 'semgir_requests_in_flight 3.0' in c.get("/metrics").text)
        srv.server.handle_exit(signal.SIGTERM, None)  # what uvicorn's SIGTERM handler calls
        assert app.state.semgir.draining and not app.state.semgir.ready
        inj.gate.set()
        t.join(60)
        srv.thread.join(30)
    assert [r.status_code for r in out["r"]] == [200, 200, 200]
    assert all(r.json()["results"][0]["error"] is None for r in out["r"])
    assert inj.closed and not srv.thread.is_alive()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_to_a_real_service_drains_and_shuts_down_cleanly(tmp_path):
    """`semgir-engine serve` (tiny SemGIR, one image per batch): SIGTERM while requests are in flight.

    uvicorn re-raises the signal once it has shut down, so the exit status is -SIGTERM either way; a
    clean shutdown is told by its log: every request answered, then the lifespan shutdown ran."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "semgir_engine.cli", "serve", "--port", str(port), "--method",
                             "semgir", "--models", "tiny", "--max-batch-size", "1", "--max-wait-ms", "0",
                             "--log-level", "info"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "service did not become ready"
                time.sleep(0.2)
            out = {}
            t = threading.Thread(target=lambda: out.update(r=asyncio.run(
                _post_many(url, 6, lambda i: one(f"s{i}.png", 40 + i)))))
            t.start()
            _wait(lambda: float(re.search(r"^semgir_requests_in_flight (\S+)$", c.get("/metrics").text,
                                          re.M).group(1)) >= 4, 60)
            proc.send_signal(signal.SIGTERM)
            t.join(120)
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert [r.status_code for r in out["r"]] == [200] * 6, err[-2000:]
    assert "draining" in err and "Waiting for application shutdown" in err and "Application shutdown complete" in err
    assert err.index("draining") < err.index("Application shutdown complete")


def test_non_loopback_bind_needs_a_token_or_insecure(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import semgir_engine.serve as serve
    from semgir_engine.cli import main

    started = []
    monkeypatch.setattr(serve.DrainingServer, "run", lambda self, *a, **k: started.append(self.config.host))
    r = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--method", "patch"])
    assert r.exit_code == 1 and "refusing to bind 0.0.0.0" in r.output and "--token-file" in r.output
    assert started == []
    r = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--method", "patch", "--insecure"])
    assert r.exit_code == 0, r.output
    tok = tmp_path / "tok"
    tok.write_text("abc")
    r = CliRunner().invoke(main, ["serve", "--host", "::", "--method", "patch", "--token-file", str(tok)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["serve", "--host", "::1", "--method", "patch"])  # loopback: no token needed
    assert r.exit_code == 0, r.output
    assert started == ["0.0.0.0", "::", "::1"]
    (tmp_path / "empty").write_text("")
    r = CliRunner().invoke(main, ["serve", "--method", "patch", "--token-file", str(tmp_path / "empty")])
    assert r.exit_code == 1 and "one token" in r.output


def test_client_hanging_up_mid_upload_is_not_a_server_error(patch_scorer):
    """Found by the soak: starlette's ClientDisconnect escaped the app (logged as an ASGI error, counted 500)."""
    with LiveServer(app_for(Injected(patch_scorer))) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        srv.wait_ready(c)
        body = (b"--b\r\nContent-Disposition: form-data; name=\"images\"; filename=\"x.png\"\r\n\r\n" + png(3)
                + b"\r\n--b--\r\n")
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
            time.sleep(0.1)
            s.close()
        _wait(lambda: 'semgir_errors_total{kind="client_disconnect"} 3.0' in c.get("/metrics").text)
        m = c.get("/metrics").text
        assert 'status="500"' not in m and 'route="/v1/score",status="499"} 3.0' in m
        assert c.post("/v1/score", files=one()).status_code == 200


def test_a_truncated_export_graph_is_refused_and_the_service_is_not_ready(tmp_path):
    """A real export of the patch detector whose graph was truncated on disk: the service refuses it at
    load (sha256 against the manifest), /readyz says failed with the reason, nothing is scored."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from click.testing import CliRunner

    from semgir_engine.cli import main
    from semgir_engine.serve import create_app

    d = tmp_path / "export"
    r = CliRunner().invoke(main, ["export", "--components", "patch_cnn", "--out", str(d), "--no-progress"])
    assert r.exit_code == 0, r.output
    graph = next(d.rglob("*.onnx"))
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    app = create_app(ScorerConfig(method="patch", backend="onnxruntime", export_dir=str(d)))
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        _wait(lambda: c.get("/readyz").json()["status"] != "loading", 60)
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "failed" and "sha256" in r.json()["detail"]
        assert c.post("/v1/score", files=one()).status_code == 503

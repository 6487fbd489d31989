"""The HTTP service, started for real (uvicorn on a free loopback port) over the tiny SemGIR models.

Checks: readiness before/after load, scores equal the Python API's, concurrent clients get their
own results while batches > 1 form, 400/405/413/415/504 and the service keeps serving after them.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import socket
import threading
import time

import pytest

from conftest import make_image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from semgir_engine.batching import DynamicBatcher  # noqa: E402
from semgir_engine.images import load_image  # noqa: E402
from semgir_engine.results import Result  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def png(seed: int, size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    make_image(seed, size=size).save(buf, "PNG")
    return buf.getvalue()


class LiveServer:
    """uvicorn in a daemon thread on a socket we bound to 127.0.0.1:0."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def wait_ready(self, client, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while client.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("/readyz never became 200")
            time.sleep(0.05)


class _Shared:
    """Hands the session's tiny scorer to the app without letting the app close it."""

    def __init__(self, scorer):
        self._s = scorer

    def __getattr__(self, name):
        return getattr(self._s, name)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def live(tiny_scorer):
    from semgir_engine.scorer import ScorerConfig
    from semgir_engine.serve import create_app

    gate = threading.Event()

    def factory(cfg):  # loading "takes" until the test opens the gate
        if not gate.wait(60):
            raise RuntimeError("gate never opened")
        return _Shared(tiny_scorer)

    app = create_app(ScorerConfig(method="semgir", models="tiny"), max_batch_size=8, max_wait_ms=150,
                     max_body_bytes=400_000, max_pixels=200 * 200, request_timeout_s=60, max_images_per_request=16,
                     scorer_factory=factory)
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        srv.before = {
            "healthz": client.get("/healthz").status_code,
            "readyz": client.get("/readyz"),
            "score": client.post("/v1/score", files=[("images", ("a.png", png(0), "image/png"))]).status_code,
        }
        gate.set()
        srv.wait_ready(client)
        srv.client = client
        yield srv


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("timings_ms", "p_ai")}


def _assert_rows_equal(got: list[dict], want: list[Result]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        wd = w.to_dict()
        assert set(g) == set(wd)
        assert _strip(g) == _strip(wd)
        # batched vs single: the diffusers tier (1e-4); batch composition moves float rounding, never decisions
        assert g["p_ai"] == pytest.approx(wd["p_ai"], abs=1e-4)


def test_readiness_before_and_after_load(live):
    assert live.before["healthz"] == 200
    assert live.before["readyz"].status_code == 503 and live.before["readyz"].json()["status"] == "loading"
    assert live.before["score"] == 503
    r = live.client.get("/readyz")
    assert r.status_code == 200 and r.json()["method"] == "semgir"
    assert live.client.get("/healthz").json() == {"status": "ok"}
    assert "semgir_ready 1.0" in live.client.get("/metrics").text


def test_scores_equal_python_api_multipart_and_json(live, tiny_scorer):
    blobs = [png(i, size=(40 + 8 * i, 48)) for i in range(4)]
    names = [f"img{i}.png" for i in range(4)]
    want = tiny_scorer.score(blobs, names=names)
    assert all(r.ok for r in want)

    r = live.client.post("/v1/score", files=[("images", (n, b, "image/png")) for n, b in zip(names, blobs)])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "semgir" and body["random_weights"] is True
    _assert_rows_equal(body["results"], want)

    payload = {"images": [{"name": n, "data": base64.b64encode(b).decode()} for n, b in zip(names, blobs)]}
    r = live.client.post("/v1/score", json=payload)
    assert r.status_code == 200, r.text
    _assert_rows_equal(r.json()["results"], want)

    r = live.client.post("/v1/score", json={"images": [base64.b64encode(blobs[0]).decode()]})
    assert r.status_code == 200 and r.json()["results"][0]["path"] == "image-0"


def _batch_counts(metrics_text: str) -> tuple[float, float]:
    """(batches of size 1, all batches) from the semgir_batch_size histogram."""
    ones = float(re.search(r'^semgir_batch_size_bucket\{le="1\.0"\} (\S+)$', metrics_text, re.M).group(1))
    total = float(re.search(r"^semgir_batch_size_count (\S+)$", metrics_text, re.M).group(1))
    return ones, total


def test_concurrent_clients_get_their_own_results_while_batches_form(live, tiny_scorer):
    n = 12
    blobs = [png(100 + i) for i in range(n)]
    want = {f"c{i}.png": r for i, r in enumerate(tiny_scorer.score(blobs, names=[f"c{i}.png" for i in range(n)]))}
    ones0, total0 = _batch_counts(live.client.get("/metrics").text)

    async def one(client, i):
        r = await client.post("/v1/score", files=[("images", (f"c{i}.png", blobs[i], "image/png"))])
        return i, r

    async def main():
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            return await asyncio.gather(*(one(client, i) for i in range(n)))

    for i, r in asyncio.run(main()):
        assert r.status_code == 200, r.text
        rows = r.json()["results"]
        _assert_rows_equal(rows, [want[f"c{i}.png"]])
    ones1, total1 = _batch_counts(live.client.get("/metrics").text)
    batches, singles = total1 - total0, ones1 - ones0
    assert batches < n and batches - singles >= 1, f"{batches} batches for {n} requests, {singles} of size 1"


def test_bad_requests_get_4xx_and_the_service_keeps_serving(live):
    c = live.client
    r = c.post("/v1/score", files=[("images", ("ok.png", png(1), "image/png")), ("images", ("bad.jpg", b"nope", "image/jpeg"))])
    assert r.status_code == 400
    body = r.json()
    assert "bad.jpg" in body["detail"] and "not a recognised image" in body["detail"]
    assert body["errors"] == [{"index": 1, "name": "bad.jpg", "error": body["errors"][0]["error"]}]

    truncated = png(2)[:200]
    assert c.post("/v1/score", files=[("images", ("t.png", truncated, "image/png"))]).status_code == 400
    big = png(3, size=(250, 250))  # 62,500 pixels > limit 40,000
    r = c.post("/v1/score", files=[("images", ("big.png", big, "image/png"))])
    assert r.status_code == 400 and "too large" in r.json()["detail"]

    assert c.post("/v1/score", content=b"x" * 500_000, headers={"content-type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(50):
            yield b"x" * 10_000

    assert c.post("/v1/score", content=chunks(), headers={"content-type": "application/json"}).status_code == 413
    r = c.post("/v1/score", json={"images": [base64.b64encode(png(1)).decode()] * 17})
    assert r.status_code == 413 and "per request" in r.json()["detail"]

    assert c.get("/v1/score").status_code == 405
    assert c.put("/v1/score", content=b"").status_code == 405
    assert c.post("/healthz").status_code == 405
    assert c.post("/v1/score", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert c.post("/v1/score", json={"images": ["***not base64***"]}).status_code == 400
    assert c.post("/v1/score", json={"nope": []}).status_code == 400
    assert c.post("/v1/score", json={"images": []}).status_code == 400
    assert c.post("/v1/score", content=b"abc", headers={"content-type": "text/plain"}).status_code == 415

    r = c.post("/v1/score", files=[("images", ("after.png", png(5), "image/png"))])
    assert r.status_code == 200 and r.json()["results"][0]["error"] is None
    metrics = c.get("/metrics").text
    assert re.search(r'^semgir_errors_total\{kind="bad_image"\} [1-9]', metrics, re.M)
    assert re.search(r'^semgir_errors_total\{kind="too_large"\} [1-9]', metrics, re.M)
    assert re.search(r'^semgir_requests_total\{method="POST",route="/v1/score",status="400"\} [1-9]', metrics, re.M)
    assert "semgir_request_latency_seconds_bucket" in metrics


def test_openapi_schema_is_served(live):
    spec = live.client.get("/openapi.json").json()
    op = spec["paths"]["/v1/score"]["post"]
    assert set(op["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"200", "400", "413", "504"} <= set(op["responses"])
    for path in ("/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"]


# -- without models: timeouts, a failing worker, the batcher itself -------------------------------
class _StubScorer:
    """Decodes for real; 'scores' by the image width, slowly when asked to."""

    method, version, random_weights = "stub", "stub-1", True

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.delay, self.fail = delay, fail

    def decode(self, item):
        return load_image(item)

    def score_decoded(self, decoded, names):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        return [Result(path=n, sha256=d.sha256, p_ai=d.size[0] / 1000, label=None, method="stub",
                       model_version="stub-1", random_weights=True) for n, d in zip(names, decoded)]

    def close(self):
        pass


def _stub_app(scorer, **kw):
    from semgir_engine.scorer import ScorerConfig
    from semgir_engine.serve import create_app

    return create_app(ScorerConfig(method="patch"), scorer_factory=lambda cfg: scorer, **kw)


def test_request_timeout_gives_504_and_the_worker_survives():
    stub = _StubScorer(delay=1.0)
    with LiveServer(_stub_app(stub, request_timeout_s=0.3, max_wait_ms=0)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        srv.wait_ready(c)
        r = c.post("/v1/score", files=[("images", ("a.png", png(1), "image/png"))])
        assert r.status_code == 504 and "timeout" in r.json()["detail"]
        stub.delay = 0.0
        time.sleep(1.0)  # the abandoned batch finishes; its result is dropped
        r = c.post("/v1/score", files=[("images", ("b.png", png(1, size=(64, 32)), "image/png"))])
        assert r.status_code == 200 and r.json()["results"][0]["p_ai"] == pytest.approx(0.064)
        assert re.search(r'^semgir_errors_total\{kind="timeout"\} 1\.0', c.get("/metrics").text, re.M)


def test_failing_model_gives_500_and_the_worker_survives():
    stub = _StubScorer(fail=True)
    with LiveServer(_stub_app(stub, max_wait_ms=0)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        srv.wait_ready(c)
        r = c.post("/v1/score", files=[("images", ("a.png", png(1), "image/png"))])
        assert r.status_code == 500 and "model exploded" in r.json()["detail"]
        stub.fail = False
        assert c.post("/v1/score", files=[("images", ("a.png", png(1), "image/png"))]).status_code == 200


def test_failed_load_is_reported_by_readyz():
    def boom(cfg):
        raise RuntimeError("no weights here")

    from semgir_engine.scorer import ScorerConfig
    from semgir_engine.serve import create_app

    with LiveServer(create_app(ScorerConfig(method="patch"), scorer_factory=boom)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        deadline = time.monotonic() + 10
        while (r := c.get("/readyz")).json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.status_code == 503 and "no weights here" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200
        assert c.post("/v1/score", files=[("images", ("a.png", png(1), "image/png"))]).status_code == 503


def test_batcher_routes_results_and_fills_batches():
    sizes: list[int] = []

    def run(payloads, names):
        time.sleep(0.05)
        return [f"{n}:{p * 2}" for p, n in zip(payloads, names)]

    async def main():
        b = DynamicBatcher(run, max_batch_size=4, max_wait_ms=20, on_batch=lambda n, s: sizes.append(n))
        b.start()
        try:
            outs = await asyncio.gather(*(b.submit([i, i + 100], [f"r{i}a", f"r{i}b"]) for i in range(10)))
        finally:
            await b.stop()
        return outs

    outs = asyncio.run(main())
    assert outs == [[f"r{i}a:{2 * i}", f"r{i}b:{2 * (i + 100)}"] for i in range(10)]
    assert sum(sizes) == 20 and max(sizes) == 4 and len(sizes) <= 6


def test_batcher_drops_withdrawn_items():
    seen: list[str] = []

    def run(payloads, names):
        seen.extend(names)
        time.sleep(0.2)
        return list(payloads)

    async def main():
        b = DynamicBatcher(run, max_batch_size=2, max_wait_ms=0)
        b.start()
        try:
            first = asyncio.ensure_future(b.submit([1], ["first"]))
            await asyncio.sleep(0.02)  # `first` is running: the next ones queue
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(b.submit([2], ["withdrawn"]), 0.05)
            kept = await b.submit([3], ["kept"])
            return await first, kept
        finally:
            await b.stop()

    assert asyncio.run(main()) == ([1], [3])
    assert seen == ["first", "kept"]


def test_serve_command_passes_options(monkeypatch):
    from click.testing import CliRunner

    import semgir_engine.serve as serve
    from semgir_engine.cli import main

    got = {}
    monkeypatch.setattr(serve, "run", lambda cfg, **kw: got.update(cfg=cfg, **kw))
    r = CliRunner().invoke(main, ["serve", "--port", "0", "--max-batch-size", "4", "--max-wait-ms", "3",
                                  "--models", "tiny", "--method", "semgir", "--max-pixels", "1000"])
    assert r.exit_code == 0, r.output
    assert got["host"] == "127.0.0.1" and got["port"] == 0 and got["max_batch_size"] == 4
    assert got["max_wait_ms"] == 3 and got["cfg"].models == "tiny" and got["cfg"].max_pixels == 1000


def test_embedding_modules_import_without_heavy_libraries():
    """The batcher, the CLI commands, the Ray and Triton modules import without torch, ray or onnx."""
    import subprocess
    import sys

    code = ("import sys, semgir_engine.batching, semgir_engine.serve_cli, semgir_engine.distributed, "
            "semgir_engine.export.triton, semgir_engine.cli\n"
            "bad = [m for m in ('torch', 'ray', 'onnx', 'onnxruntime', 'fastapi', 'uvicorn') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

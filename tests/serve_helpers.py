"""A live uvicorn server for service tests (in a thread, on a loopback port we bound ourselves)."""

from __future__ import annotations

import io
import socket
import threading
import time

from conftest import make_image


def png(seed: int, size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    make_image(seed, size=size).save(buf, "PNG")
    return buf.getvalue()


class LiveServer:
    """uvicorn in a daemon thread on a socket we bound to 127.0.0.1:0."""

    def __init__(self, app, server_cls=None):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = (server_cls or uvicorn.Server)(uvicorn.Config(app, log_level="warning", lifespan="on"))
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

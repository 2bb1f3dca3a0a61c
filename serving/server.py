"""Run an endpoint's HTTP app with uvicorn, in the foreground or in a background thread."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from serving.endpoint import Endpoint
from serving.http import create_app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve(endpoint: Endpoint, host: str = "127.0.0.1", port: int = 5005, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted (what ``civicml serve`` does)."""
    uvicorn.run(create_app(endpoint), host=host, port=port, log_level=log_level)


class BackgroundServer:
    """A real HTTP server on a loopback port, in a thread: for the demo, notebooks and tests."""

    def __init__(self, endpoint: Endpoint, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(create_app(endpoint), host=host, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="civicml-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

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


LOOPBACK = ("127.0.0.1", "localhost", "::1")
DRAIN_SECONDS = 30


def check_bind(host: str, settings) -> str:
    """Single-user mode has no tokens, so it serves on loopback only; team mode may bind anywhere."""
    if settings.access_configured:
        return "team mode: inference routes need a token with the service role"
    if host not in LOOPBACK:
        from civicml.errors import InvalidInput

        raise InvalidInput(f"single-user mode serves on loopback only (got --host {host}); configure access "
                           f"(team mode, see docs/team-mode.md) to serve other machines")
    return "single-user mode: no tokens; serving on loopback only"


def uvicorn_config(app, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """httptools + uvloop when installed; SIGTERM stops accepting, drains requests in flight, then exits."""
    options = {}
    try:
        import httptools  # noqa: F401

        options["http"] = "httptools"
    except ImportError:
        pass
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, backlog=2048,
                          timeout_graceful_shutdown=DRAIN_SECONDS, **options)


def serve(endpoints: Endpoint | list[Endpoint], host: str = "127.0.0.1", port: int = 5005,
          log_level: str = "info") -> None:
    """Serve in the foreground until SIGTERM/SIGINT (what ``civicml serve`` does)."""
    uvicorn.Server(uvicorn_config(create_app(endpoints), host, port, log_level)).run()


class BackgroundServer:
    """A real HTTP server on a loopback port, in a thread: for the demo, notebooks and tests."""

    def __init__(self, endpoint: Endpoint | list[Endpoint], host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn_config(create_app(endpoint), host, self.port, log_level="warning")
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

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


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other worker processes bind too (SO_REUSEPORT): the kernel spreads new
    connections over them. Any process of the same user could join the port; workers are started by
    ``civicml serve --workers N`` only."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


def serve(endpoints: Endpoint | list[Endpoint], host: str = "127.0.0.1", port: int = 5005,
          log_level: str = "info", reuse_port: bool = False, recorder=None, feedback=None) -> None:
    """Serve in the foreground until SIGTERM/SIGINT (what ``civicml serve`` does); with ``reuse_port``,
    as one of several worker processes on the same port. ``recorder``, ``feedback``: as :func:`create_app`."""
    app = create_app(endpoints, recorder=recorder, feedback=feedback)
    # What was built after the models were loaded and frozen (the recorder's modules and store, the app) is
    # frozen out of the garbage collector's sight too, so that full collections do not walk it again. Measured
    # at c32 it made no difference that showed above the noise (the slowdown a recorder brought was its
    # thread's looks: monitoring.Recording's linger); it is here for what start-up builds, not for a figure.
    from serving.endpoint import _freeze_heap

    _freeze_heap()
    server = uvicorn.Server(uvicorn_config(app, host, port, log_level))
    if reuse_port:
        server.run(sockets=[reuse_port_socket(host, port)])
    else:
        server.run()


def run_workers(command: list[str], workers: int, stable_seconds: float = 15.0) -> int:
    """Run ``workers`` copies of ``command`` (each a ``serve(..., reuse_port=True)`` process) and keep them
    running: SIGTERM/SIGINT is passed on and each worker drains its requests in flight before exit; a
    worker that dies after it was up is started again; one that dies within ``stable_seconds`` of its start
    (it could not load or bind) stops them all, exit status 1."""
    import signal
    import subprocess

    def start() -> tuple[subprocess.Popen, float]:
        return subprocess.Popen(command), time.monotonic()

    procs = [start() for _ in range(workers)]
    stopping = []

    def stop(signum, _frame):
        if not stopping:
            stopping.append(signum)
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while not stopping:
            for i, (proc, started) in enumerate(procs):
                if proc.poll() is None or stopping:
                    continue
                if time.monotonic() - started < stable_seconds:
                    print(f"civicml serve: worker {proc.pid} exited at start (status {proc.returncode}); "
                          f"stopping", flush=True)
                    status = 1
                    stop(signal.SIGTERM, None)
                    break
                print(f"civicml serve: worker {proc.pid} exited (status {proc.returncode}); starting another",
                      flush=True)
                procs[i] = start()
            time.sleep(0.2)
        deadline = time.monotonic() + DRAIN_SECONDS + 15
        for proc, _ in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


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

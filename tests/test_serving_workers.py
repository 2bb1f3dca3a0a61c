"""`civicml serve --workers 2`: two processes on one port, both answering, each following the alias."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import registry
from projects import get_use_case, train
from serving import free_port

NAME = "two-worker-router"
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory, small_requests):
    """Two registered versions of one logreg; the alias 'live' points at version 1."""
    from civicml.settings import Settings

    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("workers") / "home", user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", settings=settings)
    registry.register(result.model_uri, NAME, alias=None, settings=settings)
    registry.register(result.model_uri, NAME, alias=None, settings=settings)
    registry.set_alias(NAME, "live", "1", settings=settings)
    return settings


def _versions_by_worker(url: str, want: int, deadline: float, proc: subprocess.Popen) -> dict[int, str]:
    """Ask /health on new connections (the kernel spreads them over the workers) until ``want`` workers answered."""
    seen: dict[int, str] = {}
    while len(seen) < want:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"only these workers answered: {seen}"
        try:
            health = httpx.get(f"{url}/health", timeout=5).json()
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        seen[health["worker"]] = health["model"]["version"]
        if len(seen) < want:
            time.sleep(0.1)  # a worker still loading: do not keep its sibling busy answering meanwhile
    return seen


@pytest.mark.slow
def test_two_workers_share_the_port_and_follow_the_alias(store):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "CIVICML_HOME": str(store.home)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", f"{NAME}@live", "--port", str(port),
                             "--workers", "2", "--refresh", "0.5"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        first = _versions_by_worker(url, 2, time.monotonic() + 300, proc)
        assert len(first) == 2 and os.getpid() not in first and set(first.values()) == {"1"}
        answer = httpx.post(f"{url}/invocations", json={"dataframe_records": [ROW]}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"

        registry.set_alias(NAME, "live", "2", settings=store)
        deadline = time.monotonic() + 120
        moved: dict[int, str] = {}
        while set(moved) != set(first) or set(moved.values()) != {"2"}:  # every worker moves by itself
            moved.update({pid: v for pid, v in _versions_by_worker(url, 1, deadline, proc).items() if pid in first})
            moved = {pid: v for pid, v in moved.items() if v == "2"}
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

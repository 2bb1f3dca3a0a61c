"""Hostile load (issue 22) over real HTTP: one caller sending the most costly requests the limits admit,
beside steady one-row traffic from a few httpx clients, on a real uvicorn server with a really trained
311 router. Bounded in requests and seconds.

What is asserted is structural, not timed (the test runs on loaded 2-core machines): the small callers
get no errors; the big caller gets 200, or 503 with ``Retry-After``, never another 5xx; small requests are
answered while a big one is still in progress (many of them: before slicing, at most one per small
caller could be, right after the big request's single model call); ``/ping`` answers meanwhile. The
small callers' p99 alone and beside the big caller are printed (``-s``) and recorded in BENCHMARKS.md
by bench/bench_hostile.py.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import httpx
import pytest

import registry
from projects import get_use_case, train
from serving import BackgroundServer, Endpoint

NAME = "hostile-load-router"
CLIENTS = 3
LAX = registry.PromotionPolicy(min_value=0.0, max_regression=1.0)


def _bench():
    """The load generator of bench/bench_hostile.py: one implementation of what is measured."""
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_hostile.py"
    spec = importlib.util.spec_from_file_location("bench_hostile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_requests, requests_holdout):
    from civicml.settings import Settings

    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("hostile-load") / "home", user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", settings=settings)
    registry.register(result.model_uri, NAME, settings=settings)
    assert registry.promote(NAME, requests_holdout.frame, "department", policy=LAX, settings=settings).promoted
    with BackgroundServer(Endpoint(NAME, settings=settings, refresh_seconds=0)) as running:
        yield running


@pytest.mark.slow
def test_small_callers_are_served_while_a_maximal_request_runs(server):
    from civicml.settings import ServingLimits

    bench = _bench()
    limits = ServingLimits.from_env()
    big = bench.big_body(limits.max_cost)
    with httpx.Client(base_url=server.url, timeout=120) as http:  # over the limit: refused up front
        over = http.post("/invocations", content=bench.big_body(limits.max_cost * 2),
                         headers={"content-type": "application/json"})
        assert over.status_code == 413 and "the limit is" in over.json()["message"]

    bench.measure(server.url, CLIENTS, 5)  # warm connections and the batch worker
    alone = bench.summary(bench.measure(server.url, CLIENTS, 40))

    pings: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def probe():
        with httpx.Client(base_url=server.url, timeout=120) as http:
            while not stop.is_set():
                start = time.monotonic()
                status = http.get("/ping").status_code
                pings.append((start, time.monotonic(), status))
                time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        loaded = bench.measure(server.url, CLIENTS, 40, big=big, big_requests=2, seconds=240)
    finally:
        stop.set()
        prober.join(timeout=130)
    beside = bench.summary(loaded)
    print(f"\nsmall callers alone: {alone}\nbeside the big caller: {beside}")

    assert alone["errors"] == 0 and beside["errors"] == 0, (alone, beside)
    assert loaded["big"], "the big caller sent nothing"
    for _, _, status, retry_after in loaded["big"]:
        assert status == 200 or (status == 503 and retry_after and int(retry_after) >= 1), loaded["big"]
    answered = [(start, end) for start, end, status, _ in loaded["big"] if status == 200]
    assert answered, f"no big request was answered: {loaded['big']}"
    # interleaving: while one big request was in progress, the small callers got many answers
    inside = [sum(1 for s, e, st, _ in loaded["small"] if s >= bs and e <= be and st == 200) for bs, be in answered]
    assert max(inside) > 2 * CLIENTS, (inside, beside)
    assert all(status == 200 for *_, status in pings)
    assert any(s >= bs and e <= be for s, e, _ in pings for bs, be in answered), "no /ping inside a big request"

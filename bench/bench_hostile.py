"""Hostile load (issue 22): small callers' latency alone, and beside one caller sending maximal legal requests.

A really trained 311 router (logreg) is served by ``civicml serve`` on 127.0.0.1 (one server process per
configuration). A few httpx clients send steady one-row requests; one more caller sends,
back to back, the most costly request the limits admit (rows of ~9,000 characters, just under
``max_cost``). Three runs, side by side:

  * alone:           the small callers only,
  * big, sliced:     beside the big caller, with the default limits (large requests cut into slices
                     that take turns with other callers' requests),
  * big, one slice:  beside the big caller, with slicing off (``slice_cost`` above ``max_cost``: the
                     big request runs as one model call, as the batcher did before issue 22).

Every run is bounded in requests and seconds. Prints, per run: the small callers' requests, p50, p99,
max (ms) and errors, the big requests' statuses and seconds, and how many small requests were answered
while a big request was in progress.

Run:  .venv/bin/python bench/bench_hostile.py [--clients 3] [--requests 60] [--big-requests 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}
NAME = "hostile-bench-router"
TEXT = 9_000  # characters of one big row's description (the campaign's rows)


def big_body(max_cost: int, text: int = TEXT) -> bytes:
    """The most costly MLflow body the cost limit admits: rows of ``text`` characters, cost just under it."""
    row = {**ROW, "description": ("pothole " * (text // 8 + 1))[:text]}
    per_row = 1 + text + len(ROW["district"]) + len(ROW["channel"])  # serving.batching.row_costs
    return json.dumps({"dataframe_records": [row] * (max_cost // per_row)}).encode()


def measure(url: str, clients: int, requests: int, big: bytes | None = None, big_requests: int = 2,
            seconds: float = 120.0) -> dict:
    """Small callers alone (``requests`` each), or beside a big caller (until its ``big_requests`` are
    answered, at most ``requests * 20`` each). Returns each request's (start, end, status, Retry-After)."""
    small: list[tuple[float, float, int, str | None]] = []
    heavy: list[tuple[float, float, int, str | None]] = []
    done = threading.Event()
    stop_at = time.monotonic() + seconds
    body = json.dumps({"dataframe_records": [ROW]}).encode()
    headers = {"content-type": "application/json"}

    def small_caller():
        with httpx.Client(base_url=url, timeout=seconds) as http:
            count = 0
            limit = requests if big is None else requests * 20
            while count < limit and time.monotonic() < stop_at and not (big is not None and done.is_set()):
                start = time.monotonic()
                response = http.post("/invocations", content=body, headers=headers)
                small.append((start, time.monotonic(), response.status_code, response.headers.get("retry-after")))
                count += 1

    def big_caller():
        try:
            with httpx.Client(base_url=url, timeout=seconds) as http:
                for _ in range(big_requests):
                    if time.monotonic() > stop_at:
                        break
                    start = time.monotonic()
                    response = http.post("/invocations", content=big, headers=headers)
                    heavy.append((start, time.monotonic(), response.status_code,
                                  response.headers.get("retry-after")))
        finally:
            done.set()

    threads = [threading.Thread(target=small_caller) for _ in range(clients)]
    if big is not None:
        threads.insert(0, threading.Thread(target=big_caller))
    for thread in threads:
        thread.start()
        if big is not None and thread is threads[0]:
            time.sleep(0.2)  # the big body is on its way before the small callers start
    for thread in threads:
        thread.join(timeout=seconds + 30)
    return {"small": small, "big": heavy}


def summary(result: dict) -> dict:
    """p50/p99/max (ms) and errors of the small requests; the big requests; small answers inside a big one."""
    small, heavy = result["small"], result["big"]
    times = sorted((end - start) * 1000 for start, end, status, _ in small if status == 200)

    def pct(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    inside = [sum(1 for s, e, _, _ in small if s >= bs and e <= be) for bs, be, status, _ in heavy]
    return {"requests": len(small), "errors": sum(1 for *_, status, _ in small if status != 200),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": times[-1] if times else float("nan"),
            "big": [(status, round(end - start, 2)) for start, end, status, _ in heavy],
            "small_inside_big": inside}


def _serve_model(home: Path):
    import registry
    from civicml.settings import Settings
    from projects import get_use_case, train

    settings = Settings.from_env(env={}, home=home, user="bench")
    use_case = get_use_case("service_requests")
    data = use_case.integrate(use_case.generate_sources(home.parent / "data", n=500, seed=5))
    holdout = use_case.holdout(home.parent / "holdout", n=300)
    result = train(use_case, data, "logreg", settings=settings)
    registry.register(result.model_uri, NAME, settings=settings)
    policy = registry.PromotionPolicy(min_value=0.0, max_regression=1.0)
    assert registry.promote(NAME, holdout.frame, "department", policy=policy, settings=settings).promoted
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--requests", type=int, default=60, help="small requests per client (alone)")
    parser.add_argument("--big-requests", type=int, default=2)
    args = parser.parse_args()

    import os
    import subprocess
    import sys

    from civicml.settings import ServingLimits
    from serving.server import free_port

    limits = ServingLimits.from_env()
    big = big_body(limits.max_cost)
    rows = []
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        settings = _serve_model(Path(tmp) / "home")
        env = {**os.environ, "GLOG_minloglevel": "2", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        runs = [("alone", {}, None), ("big, sliced", {}, big),
                ("big, one slice", {"CIVICML_SERVE_SLICE_COST": str(limits.max_cost * 2)}, big)]
        for label, extra, body in runs:  # `civicml serve` in its own process, as in production
            port = free_port()
            proc = subprocess.Popen([str(bin_dir / "civicml"), "serve", NAME, "--home", str(settings.home),
                                     "--refresh", "0", "--port", str(port)], env={**env, **extra},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 180
                while True:
                    try:
                        if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"civicml serve did not start ({label})")
                    time.sleep(0.3)
                measure(url, args.clients, 5)  # warm the connections and the worker
                rows.append((label, summary(measure(url, args.clients, args.requests, body, args.big_requests))))
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    print(f"big request: {len(big) / 1e6:.1f} MB, cost just under max_cost={limits.max_cost}, "
          f"slice_cost={limits.slice_cost}, deadline={limits.deadline_seconds:g} s; "
          f"{args.clients} small callers (one row each)")
    print(f"{'run':<16} {'small reqs':>10} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  "
          f"big (status, s)                 small answered inside each big")
    for label, s in rows:
        print(f"{label:<16} {s['requests']:>10} {s['errors']:>6} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} "
              f"{s['max_ms']:>8.1f}  {str(s['big']):<31} {s['small_inside_big']}")


if __name__ == "__main__":
    main()

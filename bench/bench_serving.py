"""Serving latency, measured side by side in one run.

Compares, for the same registered 311 model and the same single-row request:
  * the model called in process (mlflow.pyfunc predict: the floor),
  * CivicML's endpoint over HTTP (`civicml serve`: FastAPI + uvicorn, schema and category checks),
  * MLflow's own scoring server (`mlflow models serve --env-manager local`).

Run:  .venv/bin/python bench/bench_serving.py [--requests 300] [--family logreg]
Prints median and p95 latency per path and the ratios between them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROW = {"description": "Huge pothole on Oak Avenue, two flat tires", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def _time_http(url: str, body: dict, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(10):
            client.post("/invocations", json=body).raise_for_status()
        for _ in range(n):
            t = time.perf_counter()
            client.post("/invocations", json=body).raise_for_status()
            out.append(time.perf_counter() - t)
    return out


def _wait_ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server at {url} did not start")
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--family", default="logreg")
    args = parser.parse_args()

    import mlflow.pyfunc
    import pandas as pd

    import registry
    from civicml.settings import Settings
    from projects import get_use_case, train
    from serving import free_port

    tmp = Path(tempfile.mkdtemp(prefix="civicml-bench-"))
    settings = Settings.from_env(env={}, home=tmp / "home")
    use_case = get_use_case("service_requests")
    dataset = use_case.integrate(use_case.generate_sources(tmp / "data", n=1500, seed=1))
    result = train(use_case, dataset, args.family, settings=settings)
    registry.register(result.model_uri, "bench-router", settings=settings)
    holdout = use_case.holdout(tmp / "holdout", n=400)
    registry.promote("bench-router", holdout.frame, "department", settings=settings)
    local = registry.resolve("bench-router", settings=settings)

    model = mlflow.pyfunc.load_model(str(local.path))
    frame = pd.DataFrame([ROW])
    for _ in range(10):
        model.predict(frame)
    direct = []
    for _ in range(args.requests):
        t = time.perf_counter()
        model.predict(frame)
        direct.append(time.perf_counter() - t)

    body = {"dataframe_records": [ROW]}
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    # Both servers run in their own process, as in production, so the client does not share their GIL.
    servers = {
        "CivicML endpoint (HTTP)": [str(bin_dir / "civicml"), "serve", "bench-router", "--home", str(settings.home),
                                    "--refresh", "0", "--port", "{port}"],
        "mlflow models serve (HTTP)": [str(bin_dir / "mlflow"), "models", "serve", "-m", str(local.path),
                                       "--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}", "-w", "1"],
    }
    timings = {}
    for name, command in servers.items():
        port = free_port()
        proc = subprocess.Popen([part.replace("{port}", str(port)) for part in command], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(f"http://127.0.0.1:{port}", proc)
            timings[name] = _time_http(f"http://127.0.0.1:{port}", body, args.requests)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ours, theirs = timings["CivicML endpoint (HTTP)"], timings["mlflow models serve (HTTP)"]

    rows = {"in-process pyfunc": _percentiles(direct), "CivicML endpoint (HTTP)": _percentiles(ours),
            "mlflow models serve (HTTP)": _percentiles(theirs)}
    print(f"single-row latency, {args.requests} sequential requests, family={args.family}")
    print(f"{'path':<30}{'median ms':>12}{'p95 ms':>10}")
    for name, (median, p95) in rows.items():
        print(f"{name:<30}{median:>12.2f}{p95:>10.2f}")
    ours_m, theirs_m = rows["CivicML endpoint (HTTP)"][0], rows["mlflow models serve (HTTP)"][0]
    print(f"ratio mlflow-serve / CivicML (median): {theirs_m / ours_m:.2f}x")
    print(f"ratio CivicML / in-process (median): {ours_m / rows['in-process pyfunc'][0]:.2f}x")
    print(json.dumps({k: {"median_ms": round(v[0], 3), "p95_ms": round(v[1], 3)} for k, v in rows.items()}))


if __name__ == "__main__":
    main()

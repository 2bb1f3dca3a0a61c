"""Serving throughput and latency under load, side by side with MLflow's scoring server, in one run.

For the same registered version of the 311 router (default family logreg), each server runs in its
own process, one after the other, and wrk (a real HTTP load generator: `apt-get install -y wrk`)
sends it single-row requests at concurrency 1, 8 and 32, then 100-row requests at concurrency 8:

  * CivicML: `civicml serve NAME` (adaptive batching, V2 + MLflow protocols),
  * MLflow:  `mlflow models serve -m <the registry's verified copy> --env-manager local`.

Loopback only; every run is bounded by --seconds. Without wrk, a bounded asyncio httpx loop is used
(it is itself slower than wrk; the report says which generator ran).

Run:  .venv/bin/python bench/bench_serving.py [--seconds 10] [--family logreg] [--out bench/results/serving.md]
Prints a table (requests/s, rows/s, p50/p99 ms, non-2xx) and the CivicML / MLflow ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROW = {"description": "Huge pothole on Oak Avenue, two flat tires", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}
NAME = "bench-router"


def _wait_ready(url: str, proc: subprocess.Popen, path: str = "/ping") -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server at {url} did not start")
        time.sleep(0.3)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def _wrk(url: str, body: bytes, connections: int, seconds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = {json.dumps(body.decode())}\n")
        out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s",
                              "--timeout", "10s", "--latency", "-s", str(script), f"{url}/invocations"],
                             capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if set(percentiles) != {"50", "99"}:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"rps": rps, "p50_ms": _ms(percentiles["50"]), "p99_ms": _ms(percentiles["99"]), "requests": total,
            "non_2xx": non2xx, "socket_errors": errors}


def _httpx_loop(url: str, body: bytes, connections: int, seconds: int) -> dict:
    async def run():
        latencies, failures = [], 0
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
            async def worker():
                nonlocal failures
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    try:
                        response = await client.post("/invocations", content=body,
                                                     headers={"content-type": "application/json"})
                        failures += response.status_code >= 300
                    except httpx.HTTPError:
                        failures += 1
                    latencies.append((time.perf_counter() - started) * 1000)
            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.monotonic() - started
        latencies.sort()
        return {"rps": len(latencies) / elapsed, "p50_ms": latencies[len(latencies) // 2],
                "p99_ms": latencies[int(0.99 * (len(latencies) - 1))], "requests": len(latencies),
                "non_2xx": failures, "socket_errors": 0}

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load level (bounded)")
    parser.add_argument("--family", default="logreg")
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels for single-row requests")
    parser.add_argument("--batch-rows", type=int, default=100)
    parser.add_argument("--out", help="also write the table (markdown) here")
    parser.add_argument("--only", choices=("civicml", "mlflow"), help="run one server only")
    args = parser.parse_args()
    generator = "wrk" if shutil.which("wrk") else "httpx-asyncio"
    load = _wrk if generator == "wrk" else _httpx_loop

    import registry
    from civicml.settings import Settings
    from projects import get_use_case, train
    from serving import free_port

    tmp = Path(tempfile.mkdtemp(prefix="civicml-bench-"))
    settings = Settings.from_env(env={}, home=tmp / "home")
    use_case = get_use_case("service_requests")
    dataset = use_case.integrate(use_case.generate_sources(tmp / "data", n=1500, seed=1))
    result = train(use_case, dataset, args.family, settings=settings)
    registry.register(result.model_uri, NAME, settings=settings)
    holdout = use_case.holdout(tmp / "holdout", n=400)
    outcome = registry.promote(NAME, holdout.frame, "department", settings=settings)
    if not outcome.promoted:
        raise SystemExit(f"promotion refused: {outcome.reason}")
    local = registry.resolve(NAME, settings=settings)

    rows = holdout.frame[list(holdout.features)].head(args.batch_rows)
    one = json.dumps({"dataframe_records": [ROW]}).encode()
    batch = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri, "GLOG_minloglevel": "2",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    servers = {
        "civicml": [str(bin_dir / "civicml"), "serve", NAME, "--home", str(settings.home), "--refresh", "0",
                    "--port", "{port}"],
        "mlflow": [str(bin_dir / "mlflow"), "models", "serve", "-m", str(local.path), "--env-manager", "local",
                   "-h", "127.0.0.1", "-p", "{port}"],
    }
    if args.only:
        servers = {args.only: servers[args.only]}
    levels = [int(x) for x in args.levels.split(",")]
    loads = [(f"1 row, c{c}", one, c) for c in levels] + [(f"{args.batch_rows} rows, c8", batch, 8)]
    results: dict[str, dict[str, dict]] = {server: {} for server in servers}
    procs, urls = {}, {}
    try:
        for server, command in servers.items():  # both up at once, idle while the other one is measured
            port = free_port()
            urls[server] = f"http://127.0.0.1:{port}"
            procs[server] = subprocess.Popen([part.replace("{port}", str(port)) for part in command], env=env,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for server, url in urls.items():
            _wait_ready(url, procs[server])
            for _ in range(20):  # same warm start for both
                httpx.post(f"{url}/invocations", content=one, headers={"content-type": "application/json"},
                           timeout=60).raise_for_status()
        for key, body, c in loads:  # interleaved level by level, so that drifting machine load hits both alike
            for server, url in urls.items():
                r = results[server][key] = load(url, body, c, args.seconds)
                if body is batch:
                    r["rows_per_s"] = r["rps"] * args.batch_rows
                print(server, key, r, flush=True)
        if "civicml" in urls:
            metrics = httpx.get(f"{urls['civicml']}/metrics", timeout=10).text
            sums = dict(re.findall(r"^civicml_batch_rows_(sum|count)\{[^}]*\} (\S+)$", metrics, re.M))
            if sums:
                print(f"civicml: {float(sums['count']):.0f} model calls, "
                      f"{float(sums['sum']) / float(sums['count']):.1f} rows per call on average")
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=60)

    lines = [f"family={args.family}, {args.seconds} s per level, load generator: {generator}, "
             f"CPU cores: {os.cpu_count()}", "",
             "| load | server | req/s | rows/s | p50 ms | p99 ms | non-2xx | socket errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for key in next(iter(results.values())):
        for server in results:
            r = results[server][key]
            rows_s = r.get("rows_per_s", r["rps"])
            lines.append(f"| {key} | {server} | {r['rps']:.0f} | {rows_s:.0f} | {r['p50_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | {r['non_2xx']} | {r['socket_errors']} |")
    if len(results) == 2:
        lines += ["", "| load | civicml/mlflow req/s | mlflow p99 / civicml p99 |", "|---|---:|---:|"]
        for key in results["civicml"]:
            ours, theirs = results["civicml"][key], results["mlflow"][key]
            lines.append(f"| {key} | {ours['rps'] / theirs['rps']:.1f}x | {theirs['p99_ms'] / ours['p99_ms']:.1f}x |")
    text = "\n".join(lines)
    print(text)
    print(json.dumps(results))
    if args.out:
        Path(args.out).write_text(f"# bench/bench_serving.py\n\n```\n{' '.join(sys.argv)}\n```\n\n{text}\n")


if __name__ == "__main__":
    main()

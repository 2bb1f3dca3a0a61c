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


def _lua_string(body: bytes) -> str:
    """Any bytes as a Lua string literal (printable ASCII as it is, the rest as decimal escapes)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in body) + '"'


def _wrk(url: str, body: bytes, connections: int, seconds: int, path: str = "/invocations",
         headers: dict | None = None) -> dict:
    headers = headers or {"Content-Type": "application/json"}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text('wrk.method = "POST"\n' + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
                          + f"wrk.body = {_lua_string(body)}\n")
        out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s",
                              "--timeout", "10s", "--latency", "-s", str(script), f"{url}{path}"],
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


def _httpx_loop(url: str, body: bytes, connections: int, seconds: int, path: str = "/invocations",
                headers: dict | None = None) -> dict:
    headers = headers or {"content-type": "application/json"}
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
                        response = await client.post(path, content=body, headers=headers)
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (the workers of `civicml serve --workers N`)."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _tensor_forms(one: bytes) -> dict[str, tuple[bytes, dict]]:
    """The street-scenes image of ``one`` (MLflow's nested ``instances``) in V2's compact forms, which MLflow's
    scoring server does not read: a typed flat FP32 tensor in JSON, and the binary data extension."""
    import numpy as np

    image = np.asarray(json.loads(one)["instances"], dtype=np.float32)
    tensor = {"name": "image", "datatype": "FP32", "shape": list(image.shape)}
    flat = json.dumps({"inputs": [{**tensor, "data": image.reshape(-1).astype(float).tolist()}]}).encode()
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": image.nbytes}}]}).encode()
    return {"V2 JSON FP32": (flat, {"Content-Type": "application/json"}),
            "V2 binary FP32": (header + image.astype("<f4").tobytes(),
                               {"Content-Type": "application/octet-stream",
                                "Inference-Header-Content-Length": str(len(header))})}


def _in_process(call, seconds: float, batch: int = 32) -> tuple[int, float, float]:
    """``call`` (``batch`` rows a call) again and again for about ``seconds``: (rows, wall s, CPU s)."""
    calls, started, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds or calls < 2:
        call()
        calls += 1
    return calls * batch, time.perf_counter() - started, time.process_time() - cpu0


def _batch_rows(url: str) -> tuple[float, float, float]:
    """(rows, model calls, seconds in the model) so far, from the server's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    sums = dict(re.findall(r"^civicml_batch_rows_(sum|count)\{[^}]*\} (\S+)$", text, re.M))
    seconds = re.findall(r"^civicml_batch_seconds_sum\{[^}]*\} (\S+)$", text, re.M)
    return float(sums.get("sum", 0)), float(sums.get("count", 0)), sum(float(x) for x in seconds)


def _side_by_side(url: str, pid: int, body: bytes, model, rounds: int, seconds: float) -> dict:
    """The server at c32 (wrk) and the same model in this process at batch 32 of the same text, alternating
    ``rounds`` times for ``seconds`` each: the encoder alone (tokenizer + network) and the whole pyfunc."""
    import pandas as pd

    inner = model.unwrap_python_model()
    texts = [ROW["description"]] * 32
    encoder = inner.router.encoder.encode if hasattr(inner, "router") else inner.embed
    frame = pd.DataFrame([ROW] * 32)
    calls = {"encoder": lambda: encoder(texts), "pyfunc": lambda: model.predict(frame)}
    for call in calls.values():
        call()
    total = {k: [0, 0.0, 0.0] for k in ("served", *calls)}
    model_rows = model_calls = model_seconds = 0.0
    for _ in range(rounds):
        rows0, batches0, model0 = _batch_rows(url)  # before the CPU count: reading /metrics costs the server CPU
        cpu0 = _cpu_seconds(pid)
        r = _wrk(url, body, 32, int(seconds))
        served = total["served"]
        served[0], served[1], served[2] = served[0] + r["requests"], served[1] + r["requests"] / max(r["rps"], 1e-9), \
            served[2] + _cpu_seconds(pid) - cpu0
        rows1, batches1, model1 = _batch_rows(url)
        model_rows, model_calls = model_rows + rows1 - rows0, model_calls + batches1 - batches0
        model_seconds += model1 - model0
        for name, call in calls.items():
            rows, wall, cpu = _in_process(call, seconds)
            total[name] = [total[name][0] + rows, total[name][1] + wall, total[name][2] + cpu]
    out = {k: {"rows_per_s": v[0] / v[1], "cpu_ms_per_row": v[2] * 1000 / max(v[0], 1)} for k, v in total.items()}
    out["rows_per_call"] = model_rows / max(model_calls, 1)
    # where served rows/s go: the share of the served wall time the model was running (the rest, it waited
    # for the next batch), and its milliseconds a row while running, beside the encoder's in process
    out["model_busy"] = model_seconds / max(total["served"][1], 1e-9)
    out["model_ms_per_row"] = model_seconds * 1000 / max(model_rows, 1)
    return out


def _variant_policy(args):
    """The use case's variant bounds; with ``--no-speed-gate`` its quality bounds only (None: the policy file's).
    On a CPU with AMX the MiniLM router's own bf16 parent runs about as fast as its int8 variant, so the
    policy's speed bound refuses the variant about half the time, and this bench measures serving, not the gate."""
    if not args.no_speed_gate:
        return None
    from dataclasses import replace

    from projects import get_use_case
    from registry.variant_policy import VariantPolicy

    policy = VariantPolicy.from_yaml(get_use_case(args.use_case).policy_file)
    return replace(policy, base={**policy.base, "min_speedup": None},
                   kinds={k: {**v, "min_speedup": None} for k, v in policy.kinds.items()})


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the workers of `civicml serve --workers N`), MB."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024
    return total


def _bad_input_campaign(url: str, pid: int, valid_row: dict, repeats: int) -> dict:
    """Huge bodies, 10,000-row and 10,001-row requests, deep nesting, garbage: status codes and memory."""
    import threading

    big_rows = json.dumps({"dataframe_records": [valid_row] * 10_000}).encode()
    cases = {
        "20 MB body (over the 16 MiB limit)": b'{"dataframe_records": [' + b" " * (20 * 1024 * 1024) + b"]}",
        "10,000 valid rows": big_rows,
        "10,001 rows": json.dumps({"dataframe_records": [valid_row] * 10_001}).encode(),
        "JSON nested 100,000 levels": b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "15 MB of malformed JSON": b'{"dataframe_records": [' + b"x" * (15 * 1024 * 1024),
    }
    peak, stop = [0.0], threading.Event()

    def watch():
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _rss_mb(pid))

    before = _rss_mb(pid)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    codes: dict[str, dict] = {}
    with httpx.Client(base_url=url, timeout=300) as client:
        for name, body in cases.items():
            seen: dict = {}
            for _ in range(repeats):
                try:
                    code = client.post("/invocations", content=body, headers={"content-type": "application/json"},
                                       ).status_code
                except httpx.HTTPError as err:
                    code = type(err).__name__
                seen[code] = seen.get(code, 0) + 1
            codes[name] = seen
    time.sleep(3)
    stop.set()
    watcher.join()
    after = _rss_mb(pid)
    return {"rss_before_mb": round(before, 1), "rss_peak_mb": round(max(peak[0], after), 1),
            "rss_after_mb": round(after, 1), "answers": codes}


def _model(args, tmp: Path, settings):
    """Train and register the benchmarked model; (name to serve, verified local copy, one-row body,
    batch body, a valid row for the bad-input campaign)."""
    import numpy as np

    import registry
    from projects import get_use_case, load_dataset, train

    use_case = get_use_case(args.use_case)
    params = json.loads(args.params) if args.params else None
    if args.use_case == "service_requests":
        dataset = use_case.integrate(use_case.generate_sources(tmp / "data", n=args.rows or 1500, seed=1))
        result = train(use_case, dataset, args.family, params, settings=settings)
        registry.register(result.model_uri, NAME, settings=settings)
        holdout = use_case.holdout(tmp / "holdout", n=400)
        outcome = registry.promote(NAME, holdout.frame, "department", settings=settings)
        if not outcome.promoted:
            raise SystemExit(f"promotion refused: {outcome.reason}")
        rows = holdout.frame[list(holdout.features)].head(args.batch_rows)
        return (NAME, registry.resolve(NAME, settings=settings), json.dumps({"dataframe_records": [ROW]}).encode(),
                json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode(), ROW)
    # the Paddle use cases: served by version number (a benchmark, not a promotion)
    name = f"bench-{args.use_case.replace('_', '-')}"
    dataset = load_dataset(use_case, use_case.generate_sources(tmp / "data", n=args.rows or 3000, seed=1))
    result = train(use_case, dataset, args.family, params, settings=settings)
    version = registry.register(result.model_uri, name, alias=None, settings=settings).version
    _, valid = use_case.split(dataset, seed=0)
    if args.use_case == "street_scenes":
        images = np.stack(valid.X["image"].head(args.batch_rows).to_numpy()).astype(float)
        one = json.dumps({"instances": images[:1].tolist()}).encode()
        batch = json.dumps({"inputs": images.tolist()}).encode()
        return f"{name}@{version}", registry.resolve(name, version, settings=settings), one, batch, None
    rows = valid.X.head(args.batch_rows)
    one = json.dumps({"dataframe_records": json.loads(rows.head(1).to_json(orient="records"))}).encode()
    batch = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
    return (f"{name}@{version}", registry.resolve(name, version, settings=settings), one, batch,
            json.loads(rows.head(1).to_json(orient="records"))[0])


def _probe_encoder(local, texts: list[str], variant_paths: dict) -> list[str]:
    """In process, the MiniLM router's cost per row by batch size: paddle.inference with 1 and 2 math
    threads (one predictor), and each served variant through its pyfunc. Median of 5 calls."""
    import mlflow
    import pandas as pd

    from projects.text_encoder.runtime import InferenceEncoder

    def median_ms(call, repeats=5):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return sorted(times)[len(times) // 2]

    model = mlflow.pyfunc.load_model(str(local.path))
    router = model.unwrap_python_model().router
    folder = Path(router.encoder.program_prefix).parent.parent
    lines = ["| what | precision | batch 1 ms/row | batch 8 ms/row | batch 32 ms/row |", "|---|---|---:|---:|---:|"]
    for threads in (1, 2):
        encoder = InferenceEncoder(router.encoder.program_prefix, folder / "tokenizer.json", router.encoder.max_length,
                                   router.encoder.precision, threads=threads)
        encoder.encode(texts[:32])
        cells = [median_ms(lambda b=b: encoder.encode(texts[:b])) / b for b in (1, 8, 32)]
        lines.append(f"| encoder, paddle.inference, {threads} math thread(s) | {encoder.precision} | "
                     + " | ".join(f"{c:.1f}" for c in cells) + " |")
    frame = pd.DataFrame({"description": texts, "district": "Midtown", "channel": "app", "hour": 8, "weekday": 1})
    for name, path in {"router pyfunc (parent)": local.path, **variant_paths}.items():
        pyfunc = mlflow.pyfunc.load_model(str(path))
        pyfunc.predict(frame.head(32))
        cells = [median_ms(lambda b=b: pyfunc.predict(frame.head(b))) / b for b in (1, 8, 32)]
        lines.append(f"| {name} | - | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load level (bounded)")
    parser.add_argument("--use-case", default="service_requests",
                        choices=("service_requests", "traffic_flow", "street_scenes"))
    parser.add_argument("--family", default="logreg", help="model family (traffic_flow: mlp, street_scenes: cnn)")
    parser.add_argument("--rows", type=int, help="generated rows to train on")
    parser.add_argument("--params", help="training parameters as JSON, e.g. '{\"epochs\": 5}'")
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels for single-row requests")
    parser.add_argument("--batch-rows", type=int, default=100)
    parser.add_argument("--workers", default="1", help="civicml worker processes; several counts (1,2) are "
                                                       "measured as servers of their own, side by side")
    parser.add_argument("--variants", default="", help="compressed variants (e.g. int8) built with "
                                                      "registry.variants.compress and served as servers of their own")
    parser.add_argument("--no-speed-gate", action="store_true", help="variants: the policy's quality bounds only "
                                                                      "(serve a variant not faster than its parent)")
    parser.add_argument("--serve-args", default="", help="more `civicml serve` options, e.g. '--variant int8'")
    parser.add_argument("--bad-input", type=int, default=0, metavar="N",
                        help="then send each bad input N times to each server: status codes and memory")
    parser.add_argument("--probe", action="store_true", help="MiniLM only: the encoder's cost per row by batch "
                                                             "size and math threads, in process, before the servers")
    parser.add_argument("--side-rounds", type=int, default=4, help="MiniLM: rounds of c32 served vs the same model "
                                                                    "in process, alternating (0: none)")
    parser.add_argument("--side-seconds", type=float, default=3, help="seconds of each in one round")
    parser.add_argument("--out", help="also write the table (markdown) here")
    parser.add_argument("--only", choices=("civicml", "mlflow"), help="run one server only")
    args = parser.parse_args()
    generator = "wrk" if shutil.which("wrk") else "httpx-asyncio"
    load = _wrk if generator == "wrk" else _httpx_loop

    from civicml.settings import Settings
    from serving import free_port

    tmp = Path(tempfile.mkdtemp(prefix="civicml-bench-"))
    settings = Settings.from_env(env={}, home=tmp / "home")
    served, local, one, batch, valid_row = _model(args, tmp, settings)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri, "GLOG_minloglevel": "2",
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    servers = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        servers["civicml" if workers == 1 else f"civicml {workers}w"] = [
            str(bin_dir / "civicml"), "serve", served, "--home", str(settings.home), "--refresh", "0",
            "--port", "{port}", "--workers", str(workers), *args.serve_args.split()]
    for kind in filter(None, args.variants.split(",")):
        from registry import compress

        outcome = compress(served.partition("@")[0], local.version.version, kind, settings,
                           repeats={1: 10, 32: 10, 64: 10}, policy=_variant_policy(args))
        print(f"variant {kind}: {'passed' if outcome.passed else 'REFUSED'}", outcome.metrics, flush=True)
        servers[f"civicml {kind}"] = [str(bin_dir / "civicml"), "serve", served, "--home", str(settings.home),
                                      "--refresh", "0", "--port", "{port}", "--variant", kind,
                                      *args.serve_args.split()]
    probe: list[str] = []
    if args.probe:
        variant_paths = {}
        if args.variants:
            import registry
            from registry import find_variant

            for kind in filter(None, args.variants.split(",")):
                found = find_variant(served.partition("@")[0], local.version.version, kind, settings=settings)
                variant_paths[f"{kind} variant pyfunc"] = registry.resolve(found.name, found.version,
                                                                           settings=settings).path
        from projects import get_use_case

        holdout = get_use_case("service_requests").holdout(tmp / "probe", n=64)
        probe = _probe_encoder(local, holdout.frame["description"].astype(str).tolist(), variant_paths)
        print("\n".join(probe), flush=True)
    servers["mlflow"] = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(local.path), "--env-manager", "local",
                         "-h", "127.0.0.1", "-p", "{port}"]
    if args.only:
        servers = {k: v for k, v in servers.items() if k.startswith(args.only)}
    in_process = {}
    if args.family.startswith("minilm") and args.side_rounds:  # the same models in this process (side by side)
        import mlflow

        paths = {"civicml": local.path}
        for kind in filter(None, args.variants.split(",")):
            import registry
            from registry import find_variant

            found = find_variant(served.partition("@")[0], local.version.version, kind, settings=settings)
            paths[f"civicml {kind}"] = registry.resolve(found.name, found.version, settings=settings).path
        in_process = {server: mlflow.pyfunc.load_model(str(path)) for server, path in paths.items()}
    levels = [int(x) for x in args.levels.split(",")]
    loads = [(f"1 row, c{c}", one, c, None) for c in levels] + [(f"{args.batch_rows} rows, c8", batch, 8, None)]
    if args.use_case == "street_scenes":  # CivicML's compact tensor forms (MLflow's server reads neither)
        loads += [(f"1 row, c{max(levels)}, {form}", body_and_headers[0], max(levels), body_and_headers[1])
                  for form, body_and_headers in _tensor_forms(one).items()]
    results: dict[str, dict[str, dict]] = {server: {} for server in servers}
    procs, urls, memory, status_note, compute, side = {}, {}, {}, "", {}, {}
    try:
        for server, command in servers.items():  # both up at once, idle while the other one is measured
            port = free_port()
            urls[server] = f"http://127.0.0.1:{port}"
            procs[server] = subprocess.Popen([part.replace("{port}", str(port)) for part in command], env=env,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for server, url in urls.items():
            _wait_ready(url, procs[server])
            if server.startswith("civicml"):
                compute[server] = httpx.get(f"{url}/health", timeout=10).json().get("compute")
                print(server, "compute path:", compute[server], flush=True)
            for _ in range(20):  # same warm start for both
                httpx.post(f"{url}/invocations", content=one, headers={"content-type": "application/json"},
                           timeout=60).raise_for_status()
        for key, body, c, headers in loads:  # interleaved level by level: drifting machine load hits both alike
            for server, url in urls.items():
                if headers is not None and server == "mlflow":
                    continue
                path = "/invocations" if headers is None else f"/v2/models/{served}/infer"
                cpu = _cpu_seconds(procs[server].pid)
                r = results[server][key] = load(url, body, c, args.seconds, path, headers)
                r["cpu_ms"] = 1000 * (_cpu_seconds(procs[server].pid) - cpu) / max(1, r["requests"])
                if body is batch:
                    r["rows_per_s"] = r["rps"] * args.batch_rows
                print(server, key, r, flush=True)
        for server, model in in_process.items():
            side[server] = _side_by_side(urls[server], procs[server].pid, one, model, args.side_rounds,
                                         args.side_seconds)
            print(server, "side by side", side[server], flush=True)
        if "civicml" in urls:
            metrics = httpx.get(f"{urls['civicml']}/metrics", timeout=10).text
            sums = dict(re.findall(r"^civicml_batch_rows_(sum|count)\{[^}]*\} (\S+)$", metrics, re.M))
            if sums:
                print(f"civicml: {float(sums['count']):.0f} model calls, "
                      f"{float(sums['sum']) / float(sums['count']):.1f} rows per call on average")
            statuses: dict[str, float] = {}
            for status, n in re.findall(r'^civicml_requests_total\{[^}]*status="(\d+)"[^}]*\} (\S+)$', metrics, re.M):
                statuses[status] = statuses.get(status, 0) + float(n)
            status_note = "civicml answers by status (its /metrics): " + ", ".join(
                f"{k}: {v:.0f}" for k, v in sorted(statuses.items()))
            print(status_note, flush=True)
        if args.bad_input and valid_row is not None:
            for server, url in urls.items():
                memory[server] = _bad_input_campaign(url, procs[server].pid, valid_row, args.bad_input)
                print(server, "bad input", memory[server], flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=60)

    lines = [f"use case={args.use_case}, family={args.family}, {args.seconds} s per level, load generator: "
             f"{generator}, CPU cores: {os.cpu_count()}, load average at the end: "
             f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", "",
             "| load | server | req/s | rows/s | p50 ms | p99 ms | non-2xx | socket errors | server CPU ms/request |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in next(iter(results.values())):
        for server in results:
            r = results[server].get(key)
            if r is None:
                continue
            rows_s = r.get("rows_per_s", r["rps"])
            lines.append(f"| {key} | {server} | {r['rps']:.0f} | {rows_s:.0f} | {r['p50_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | {r['non_2xx']} | {r['socket_errors']} | {r['cpu_ms']:.2f} |")
    if side:
        lines += ["", f"Served at c32 (wrk) and the same model in this process at batch 32 of the same text, alternating "
                      f"{args.side_rounds} x {args.side_seconds:g} s each (encoder: tokenizer + network; pyfunc: "
                      f"the whole model as MLflow loads it); CPU: the server process's, this process's:", "",
                  "| server | served rows/s | encoder rows/s | served / encoder | pyfunc rows/s | served CPU ms/row | "
                  "encoder CPU ms/row | pyfunc CPU ms/row | rows per model call | model busy (served) | "
                  "model wall ms/row served / pyfunc in process |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for server, m in side.items():
            lines.append(f"| {server} | {m['served']['rows_per_s']:.0f} | {m['encoder']['rows_per_s']:.0f} | "
                         f"{m['served']['rows_per_s'] / m['encoder']['rows_per_s']:.2f} | "
                         f"{m['pyfunc']['rows_per_s']:.0f} | {m['served']['cpu_ms_per_row']:.2f} | "
                         f"{m['encoder']['cpu_ms_per_row']:.2f} | {m['pyfunc']['cpu_ms_per_row']:.2f} | "
                         f"{m['rows_per_call']:.1f} | {m['model_busy']:.0%} | "
                         f"{m['model_ms_per_row']:.2f} / {1000 / m['pyfunc']['rows_per_s']:.2f} |")
    if "mlflow" in results and len(results) >= 2:
        lines += ["", "| load | server | vs mlflow req/s | mlflow p99 / its p99 | mlflow CPU / its CPU a request |",
                  "|---|---|---:|---:|---:|"]
        for key in next(iter(results.values())):
            # a form MLflow does not read is compared with MLflow's answer to the same image as nested JSON
            theirs = results["mlflow"].get(key) or results["mlflow"][f"1 row, c{max(levels)}"]
            same = "" if key in results["mlflow"] else " (vs mlflow's nested JSON: a form it does not read)"
            for server in results:
                if server == "mlflow" or key not in results[server]:
                    continue
                ours = results[server][key]
                if not theirs["requests"]:
                    lines.append(f"| {key} | {server} | mlflow answered no request in {args.seconds} s | - | - |")
                    continue
                lines.append(f"| {key}{same} | {server} | {ours['rps'] / theirs['rps']:.1f}x | "
                             f"{theirs['p99_ms'] / ours['p99_ms']:.1f}x | "
                             f"{theirs['cpu_ms'] / max(ours['cpu_ms'], 1e-9):.1f}x |")
    if memory:
        lines += ["", "Bad-input campaign (each case sent " + str(args.bad_input) + " times, one after another):", "",
                  "| server | RSS before MB | peak MB | after MB | answers |", "|---|---:|---:|---:|---|"]
        for server, m in memory.items():
            answers = "; ".join(f"{case}: {', '.join(f'{code} x{n}' for code, n in seen.items())}"
                                for case, seen in m["answers"].items())
            lines.append(f"| {server} | {m['rss_before_mb']} | {m['rss_peak_mb']} | {m['rss_after_mb']} | {answers} |")
    if status_note:
        lines += ["", status_note]
    for server, path in compute.items():
        if path:
            lines += ["", f"{server} /health compute: " + ", ".join(
                f"{k}={v}" for k, v in path.items() if k in ("engine", "precision", "kernels", "intra_op_threads"))]
    if probe:
        lines += ["", "MiniLM router in process (median of 5 calls, ms per row):", "", *probe]
    text = "\n".join(lines)
    print(text)
    print(json.dumps(results))
    if args.out:
        Path(args.out).write_text(f"# bench/bench_serving.py\n\n```\n{' '.join(sys.argv)}\n```\n\n{text}\n")


if __name__ == "__main__":
    main()

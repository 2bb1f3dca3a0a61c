"""CivicML's own work per request, beside a bare ASGI app, in one run (issue 26, item 4).

Three servers run at once, each a single process on a loopback port, and wrk sends each single-row 311
requests (MLflow's ``dataframe_records``) at concurrency 32 in alternating rounds (the order rotates each
round, so that the load other processes put on the machine falls on all three alike):

  * bare:     uvicorn (httptools + uvloop, as ``civicml serve`` runs it) and an ASGI function that reads the
              body, parses it with orjson and answers a constant JSON body: what one request costs without
              any serving framework;
  * constant: ``civicml serve`` of a registered pyfunc that answers a constant label per row: CivicML's own
              work (routing, validation, codecs, batching, metrics, answer ids, headers);
  * router:   ``civicml serve`` of the 311 router (logreg, the default family), the real model.

Each round gives a ratio constant/bare and router/constant; the report gives every round and the medians.
The goal (issue 26): constant >= 0.5 x bare, router >= 2/3 x constant.

Run:  .venv/bin/python bench/bench_overhead.py [--seconds 8] [--rounds 4] [--before DIR] [--out bench/results/overhead.md]
With ``--before DIR`` (an earlier commit's files: ``git archive REV | tar -x -C DIR``) that commit's
``civicml serve`` of both models joins the rounds too, in the same venv: before and after in one run.
Without wrk (``apt-get install -y wrk``) a bounded httpx loop is used (slower than wrk; the report says so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import ROW, _httpx_loop, _wait_ready, _wrk  # noqa: E402

BARE_APP = textwrap.dedent('''
    import orjson

    ANSWER = orjson.dumps({"predictions": ["Streets"]})
    HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/invocations":
            orjson.loads(body)
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": ANSWER})
''')

CONSTANT_MODEL = textwrap.dedent('''
    import mlflow
    import numpy as np
    from mlflow.pyfunc import PythonModel


    class Constant(PythonModel):
        """Answers "Streets" for every row: serving's own work, not the model's."""

        def predict(self, context, model_input, params=None):
            return np.full(len(model_input), "Streets", dtype=object)


    mlflow.models.set_model(Constant())
''')


def _register(tmp: Path, settings) -> tuple[str, str]:
    """The 311 router (logreg, promoted to champion) and the constant pyfunc (version 1): what to serve."""
    import pandas as pd
    from mlflow.models import infer_signature

    import mlflow
    import registry
    from civicml.tracking import fluent
    from projects import get_use_case, train

    use_case = get_use_case("service_requests")
    dataset = use_case.integrate(use_case.generate_sources(tmp / "data", n=1500, seed=1))
    result = train(use_case, dataset, "logreg", None, settings=settings)
    registry.register(result.model_uri, "bench-router", settings=settings)
    outcome = registry.promote("bench-router", use_case.holdout(tmp / "holdout", n=400).frame, "department",
                               settings=settings)
    if not outcome.promoted:
        raise SystemExit(f"promotion refused: {outcome.reason}")
    code = tmp / "constant.py"
    code.write_text(CONSTANT_MODEL)
    example = pd.DataFrame([ROW])
    with fluent(settings):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=str(code), input_example=example,
                                           signature=infer_signature(example, ["Streets"]))
    version = registry.register(info.model_uri, "bench-constant", alias=None, settings=settings).version
    return "bench-router", f"bench-constant@{version}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8, help="seconds per server per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--before", metavar="DIR", help="a checkout of an earlier commit (`git archive REV | tar -x "
                                                     "-C DIR`): its `civicml serve` of both models joins the rounds")
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args()
    generator = "wrk" if shutil.which("wrk") else "httpx-asyncio"
    load = _wrk if generator == "wrk" else _httpx_loop

    from civicml.settings import Settings
    from serving import free_port

    tmp = Path(tempfile.mkdtemp(prefix="civicml-overhead-"))
    settings = Settings.from_env(env={}, home=tmp / "home")
    router, constant = _register(tmp, settings)
    (tmp / "bare_app.py").write_text(BARE_APP)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri, "GLOG_minloglevel": "2",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    serve = [str(bin_dir / "civicml"), "serve", "{name}", "--home", str(settings.home), "--refresh", "0",
             "--port", "{port}"]
    commands = {
        "bare": [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(tmp), "--http", "httptools",
                 "--loop", "uvloop", "--no-access-log", "--log-level", "warning", "--port", "{port}"],
        "constant": [part.replace("{name}", constant) for part in serve],
        "router": [part.replace("{name}", router) for part in serve],
    }
    envs = {server: env for server in commands}
    if args.before:  # the same venv, the earlier checkout's packages first on the path
        for server in ("constant", "router"):
            commands[f"{server} (before)"] = commands[server]
            envs[f"{server} (before)"] = {**env, "PYTHONPATH": str(Path(args.before).resolve())}
    one = json.dumps({"dataframe_records": [ROW]}).encode()
    procs, urls = {}, {}
    rounds: list[dict[str, dict]] = []
    try:
        for server, command in commands.items():
            port = free_port()
            urls[server] = f"http://127.0.0.1:{port}"
            procs[server] = subprocess.Popen([p.replace("{port}", str(port)) for p in command], env=envs[server],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for server, url in urls.items():
            _wait_ready(url, procs[server])
            for _ in range(50):
                httpx.post(f"{url}/invocations", content=one, headers={"content-type": "application/json"},
                           timeout=60).raise_for_status()
        order = list(urls)
        for i in range(args.rounds):
            turn = order[i % len(order):] + order[:i % len(order)]
            rounds.append({server: _measured(load, urls[server], procs[server].pid, one, args) for server in turn})
            print(f"round {i + 1}:", {s: round(r["rps"]) for s, r in rounds[-1].items()}, flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=60)
    _report(args, generator, rounds)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measured(load, url: str, pid: int, body: bytes, args) -> dict:
    """One load run, with the server's CPU per answered request: what the machine's other load moves least."""
    before = _cpu_seconds(pid)
    result = load(url, body, args.connections, args.seconds)
    result["cpu_us"] = (_cpu_seconds(pid) - before) * 1e6 / max(result["requests"], 1)
    return result


def _report(args, generator: str, rounds: list[dict[str, dict]]) -> None:
    lines = [f"single-row 311 requests (MLflow dataframe_records), c{args.connections}, {args.seconds} s per server "
             f"per round, {args.rounds} rounds (order rotating), load generator: {generator}, CPU cores: "
             f"{os.cpu_count()}, load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", "",
             "| round | bare req/s | constant req/s | router req/s | constant / bare | router / constant | "
             "p99 ms bare / constant / router | non-2xx |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    ratios: dict[str, list[float]] = {"constant / bare": [], "router / constant": [], "router / bare": []}
    for i, r in enumerate(rounds, 1):
        c, b, t = r["constant"]["rps"], r["bare"]["rps"], r["router"]["rps"]
        ratios["constant / bare"].append(c / b)
        ratios["router / constant"].append(t / c)
        ratios["router / bare"].append(t / b)
        bad = sum(x["non_2xx"] + x["socket_errors"] for x in r.values())
        lines.append(f"| {i} | {b:.0f} | {c:.0f} | {t:.0f} | {c / b:.2f} | {t / c:.2f} | "
                     f"{r['bare']['p99_ms']:.1f} / {r['constant']['p99_ms']:.1f} / {r['router']['p99_ms']:.1f} | "
                     f"{bad} |")
    if "constant (before)" in rounds[0]:
        lines += ["", "| round | constant before req/s | router before req/s | constant before / bare | "
                      "router before / bare | constant now / before | router now / before |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for key in ("constant before / bare", "router before / bare", "constant now / before", "router now / before"):
            ratios[key] = []
        for i, r in enumerate(rounds, 1):
            b, cb, tb = r["bare"]["rps"], r["constant (before)"]["rps"], r["router (before)"]["rps"]
            row = [cb / b, tb / b, r["constant"]["rps"] / cb, r["router"]["rps"] / tb]
            for key, value in zip(list(ratios)[3:], row):
                ratios[key].append(value)
            lines.append(f"| {i} | {cb:.0f} | {tb:.0f} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    servers = list(rounds[0])
    lines += ["", "Server CPU per answered request (µs, user + system, every thread; the ratio that least depends "
                  "on the machine's other load):", "",
              "| round | " + " | ".join(servers) + " |", "|---|" + "---:|" * len(servers)]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | " + " | ".join(f"{r[s]['cpu_us']:.0f}" for s in servers) + " |")
    cpu = {s: statistics.median(r[s]["cpu_us"] for r in rounds) for s in servers}
    lines.append("| median | " + " | ".join(f"{cpu[s]:.0f}" for s in servers) + " |")
    ratios["bare / constant, CPU"] = [cpu["bare"] / cpu["constant"]]
    ratios["constant / router, CPU"] = [cpu["constant"] / cpu["router"]]
    medians = {key: statistics.median(values) for key, values in ratios.items()}
    lines += ["", "medians over the rounds: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()), "",
              f"goal constant >= 0.50 x bare: {'met' if medians['constant / bare'] >= 0.5 else 'NOT met'}; "
              f"goal router >= 2/3 x constant: {'met' if medians['router / constant'] >= 2 / 3 else 'NOT met'}; "
              f"router >= 2/3 x half of bare (0.33 x bare): {'met' if medians['router / bare'] >= 1 / 3 else 'NOT met'}",
              "", "by CPU per request (what the machine's other load moves least; req/s ratios follow the bare app's "
              f"swings on a loaded machine): constant {cpu['bare'] / cpu['constant']:.2f} x bare: "
              f"{'met' if cpu['bare'] / cpu['constant'] >= 0.5 else 'NOT met'}; router {cpu['constant'] / cpu['router']:.2f}"
              f" x constant: {'met' if cpu['constant'] / cpu['router'] >= 2 / 3 else 'NOT met'}"]
    text = "\n".join(lines)
    print(text)
    print(json.dumps(rounds))
    if args.out:
        Path(args.out).write_text(f"# bench/bench_overhead.py\n\n```\n{' '.join(sys.argv)}\n```\n\n{text}\n")


if __name__ == "__main__":
    main()

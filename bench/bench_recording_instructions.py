"""What recording adds to each request, in instructions: `civicml serve --record off | all | sample=0.1` under
valgrind's callgrind, counted on each of the server's threads.

A count of instructions does not move with the machine's load, so it shows a change to the hook or the
recorder's thread that the wall-clock bench (bench/bench_recording.py, req/s at c32) cannot tell from noise;
it does not show what memory, caches or another process cost (that is the wall-clock bench's business).

One registered 311 router (as bench/bench_serving.py makes it) is served by one process a policy, each under
`valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes` with its own home. After a warm-up
(`--warmup` requests), counting is switched on (`callgrind_control -i on`), `--requests` 1-row requests are
sent one at a time (so that every server sees the same batches: one request each), counting is switched off
after the recorder's next look (1.5 s) and the counts are dumped. Printed: each thread's instructions a
request and, beside the first policy's (the baseline), what each policy adds on the event loop's thread (the
main thread: where the hook runs) and on the others (the recorder's thread).

Under valgrind a model call is ~50x slower, so the batcher gives it to its worker thread instead of answering
on the event loop as it does at full speed: the model's instructions are on the worker's line, the same for
every policy.

Needs valgrind (`apt-get install -y valgrind`). Run:
    PYTHONPATH=. .venv/bin/python bench/bench_recording_instructions.py [--requests 2000] [--policies off,all,sample=0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import _model, _wait_ready  # noqa: E402 - bench/ is not a package


def _send(url: str, body: bytes, count: int) -> None:
    async def run():
        async with httpx.AsyncClient(timeout=600) as client:
            for _ in range(count):
                answer = await client.post(f"{url}/invocations", content=body,
                                           headers={"content-type": "application/json"})
                answer.raise_for_status()

    asyncio.run(run())


def _totals(prefix: str) -> dict[int, int]:
    """Instructions counted on each thread (callgrind's per-thread files ``PREFIX.PART-THREAD``, summed by
    ``callgrind_annotate``; a thread that ran nothing while counting is 0)."""
    counts = {}
    for path in glob.glob(f"{prefix}.*-*"):
        thread = int(path.rsplit("-", 1)[1])
        out = subprocess.run(["callgrind_annotate", path], capture_output=True, text=True).stdout
        total = next((line.split()[0].replace(",", "") for line in out.splitlines() if "PROGRAM TOTALS" in line), "")
        counts[thread] = counts.get(thread, 0) + (int(total) if total.isdigit() else 0)
    return counts


def _measure(policy: str, home: Path, served: str, body: bytes, args, out: Path, env: dict) -> dict[int, int]:
    from serving import free_port

    port = free_port()
    prefix = out / f"callgrind.{policy.replace('=', '-')}"
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
               f"--callgrind-out-file={prefix}", sys.executable, str(Path(sys.executable).parent / "civicml"),
               "serve", served, "--home", str(home), "--refresh", "0", "--port", str(port), "--record", policy]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        _send(url, body, args.warmup)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        _send(url, body, args.requests)
        time.sleep(1.5)  # the recorder's next look (every 0.5 s) is these requests' cost too
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    finally:
        proc.terminate()
        proc.wait(timeout=300)
    return _totals(str(prefix))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--policies", default="off,all,sample=0.1", help="record policies, the first the baseline")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("needs valgrind: apt-get install -y valgrind")

    from civicml.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="civicml-bench-instructions-"))
    settings = Settings.from_env(env={}, home=tmp / "home")
    model_args = SimpleNamespace(use_case="service_requests", family="logreg", params=None, rows=None, batch_rows=1)
    served, _, one, _, _ = _model(model_args, tmp, settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(GLOG_minloglevel="2", OMP_NUM_THREADS="1")
    policies = args.policies.split(",")
    counts = {}
    for policy in policies:
        home = tmp / f"home-{policy.replace('=', '-')}"
        shutil.copytree(settings.home, home)
        counts[policy] = _measure(policy, home, served, one, args, tmp, env)
        by_thread = {t: round(c / args.requests) for t, c in sorted(counts[policy].items()) if c}
        print(f"{policy}: instructions a request by thread {by_thread}", flush=True)
    base = counts[policies[0]]
    main_base = base.get(1, 0)
    others_base = sum(c for t, c in base.items() if t != 1)
    print(f"\n{args.requests} 1-row requests one at a time (311 router), instructions a request:\n")
    print("| record | event loop (main thread) | added on the event loop | other threads | added on them | "
          "in all, added |")
    print("|---|---:|---:|---:|---:|---:|")
    for policy in policies:
        main = counts[policy].get(1, 0)
        others = sum(c for t, c in counts[policy].items() if t != 1)
        n = args.requests
        print(f"| {policy} | {main / n:,.0f} | {(main - main_base) / n:+,.0f} | {others / n:,.0f} | "
              f"{(others - others_base) / n:+,.0f} | {(main + others - main_base - others_base) / n:+,.0f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

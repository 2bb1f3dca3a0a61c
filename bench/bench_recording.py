"""What recording served answers costs the hot path: `civicml serve --record off | all | sample=0.1` at c32.

One registered 311 router (as bench/bench_serving.py makes it: logreg, promoted to champion) is served by
three processes, each with its own home (copies of the home the model was registered in, so each writes its
own records store, `HOME/monitoring/records.db`):

  * `civicml serve NAME --record off`        (no recorder: the data plane's hook is skipped),
  * `civicml serve NAME --record all`        (every answered row queued, masked and written to SQLite),
  * `civicml serve NAME --record sample=0.1` (one answer in ten, decided by its id).

All three are up at once and measured one after the other with single-row requests at concurrency 32, in
rounds (the order rotates each round), so that the drifting load of a shared machine hits each alike; a pause
between runs lets a recorder's writer finish its backlog before the next server is measured (and is counted in
that server's CPU). Besides req/s, each run reads the server process's CPU time (user + system, all threads,
from /proc) and, apart, its children's (the recorder's writer process, which masks and writes), and divides them
by the requests answered: CPU a request is what recording adds to each answer, and it
moves much less than req/s with the load of the other processes on a shared machine. The event-loop thread's CPU
during the run (the server's main thread: where recording's hook runs, and what bounds req/s at c32) is read
apart. Load generator: wrk (`apt-get install -y wrk`), else bench_serving's bounded httpx loop. After the servers stop, each home's
store is counted: with `all` every answered request (wrk's and the warm-up's) should be there, so a recorder
that kept up by dropping records would show.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_recording.py [--seconds 10] [--rounds 3] [--policies off,all,sample=0.1]
          [--processes 1] [--pin] [--out bench/results/recording.md]
With ``--processes N`` each policy has N server processes, each measured every round: two identical servers
differ by about 3% of CPU a request (their memory layouts), which a single process a policy reads as the policy's.
Prints each run's req/s, p99 and server CPU ms a request, the medians per policy and their ratios to `off` (goal:
recording costs at most 5% of throughput: req/s ratio >= 0.95, CPU ratio <= 1.05), and the median of the rounds'
paired ratios with a 95% interval (a bootstrap of the rounds: how far the machine's drift lets the median be
trusted). With ``--pin`` the servers run on the first CPU and their writers and the load generator on the second
(``taskset``): what recording costs the server's own core, where a deployment gives the writer a core of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import _httpx_loop, _model, _wait_ready, _wrk  # noqa: E402 - bench/ is not a package

POLICIES = ["off", "all", "sample=0.1"]  # the first is the baseline (--policies)


def _records(home: Path) -> int | None:
    """Records the server of ``home`` stored (None: it stored none, no store file)."""
    from civicml.settings import Settings
    from monitoring import open_store

    settings = Settings.from_env(env={}, home=home)
    if not (home / "monitoring" / "records.db").exists():
        return None
    store = open_store(settings=settings)
    try:
        return store.count()
    finally:
        store.close()


def _cpu_s(pid: int, thread: int | None = None) -> float:
    """CPU seconds (user + system) a process has used so far: every thread's, or one ``thread``'s (its id)."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The running children of a process (the recorder's writer process), from every thread's list."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _children_cpu_s(pid: int) -> float:
    """CPU seconds the running children of a process have used (the recorder's writer process)."""
    total = 0.0
    for child in _children(pid):
        try:
            total += _cpu_s(child)
        except OSError:
            pass
    return total


def _pin_writers(pid: int) -> None:
    """Every thread of the server's children (the recorder's writer process) onto the second CPU (``--pin``)."""
    for child in _children(pid):
        try:
            threads = [int(t.name) for t in Path(f"/proc/{child}/task").iterdir()]
        except OSError:
            continue
        for thread in threads:
            try:
                os.sched_setaffinity(thread, {1})
            except OSError:
                pass


def _waited_cpu_s() -> float:
    """CPU seconds of this process's waited-for children: the load generator's (wrk), once a run is over."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _start(policy: str, home: Path, served: str, env: dict, pin: bool = False):
    from serving import free_port

    port = free_port()
    command = [str(Path(sys.executable).parent / "civicml"), "serve", served, "--home", str(home), "--refresh", "0",
               "--port", str(port), "--record", policy]
    if pin:  # the server and every thread it starts on the first CPU (the writer is moved off it: _pin_writers)
        command = ["taskset", "-c", "0", *command]
    return f"http://127.0.0.1:{port}", subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.DEVNULL)


def _interval(ratios: list[float], resamples: int = 2_000) -> tuple[float, float]:
    """A 95% interval of the median of the rounds' paired ratios (each run against the baseline's run of the same
    round and process): the rounds resampled with replacement (seeded), the 2.5th and 97.5th percentiles of their
    medians. On a shared machine the rounds swing by more than the effect measured; this says how far to trust
    the median."""
    import numpy as np

    values = np.asarray(ratios, dtype=float)
    picks = np.random.default_rng(0).integers(0, len(values), size=(resamples, len(values)))
    medians = np.median(values[picks], axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def _table(args, generator: str, runs: dict, counts: dict, answered: dict) -> str:
    lines = [f"311 router (logreg), 1-row requests at c{args.connections}, {args.seconds} s a run, {args.rounds} "
             f"rounds (order rotating), {args.processes} server process(es) a policy (a, b, ...), load generator: "
             f"{generator}, CPU cores: {os.cpu_count()}"
             f"{', servers on CPU 0, writers and load generator on CPU 1' if args.pin else ''}, "
             f"load average at the start: {args.load_before}, at the end: "
             f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", "",
             "| round | " + " | ".join(f"{p}: req/s, p99 ms, server CPU ms a request" for p in POLICIES) + " |",
             "|---:|" + "---:|" * len(POLICIES)]
    for i in range(args.rounds * args.processes):
        first = runs[POLICIES[0]][i]
        label = f"{first['round']}{'' if args.processes == 1 else chr(97 + first['process'])}"
        lines.append(f"| {label} | " + " | ".join(
            f"{r['rps']:.0f}, {r['p99_ms']:.1f}, {r['cpu_ms']:.3f}" for r in (runs[p][i] for p in POLICIES)) + " |")
    base = POLICIES[0]
    off = statistics.median(r["rps"] for r in runs[base])
    off_cpu = statistics.median(r["cpu_ms"] for r in runs[base])
    lines += ["", f"| record | median req/s | ratio to {base} | each round's ratio to {base} | their median, 95% "
                  f"interval (bootstrap of the rounds) | median server CPU "
                  f"ms a request | CPU ratio to {base} | writer process CPU ms a request | load generator CPU ms a "
                  f"request | cores busy (server + writer + load generator) | event-loop thread CPU ms a request (during "
                  f"the run) | its ratio to {base} | non-2xx | records stored / requests answered |",
              "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    off_loop = statistics.median(r["loop_cpu_ms"] for r in runs[base])
    for p in POLICIES:
        median = statistics.median(r["rps"] for r in runs[p])
        cpu = statistics.median(r["cpu_ms"] for r in runs[p])
        ratios = [r["rps"] / o["rps"] for r, o in zip(runs[p], runs[base])]
        each = ", ".join(f"{x:.3f}" for x in ratios)
        low, high = _interval(ratios)
        stored = "-" if counts[p] is None else f"{counts[p]:,} / {answered[p]:,}"
        writer = statistics.median(r.get("writer_cpu_ms", 0.0) for r in runs[p])
        generator = statistics.median(r.get("load_cpu_ms", 0.0) for r in runs[p])
        loop = statistics.median(r["loop_cpu_ms"] for r in runs[p])
        busy = statistics.median((r["cpu_ms"] + r.get("writer_cpu_ms", 0.0) + r.get("load_cpu_ms", 0.0)) * r["rps"]
                                 / 1000 for r in runs[p])
        lines.append(f"| {p} | {median:.0f} | {median / off:.3f} | {each} | {statistics.median(ratios):.3f} "
                     f"({low:.3f}-{high:.3f}) | {cpu:.3f} | {cpu / off_cpu:.3f} | "
                     f"{writer:.3f} | {generator:.3f} | {busy:.2f} | {loop:.3f} | {loop / off_loop:.3f} | "
                     f"{sum(r['non_2xx'] + r['socket_errors'] for r in runs[p])} | {stored} |")
    if args.processes > 1:
        lines += ["", "| record | " + " | ".join(f"process {chr(97 + k)}: median req/s, CPU ms a request"
                                                  for k in range(args.processes)) + " |",
                  "|---|" + "---:|" * args.processes]
        for p in POLICIES:
            cells = []
            for k in range(args.processes):
                own = [r for r in runs[p] if r["process"] == k]
                cells.append(f"{statistics.median(r['rps'] for r in own):.0f}, "
                             f"{statistics.median(r['cpu_ms'] for r in own):.3f}")
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10, help="seconds a run (bounded)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between runs")
    parser.add_argument("--policies", default=",".join(POLICIES), help="record policies, the first the baseline")
    parser.add_argument("--processes", type=int, default=1,
                        help="server processes a policy (each its own home), all measured every round: two "
                             "identical servers differ by ~3%% of CPU a request, which one process a policy reads "
                             "as the policy's")
    parser.add_argument("--pin", action="store_true",
                        help="each server on the first CPU, its recorder's writer process and the load generator "
                             "on the second (a core the server does not use: what recording costs the hot path "
                             "itself); needs two CPUs and taskset")
    parser.add_argument("--out", help="also write the tables (markdown) here")
    args = parser.parse_args()
    POLICIES[:] = args.policies.split(",")
    args.load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    generator = "wrk" if shutil.which("wrk") else "httpx-asyncio"
    load = _wrk if generator == "wrk" else _httpx_loop

    from civicml.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="civicml-bench-recording-"))
    settings = Settings.from_env(env={}, home=tmp / "home")
    model_args = SimpleNamespace(use_case="service_requests", family="logreg", params=None, rows=None, batch_rows=1)
    served, _, one, _, _ = _model(model_args, tmp, settings)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "GLOG_minloglevel": "2", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_")}
    slots = [(p, k) for k in range(args.processes) for p in POLICIES]  # a server process each
    homes = {}
    for p, k in slots:  # one home each: its own records store (the registry copied with it)
        homes[p, k] = tmp / f"home-{p.replace('=', '-')}-{k}"
        shutil.copytree(settings.home, homes[p, k])
    urls, procs = {}, {}
    runs: dict[str, list[dict]] = {p: [] for p in POLICIES}
    answered = dict.fromkeys(POLICIES, 0)
    try:
        for slot in slots:
            urls[slot], procs[slot] = _start(slot[0], homes[slot], served, env, args.pin)
        if args.pin:
            os.sched_setaffinity(0, {1})  # this process, and so the load generator it starts
        for slot in slots:
            _wait_ready(urls[slot], procs[slot])
            for _ in range(50):  # the same warm start for each
                httpx.post(f"{urls[slot]}/invocations", content=one, headers={"content-type": "application/json"},
                           timeout=60).raise_for_status()
            answered[slot[0]] += 50
        for i in range(args.rounds):
            order = slots[i % len(slots):] + slots[:i % len(slots)]
            for p, k in order:
                pid = procs[p, k].pid
                if args.pin:
                    _pin_writers(pid)
                cpu, writer, generator_cpu = _cpu_s(pid), _children_cpu_s(pid), _waited_cpu_s()
                loop_cpu = _cpu_s(pid, pid)  # the event loop: uvicorn runs it on the server's main thread
                r = load(urls[p, k], one, args.connections, args.seconds)
                r["loop_cpu_ms"] = (_cpu_s(pid, pid) - loop_cpu) * 1000 / max(r["requests"], 1)
                r["load_cpu_ms"] = (_waited_cpu_s() - generator_cpu) * 1000 / max(r["requests"], 1)
                time.sleep(args.pause)  # the writer's backlog is the run's cost too
                r["cpu_ms"] = (_cpu_s(pid) - cpu) * 1000 / max(r["requests"], 1)
                r["writer_cpu_ms"] = (_children_cpu_s(pid) - writer) * 1000 / max(r["requests"], 1)
                r["round"], r["process"] = i + 1, k
                runs[p].append(r)
                answered[p] += r["requests"] - r["non_2xx"]
                print(f"round {i + 1} record={p} process {k}: {r}", flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=120)
    for p in POLICIES:  # each policy's runs in the same order: round, then process
        runs[p].sort(key=lambda r: (r["round"], r["process"]))
    counts = {}
    for p in POLICIES:
        stored = [_records(homes[p, k]) for k in range(args.processes)]
        counts[p] = None if all(c is None for c in stored) else sum(c or 0 for c in stored)
    text = _table(args, generator, runs, counts, answered)
    print(text)
    print(json.dumps(runs))
    if args.out:
        Path(args.out).write_text(f"# bench/bench_recording.py\n\n```\nPYTHONPATH=. {Path(sys.executable).name} "
                                  f"{' '.join(sys.argv)}\n```\n\n{text}\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

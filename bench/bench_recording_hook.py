"""What recording costs the server's process a request, in process: the data plane's hook and the recorder's
thread, CPU counted with `time.process_time` (every thread of this process, not the writer process).

One registered 311 router (as bench/bench_serving.py makes it) answers one 1-row request once; the same answer
(a fresh id each time, as the server gives) is then handed to `DataPlane.record` `--requests` times with the
recorder `civicml serve --record POLICY` builds (app.cli.monitor.serving_recorder: `monitoring.Recording` with
its writer process), and the recorder is closed (everything written). Printed per policy: the hook's CPU a
request, the same with the recorder's thread until close (what the server's process pays in all), and the
writer process's CPU a record (its start-up, about a second, included when it had exited).

Unlike bench/bench_recording.py this does not depend on the machine's load (no HTTP, no other process
competing for the same core): it is the per-request figure that the c32 throughput ratio follows.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_recording_hook.py [--requests 10000] [--policies off,all,sample=0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import _model  # noqa: E402 - bench/ is not a package


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--policies", default="off,all,sample=0.1")
    args = parser.parse_args()

    from app.cli.monitor import serving_recorder
    from civicml.settings import Settings
    from serving import Endpoint
    from serving.codecs import dumps
    from serving.inference import DataPlane, answer_ids
    from serving.limits import Limits
    from serving.metrics import Metrics
    from serving.protocols import MLFLOW, Prediction

    tmp = Path(tempfile.mkdtemp(prefix="civicml-bench-hook-"))
    settings = Settings.from_env(env={}, home=tmp / "home")
    model_args = SimpleNamespace(use_case="service_requests", family="logreg", params=None, rows=None, batch_rows=1)
    served_name, _, one, _, _ = _model(model_args, tmp, settings)
    endpoint = Endpoint(served_name, settings=settings, refresh_seconds=0)
    endpoint.load()

    async def answer():
        decoded = await MLFLOW.decode(endpoint, one, {"content-type": "application/json"})
        return decoded, await endpoint.apredict(decoded.payload, decoded.params)

    decoded, (output, served, loaded) = asyncio.run(answer())
    print(f"{args.requests} requests a policy, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for policy in args.policies.split(","):
        shutil.rmtree(settings.home / "monitoring", ignore_errors=True)
        recorder = None if policy == "off" else serving_recorder([served_name], policy, settings)[0]
        plane = DataPlane([endpoint], Metrics(), Limits(), recorder=recorder)
        predictions = [Prediction(output, served, loaded, [], answer_ids(1)) for _ in range(args.requests)]
        bodies = [MLFLOW.encode(endpoint, decoded, p) for p in predictions]  # the server encodes each answer anyway
        answers = [dumps(body) for body in bodies]  # and writes its bytes
        children = os.times()
        cpu, started = time.process_time(), time.perf_counter()
        for prediction, body, answer in zip(predictions, bodies, answers):
            if plane.recorder is not None and not (  # as DataPlane.infer asks
                    plane.record_request is not None
                    and plane.keep_request(endpoint, decoded.payload, prediction, started, body, one,
                                           "application/json", answer)):
                plane.record(endpoint, decoded.payload, prediction, started, body)
        hook = time.process_time()
        plane.close()
        done, after = time.process_time(), os.times()
        writer = (after.children_user + after.children_system - children.children_user - children.children_system)
        stats = [r.stats() for r in recorder.recorders.values()] if recorder is not None else []
        print(f"{policy:>11}: hook {1e6 * (hook - cpu) / args.requests:5.1f} us CPU a request, with the recorder's "
              f"thread until close {1e6 * (done - cpu) / args.requests:5.1f} us; writer process "
              f"{writer:.2f} s in all ({1e6 * writer / max(sum(s['written'] for s in stats), 1):.0f} us a record "
              f"with its start-up); {stats}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""civicml serve / deploy: live endpoints for registered models, and the files to run them elsewhere."""

from __future__ import annotations

from pathlib import Path

from app.cli.common import add_store_options, settings_from
from civicml.errors import InvalidInput


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="serve models:/NAME@ALIAS over HTTP (MLflow scoring protocol and "
                                     "Open Inference Protocol V2)")
    add_store_options(p)
    p.add_argument("name", nargs="+", help="registered model(s), each NAME or NAME@ALIAS (default alias: --alias); "
                                           "/invocations answers with the first")
    p.add_argument("--alias", default="champion")
    p.add_argument("--runtime", help="runtime by name (default: a --variant's registered runtime, else pyfunc; "
                                     "plugins: entry point group civicml.runtimes)")
    p.add_argument("--variant", help="serve the champion's variant of this kind (onnx, int8, ...)")
    p.add_argument("--host", default="127.0.0.1", help="single-user mode: loopback only")
    p.add_argument("--port", type=int, default=5005)
    p.add_argument("--refresh", type=float, default=2.0, help="seconds between alias checks (0: never)")
    p.add_argument("--max-batch", type=int, default=64, help="most rows merged into one model call")
    p.add_argument("--max-wait-ms", type=float, default=1.0, help="longest wait for more requests to batch")
    p.add_argument("--no-batching", action="store_true", help="one model call per request")
    p.add_argument("--workers", type=int, default=1, help="worker processes on the same port (SO_REUSEPORT), each "
                                                          "with its own copy of the models, each following the "
                                                          "aliases; use at most one per spare core (default 1)")
    p.add_argument("--record", default=None, help="record answered rows, masked by the use case's rules, under "
                                                  "the home: off, all or sample=R (0 < R <= 1); also turns on "
                                                  "POST /feedback (default: the policy's monitoring: record, "
                                                  "else off)")
    p.set_defaults(func=cmd_serve)

    for mode in ("canary", "shadow"):
        verb = "send" if mode == "canary" else "mirror"
        p = sub.add_parser(mode, help=f"{verb} a share of NAME's traffic to a version ({mode}; release managers); "
                                      f"--stop ends it")
        add_store_options(p)
        p.add_argument("name")
        p.add_argument("--version", help="the version to receive the share")
        p.add_argument("--weight", type=float, default=10.0, help="percent of requests (default 10)")
        p.add_argument("--max-error-rate", type=float, default=0.05, help="stop automatically above this share of "
                                                                          "failed requests (default 0.05)")
        p.add_argument("--max-p95-ms", type=float, help="stop automatically above this p95 latency")
        p.add_argument("--window", type=int, default=50, help="requests the limits are judged over (default 50)")
        p.add_argument("--stop", action="store_true", help="end the roll-out now")
        p.set_defaults(func=cmd_rollout, mode=mode)

    p = sub.add_parser("deploy", help="write a container recipe and a KServe InferenceService manifest that "
                                      "run `civicml serve` as a V2 runtime")
    p.add_argument("name", help="registered model name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--image", default="civicml-serve:latest", help="container image name")
    p.add_argument("--tracking-uri", required=True, help="the team's MLflow server the replicas read from")
    p.add_argument("--out", default="deploy", help="folder to write into (default ./deploy)")
    p.add_argument("--replicas", type=int, default=2)
    p.set_defaults(func=cmd_deploy)


def _endpoints(args, settings):
    from serving import Endpoint

    if args.max_batch < 1 or args.max_wait_ms < 0:
        raise InvalidInput("--max-batch must be >= 1 and --max-wait-ms >= 0")
    out = []
    for spec in args.name:
        name, _, alias = spec.partition("@")
        out.append(Endpoint(name, alias=alias or args.alias, runtime=args.runtime, settings=settings,
                            refresh_seconds=args.refresh, variant=args.variant, max_batch=args.max_batch,
                            max_wait_ms=args.max_wait_ms, batching=not args.no_batching))
    return out


def cmd_serve(args) -> int:
    from app.cli.monitor import check_record_policy, record_policies
    from serving.server import check_bind

    settings = settings_from(args)
    if args.record is not None:
        args.record = check_record_policy(args.record)  # one line, before any model is loaded
    mode = check_bind(args.host, settings)
    if args.workers < 1:
        raise InvalidInput("--workers must be at least 1")
    endpoints = _endpoints(args, settings)
    for endpoint in endpoints:
        endpoint.load()  # fail fast, with exit code 2, on an unknown model, alias, variant or runtime
    workers = f", {args.workers} worker processes" if args.workers > 1 else ""
    recorded = {k: v for k, v in record_policies([e.model_name for e in endpoints], args.record, settings).items()
                if v != "off"}
    recording = f", recording {', '.join(f'{k} {v}' for k, v in recorded.items())}" if recorded else ""
    print(f"civicml serve: {', '.join(e.key + ' v' + e.served.version for e in endpoints)} on "
          f"http://{args.host}:{args.port} ({mode}{workers}{recording})", flush=True)
    if args.workers == 1:
        _serve_recorded(endpoints, args, settings)
        return 0
    import json
    import sys

    from serving.server import run_workers

    for endpoint in endpoints:  # each worker loads its own copy
        endpoint.close()
    options = json.dumps({k: v for k, v in vars(args).items() if k != "func"})
    command = [sys.executable, "-c", "import sys; from app.cli.serving import serve_worker; "
                                     "raise SystemExit(serve_worker(sys.argv[1]))", options]
    return run_workers(command, args.workers)


def serve_worker(options: str) -> int:
    """One of ``civicml serve --workers N``'s processes: the same endpoints, on the shared port."""
    import argparse
    import json

    args = argparse.Namespace(**json.loads(options))
    settings = settings_from(args)
    _serve_recorded(_endpoints(args, settings), args, settings, reuse_port=True)
    return 0


def _serve_recorded(endpoints, args, settings, reuse_port: bool = False) -> None:
    """Serve with the recorder and feedback ``--record`` asks for (monitoring's, built here: serving never
    imports it); the recorder is closed at shutdown, writing what it has queued."""
    from app.cli.monitor import serving_recorder
    from serving import serve

    recorder, feedback = serving_recorder([e.model_name for e in endpoints], getattr(args, "record", None),
                                          settings)
    try:
        serve(endpoints, host=args.host, port=args.port, reuse_port=reuse_port, recorder=recorder,
              feedback=feedback)
    finally:
        if recorder is not None:
            recorder.close()


def cmd_rollout(args) -> int:
    from registry import start_rollout, stop_rollout

    settings = settings_from(args)
    if args.stop:
        stopped = stop_rollout(args.name, f"stopped by command ({args.mode} --stop)", settings=settings)
        print(f"{args.name}: {'stopped the ' + stopped.mode + ' of version ' + stopped.version if stopped else 'no roll-out'}")
        return 0
    if not args.version:
        raise InvalidInput(f"civicml {args.mode} needs --version N (or --stop)")
    started = start_rollout(args.name, args.version, args.weight, args.mode, max_error_rate=args.max_error_rate,
                            max_p95_ms=args.max_p95_ms, window=args.window, settings=settings)
    print(f"{args.name}: {started.mode} version {started.version} at {started.weight:g}% of requests "
          f"(stops itself above {started.max_error_rate:.0%} errors"
          f"{f' or p95 {started.max_p95_ms:g} ms' if started.max_p95_ms else ''} over {started.window} requests); "
          f"replicas pick it up within their refresh interval")
    return 0


def cmd_deploy(args) -> int:
    from serving.deploy import write_deployment

    paths = write_deployment(Path(args.out), args.name, alias=args.alias, image=args.image,
                             tracking_uri=args.tracking_uri, replicas=args.replicas)
    for path in paths:
        print(f"wrote {path}")
    return 0

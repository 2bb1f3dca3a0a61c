"""civicml explain / console: why a model answered, and the web console for city staff."""

from __future__ import annotations

import json
from pathlib import Path

from app.cli.common import add_store_options, console, settings_from
from civicml.errors import InvalidInput, NotFound


def add_commands(sub) -> None:
    p = sub.add_parser("explain", help="explain a registered model's answers for rows in a JSON or CSV file")
    add_store_options(p)
    p.add_argument("name", help="registered model name")
    p.add_argument("--input", required=True, metavar="PATH",
                   help="a JSON row, a list of rows, any /invocations body, or a CSV file")
    p.add_argument("--alias", default="champion", help="alias or version to explain (default champion)")
    p.add_argument("--top", type=int, default=6, help="contributions to show per row (default 6)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("console", help="serve the web console: models, versions, audit, try-it, charts, map")
    add_store_options(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5050)
    p.add_argument("--endpoint", action="append", metavar="URL",
                   help="a running CivicML endpoint whose live figures (its /metrics) to show; repeatable "
                        "(default: CIVICML_CONSOLE_ENDPOINTS, comma-separated)")
    p.set_defaults(func=cmd_console)


def read_rows(path: str):
    """Rows from a file: a JSON object (one row), a list of rows, an /invocations body, or CSV."""
    from serving.codecs import MLflowCodec

    file = Path(path)
    if not file.is_file():
        raise NotFound(f"no input file '{path}'")
    body = file.read_bytes()
    if file.suffix.lower() == ".csv":
        return MLflowCodec.decode(body, "text/csv")[0]
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInput(f"{path}: not valid JSON ({err})") from None
    if isinstance(doc, dict) and not any(k in doc for k in ("dataframe_split", "dataframe_records", "instances",
                                                             "inputs")):
        doc = {"dataframe_records": [doc]}
    elif isinstance(doc, list):
        doc = {"dataframe_records": doc}
    return MLflowCodec.decode(json.dumps(doc).encode(), "application/json")[0]


def cmd_explain(args) -> int:
    from civicml.answers import confidence_text
    from serving.explain import explain

    if args.top < 1:
        raise InvalidInput("--top must be at least 1")
    rows = explain(args.name, read_rows(args.input), ref=args.alias, settings=settings_from(args))
    if args.json:
        print(json.dumps([r.to_dict(args.top) for r in rows], indent=2))
        return 0
    out = console()
    model = rows[0].model if rows else {}
    out.print(f"{args.name} version {model.get('version')} ({args.alias}), method: {rows[0].method}", markup=False)
    for i, r in enumerate(rows):
        out.print(f"row {i}: {r.sentence}", markup=False)
        if r.confidence:
            out.print(f"    confidence: {confidence_text(r.confidence)}", markup=False)
        for feature, weight in r.contributions[:args.top]:
            out.print(f"    {weight:+.4f}  {feature}", markup=False)
    return 0


def cmd_console(args) -> int:
    import uvicorn

    from app.console import create_console

    from app.console.live import endpoints_from

    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port must be 1-65535, got {args.port}")
    settings = settings_from(args)
    endpoints = endpoints_from(args.endpoint)  # a bad URL: one line, exit 2, before anything starts
    app = create_console(settings, endpoints)
    console().print(f"CivicML console on http://{args.host}:{args.port}/"
                    + (f" (watching {', '.join(endpoints)})" if endpoints else ""), markup=False)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0

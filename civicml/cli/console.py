"""civicml explain / console: why a model answered, and the web console for city staff."""

from __future__ import annotations

import json
from pathlib import Path

from civicml.cli.common import add_store_options, console, settings_from
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
        for feature, weight in r.contributions[:args.top]:
            out.print(f"    {weight:+.4f}  {feature}", markup=False)
    return 0


def cmd_console(args) -> int:
    import uvicorn

    from civicml.console import create_console

    settings = settings_from(args)
    console().print(f"CivicML console on http://{args.host}:{args.port}/", markup=False)
    uvicorn.run(create_console(settings), host=args.host, port=args.port, log_level="warning")
    return 0

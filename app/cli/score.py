"""civicml score: a registered version run over files on Spark (batch scoring)."""

from __future__ import annotations

import json

from app.cli.common import add_store_options, settings_from, user_stderr
from civicml.errors import InvalidInput


def add_commands(sub) -> None:
    p = sub.add_parser("score", help="score CSV or Parquet files with a registered model on Spark; writes Parquet "
                                     "with each row's answer, the version that gave it, and a rejects file")
    add_store_options(p)
    p.add_argument("name", help="NAME, NAME@ALIAS or NAME/VERSION (default alias: champion)")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="CSV or Parquet files (local, or s3://bucket/key with the artifact store's credentials)")
    p.add_argument("--output", required=True, metavar="PATH", help="the Parquet output (must not exist)")
    p.add_argument("--rejects", metavar="PATH", help="where refused rows go with their reason "
                                                     "(default: OUTPUT's name + .rejects.parquet)")
    p.add_argument("--variant", help="answer with the version's variant of this kind (int8, onnx, ...)")
    p.add_argument("--spark-master", default="local[*]", help="a Spark master URL (default local[*]: started here)")
    p.add_argument("--explain", action="store_true", help="add each row's top three reasons (slower)")
    p.add_argument("--json", action="store_true", help="print the job's summary as JSON")
    p.set_defaults(func=cmd_score)


def model_reference(text: str) -> tuple[str, str]:
    """``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` -> (name, alias or version)."""
    if "@" in text:
        name, _, ref = text.partition("@")
    elif "/" in text:
        name, _, ref = text.rpartition("/")
    else:
        name, ref = text, "champion"
    if not name or not ref:
        raise InvalidInput(f"model '{text}': write NAME, NAME@ALIAS or NAME/VERSION")
    return name, ref


def cmd_score(args) -> int:
    from serving.scoring import ScoreOptions, score

    name, ref = model_reference(args.name)
    settings = settings_from(args)
    err = user_stderr()
    options = ScoreOptions(variant=args.variant, spark_master=args.spark_master, explain=args.explain,
                           rejects=args.rejects)
    result = score(name, ref, args.input, args.output, options, settings=settings,
                   progress=lambda text: print(text, file=err, flush=True))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{result.rows_scored} of {result.rows_in} row(s) scored by {name} version {result.version}"
              f"{f' ({result.variant})' if result.variant else ''} -> {result.output}")
        if result.rows_rejected:
            print(f"{result.rows_rejected} row(s) refused, with the reason -> {result.rejects}")
        print(f"run {result.run_id} (experiment civicml-scoring); audited on '{name}'")
    return 0

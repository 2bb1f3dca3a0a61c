"""civicml init / use-cases: start a use case from a department's file; list the use cases CivicML finds."""

from __future__ import annotations

from app.cli.common import console


def add_commands(sub) -> None:
    p = sub.add_parser("init", help="write NAME/usecase.yaml from a data file: types guessed, personal data flagged")
    p.add_argument("name", help="use case name; the folder NAME/ gets usecase.yaml")
    p.add_argument("--data", required=True, nargs="+", metavar="FILE",
                   help="the department's export (CSV, Parquet or JSON)")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--task", choices=("classification", "regression", "forecasting"),
                   help="default: guessed from the target")
    p.add_argument("--force", action="store_true", help="overwrite an existing usecase.yaml")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("use-cases", help="list use cases: built-in and installed plugins (civicml.use_cases)")
    p.set_defaults(func=cmd_use_cases)


def cmd_init(args) -> int:
    from pathlib import Path

    from projects.tabular.init import schema_lines, write_use_case

    written = write_use_case(args.name, [Path(p) for p in args.data], args.target, task=args.task,
                             force=args.force)
    path = written.path
    out = console()
    for line in schema_lines(written.schema):
        out.print(line, markup=False)
    out.print(f"wrote {path}", markup=False)
    for column, why in written.flagged.items():
        out.print(f"  personal data? '{column}' looks like {why}: set under privacy (drop, hash or mask) "
                  f"before training", markup=False)
    out.print(f"next: edit it, then `civicml data --use-case {path}`", markup=False)
    return 0


def cmd_use_cases(args) -> int:
    from projects import describe_use_cases

    out = console()
    for row in describe_use_cases():
        out.print(f"{row['name']:<24} {row['kind']:<9} {row['origin']}", markup=False)
    out.print("(any use-case YAML works too: --use-case path/to/usecase.yaml)", markup=False)
    return 0

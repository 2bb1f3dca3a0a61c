"""civicml demo: the whole lifecycle on the embedded default."""

from __future__ import annotations

from app.cli.common import add_store_options, console, settings_from, user_stderr


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="generate data, tune, register, promote, serve and route requests")
    add_store_options(p)
    p.add_argument("--rows", type=int, default=3000, help="synthetic requests to generate (default 3000)")
    p.add_argument("--trials", type=int, default=8, help="Optuna trials (default 8)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from app.demo import run_demo

    out = console()
    run_demo(settings_from(args), rows=args.rows, trials=args.trials, seed=args.seed, say=out.print,
             progress=user_stderr())
    return 0

"""civicml retrain: the champion's sources plus its labelled served traffic, tuned warm-started from the
champion's study, registered as the challenger (monitoring.retrain does the work)."""

from __future__ import annotations

import json

from app.cli.common import add_store_options, console, load_data, settings_from, user_stderr


def add_commands(sub) -> None:
    p = sub.add_parser("retrain", help="retrain NAME's champion on its sources plus the labelled served traffic of "
                                       "the most recent window; tune warm-started from the champion's study; "
                                       "register the result as 'challenger'")
    add_store_options(p)
    p.add_argument("name", help="registered model whose champion is retrained (its answers recorded and labelled)")
    p.add_argument("--window", default="7d",
                   help="labelled traffic of the most recent window, ending at the newest labelled answer: 30m, "
                        "12h, 7d, 2w (default 7d)")
    p.add_argument("--trials", type=int, default=5,
                   help="trials of the new study, the warm start first (default 5)")
    p.add_argument("--warm-trials", type=int, default=3,
                   help="best trials of the champion's study enqueued besides the champion's own (default 3)")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="the use case's source files or folders; default: its synthetic sources (the champion's "
                        "use case, from its civicml.use_case tag)")
    p.add_argument("--rows", type=int, default=None, help="rows to generate when --data is not given")
    p.add_argument("--seed", type=int, default=0, help="random seed (data generation, splits, samplers)")
    p.add_argument("--families", help="comma-separated model families (default: all of the use case's)")
    p.add_argument("--space", help="YAML file overriding search spaces, as civicml tune --space")
    p.add_argument("--set", dest="assignments", action="append", metavar="FAMILY.PARAM=SPEC",
                   help="override one parameter of the search space, as civicml tune --set; repeatable")
    p.add_argument("--study", help="study name (default <use case>-retrain-v<champion>-<traffic fingerprint>)")
    p.add_argument("--no-holdout", action="store_true",
                   help="register without the held-out set's card figures, rules and charts")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=cmd_retrain)


def cmd_retrain(args) -> int:
    from app.cli.tune import _spaces
    from civicml.errors import InvalidInput
    from monitoring.retrain import RetrainOptions, champion_of, check_retrain, retrain

    settings = settings_from(args)
    if args.warm_trials < 0:
        raise InvalidInput(f"--warm-trials must be at least 0, got {args.warm_trials}")
    _, use_case = champion_of(args.name, settings)
    families, overrides = _spaces(args, use_case)
    options = RetrainOptions(window=args.window, n_trials=args.trials, warm_trials=args.warm_trials,
                             families=families, overrides=overrides, study_name=args.study or None, seed=args.seed,
                             holdout=not args.no_holdout)
    check_retrain(args.name, options, settings)  # a bad argument or no labelled traffic: one line, nothing made
    dataset = load_data(args, settings, use_case)
    outcome = retrain(args.name, dataset, options, settings=settings, progress=user_stderr())
    if args.json:
        print(json.dumps(outcome.to_dict(), default=str))
    else:
        console().print(outcome.text(), markup=False, highlight=False)
    return 0

"""civicml tune: an Optuna study over a use case's model families; the chosen model is registered."""

from __future__ import annotations

import json

from app.cli.common import add_data_options, add_store_options, console, load_data, settings_from, user_stderr
from civicml.tags import TAG_STUDY, TAG_TRIAL


def add_commands(sub) -> None:
    from tuning import PRUNERS, SAMPLERS

    p = sub.add_parser("tune", help="tune a use case with Optuna; each trial a nested MLflow run")
    add_store_options(p)
    add_data_options(p)
    p.add_argument("--n-trials", type=int, default=10,
                   help="trials this invocation adds to the study, across its workers (default 10)")
    p.add_argument("--study", help="study name; the same name resumes the study (default <use case>-study)")
    p.add_argument("--storage", help="Optuna storage URI: sqlite:///PATH (default, under --home), journal:///PATH "
                                     "(several workers, one machine) or postgresql://... (a team)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine (default 1; more need journal or postgresql storage)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument("--pruner", default="median", choices=PRUNERS)
    p.add_argument("--families", help="comma-separated model families (default: all of the use case's)")
    p.add_argument("--space", help="YAML file overriding search spaces: {family: {param: spec}}")
    p.add_argument("--set", dest="assignments", action="append", metavar="FAMILY.PARAM=SPEC",
                   help="override one parameter: LOW:HIGH[:log][:step=N], a,b,c (choices) or VALUE; repeatable")
    p.add_argument("--show-space", action="store_true", help="print the search space (after overrides) and exit")
    p.add_argument("--objectives", help="comma-separated METRIC[:max|min]; several make a multi-objective study, "
                                        "e.g. macro_f1:max,latency_p95_ms:min (default: the use case's metric)")
    p.add_argument("--select", help="which Pareto-front trial to register: knee (default), or budgets such as "
                                    "latency_p95_ms<=5 (best first objective within them)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--heartbeat-interval", type=int, default=10, help="seconds between a trial's heartbeats")
    p.add_argument("--grace-period", type=int, default=30,
                   help="seconds without a heartbeat after which a trial counts as dead and is retried once")
    p.add_argument("--no-register", action="store_true", help="do not register the chosen model")
    p.add_argument("--holdout", nargs="+", metavar="PATH",
                   help="held-out source files for the registered version's card, rules, charts and map "
                        "(default: the use case's promotion held-out set)")
    p.add_argument("--no-holdout", action="store_true",
                   help="register the chosen model without a held-out set (no rules or charts)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary at the end")
    p.set_defaults(func=cmd_tune)


def _spaces(args, use_case):
    from tuning import load_overrides, parse_assignment

    overrides = {f: dict(s) for f, s in (load_overrides(args.space) if args.space else {}).items()}
    families = [f.strip() for f in args.families.split(",")] if args.families else list(use_case.families)
    declared = {f: use_case.family(f).space for f in families}
    for text in args.assignments or []:
        family, name, param = parse_assignment(text, declared)
        overrides.setdefault(family, {})[name] = param
    return families, overrides or None


def _show_space(out, use_case, families, overrides) -> None:
    from tuning import describe
    from tuning.space import merged_space

    out.print(f"search space of {use_case.name} ({use_case.metric}, {use_case.direction}):")
    if len(families) > 1:
        out.print(f"  family: one of {families}")
    for family in families:
        space = merged_space(family, use_case.family(family).space, overrides)
        changed = set((overrides or {}).get(family, {}))
        for line in describe(space):
            name = line.split(":", 1)[0]
            out.print(f"  {family}.{line}{'   (overridden)' if name in changed else ''}")


def cmd_tune(args) -> int:
    from civicml.errors import InvalidInput
    from projects import get_use_case
    from tuning import Heartbeat, plan_study, tune

    settings = settings_from(args)
    if args.holdout and (args.no_holdout or args.no_register):
        raise InvalidInput(f"--holdout and {'--no-holdout' if args.no_holdout else '--no-register'} exclude each other")
    use_case = get_use_case(args.use_case)
    families, overrides = _spaces(args, use_case)
    study_args = dict(n_trials=args.n_trials, families=families, study_name=args.study or None,
                      storage=args.storage or None, sampler=args.sampler, pruner=args.pruner, overrides=overrides,
                      settings=settings, objectives=args.objectives, select=args.select, workers=args.workers)
    plan = plan_study(use_case, **study_args)  # every argument checked before any data is generated
    if args.show_space:
        _show_space(console(), use_case, plan.families, overrides)
        return 0
    given_holdout = None
    if args.holdout:  # read before any trial runs, so that a bad file stops the command with nothing stored
        from projects import load_dataset

        given_holdout = load_dataset(use_case, [str(f) for f in args.holdout])
    heartbeat = Heartbeat(args.heartbeat_interval, args.grace_period)
    dataset = load_data(args, settings, use_case)
    # progress goes to stderr, with --json too (a bar on a terminal, a line per trial elsewhere): stdout stays JSON
    result = tune(use_case, dataset, seed=args.seed, timeout=args.timeout, progress=user_stderr(),
                  heartbeat=heartbeat, **study_args)
    summary = result.to_dict()
    if result.best_model_uri and not args.no_register:
        from registry import recorded_fidelity, register, registration_holdout

        # The champion's card gets the same rules, charts and map as `civicml register` gives: computed on
        # the held-out set the use case's promotion policy names, never on rows the study trained on.
        held = given_holdout if given_holdout is not None or args.no_holdout else \
            registration_holdout(result.best_model_uri, settings)[1]
        version = register(result.best_model_uri, use_case.registered_model, settings=settings,
                           tags={TAG_STUDY: result.study_name, TAG_TRIAL: str(result.best_trial),
                                 **getattr(use_case, "registry_tags", {})},
                           holdout=None if held is None else held.frame, target=None if held is None else held.target)
        summary["registered"] = {"name": version.name, "version": version.version, "alias": "challenger",
                                 "rules_fidelity": recorded_fidelity(version.name, version.version, settings)}
    elif not args.no_register:
        summary["registered"] = None
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    out = console()
    out.print(f"study {result.study_name}: {result.n_complete} complete, {result.n_pruned} pruned, "
              f"{result.n_failed} failed ({result.n_retried} retried) of {result.n_trials} trials; "
              f"parent run {result.parent_run_id}")
    if result.best_trial is None:
        reason = f" within {result.selection_rule}" if result.selection_rule else ""
        out.print(f"no trial to hand on{reason}")
    else:
        values = ", ".join(f"{o.split(':')[0]} {v:.4g}" for o, v in zip(result.objectives, result.best_values or []))
        front = f" from a Pareto front of {len(result.pareto_front)} ({result.selection_rule})" \
            if len(result.objectives) > 1 else ""
        out.print(f"chosen trial {result.best_trial}{front}: {values}; {result.best_params}")
    if summary.get("registered"):
        fidelity = summary["registered"]["rules_fidelity"]
        out.print(f"registered {use_case.registered_model} version {summary['registered']['version']} "
                  f"as 'challenger'" + (f"; rules fidelity {fidelity} on its held-out set" if fidelity else ""))
    return 0


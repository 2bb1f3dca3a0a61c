"""civicml tune: an Optuna study over a use case's model families; the best model is registered."""

from __future__ import annotations

import json

from civicml.cli.common import add_data_options, add_store_options, console, load_data, settings_from


def add_commands(sub) -> None:
    from tuning import PRUNERS, SAMPLERS

    p = sub.add_parser("tune", help="tune a use case with Optuna; each trial a nested MLflow run")
    add_store_options(p)
    add_data_options(p)
    p.add_argument("--n-trials", type=int, default=10, help="trials to run in this invocation (default 10)")
    p.add_argument("--study", help="study name; the same name resumes the study (default <use case>-study)")
    p.add_argument("--storage", help="Optuna storage URI (default sqlite under --home; postgresql://... for teams)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument("--pruner", default="median", choices=PRUNERS)
    p.add_argument("--families", help="comma-separated model families (default: all of the use case's)")
    p.add_argument("--space", help="YAML file overriding search spaces: {family: {param: spec}}")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--no-register", action="store_true", help="do not register the best model")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary at the end")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    from projects import get_use_case
    from registry import register
    from tuning import load_overrides, tune

    settings = settings_from(args)
    use_case = get_use_case(args.use_case)
    families = [f.strip() for f in args.families.split(",")] if args.families else None
    overrides = load_overrides(args.space) if args.space else None
    dataset = load_data(args, settings, use_case)
    result = tune(use_case, dataset, n_trials=args.n_trials, families=families, study_name=args.study,
                  storage=args.storage, sampler=args.sampler, pruner=args.pruner, seed=args.seed,
                  timeout=args.timeout, overrides=overrides, settings=settings, progress=not args.json)
    summary = result.to_dict()
    if result.best_model_uri and not args.no_register:
        version = register(result.best_model_uri, use_case.registered_model, settings=settings,
                           tags={"civicml.study": result.study_name})
        summary["registered"] = {"name": version.name, "version": version.version, "alias": "challenger"}
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        out = console()
        out.print(f"study {result.study_name}: {result.n_complete} complete, {result.n_pruned} pruned, "
                  f"{result.n_failed} failed; best {use_case.metric} {result.best_value:.4f} "
                  f"(trial {result.best_trial}, {result.best_params})")
        if "registered" in summary:
            out.print(f"registered {use_case.registered_model} version {summary['registered']['version']} "
                      f"as 'challenger'")
    return 0

"""civicml data / train: department files in, a tracked model out."""

from __future__ import annotations

import json

from app.cli.common import add_data_options, add_store_options, console, load_data, parse_params, settings_from


def add_commands(sub) -> None:
    p = sub.add_parser("data", help="generate synthetic department sources, or integrate your own")
    add_store_options(p)
    add_data_options(p)
    p.add_argument("--out", help="folder to write generated sources to (default under --home)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train one model family and track it in MLflow")
    add_store_options(p)
    add_data_options(p)
    p.add_argument("--family", default=None, help="model family (default: the use case's first)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="hyper-parameter, repeatable")
    p.add_argument("--experiment", help="MLflow experiment (default: the use case name)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=cmd_train)


def cmd_data(args) -> int:
    from pathlib import Path

    from projects import get_use_case, load_dataset

    settings = settings_from(args)
    use_case = get_use_case(args.use_case)
    if args.data:
        dataset = load_dataset(use_case, args.data)
    elif hasattr(use_case, "spec"):  # a use-case file: its own sources, its report (projects.tabular)
        from projects.tabular import report_lines

        dataset = load_dataset(use_case, use_case.generate_sources(None))
        console().print("\n".join([f"{use_case.name}: {len(dataset)} rows, fingerprint "
                                   f"{dataset.fingerprint[:16]}", *report_lines(dataset)]), markup=False)
        return 0
    else:
        rows = args.rows or use_case.default_size
        folder = Path(args.out) if args.out else settings.ensure_home() / "data" / use_case.name / f"n{rows}-seed{args.seed}"
        paths = use_case.generate_sources(folder, n=rows, seed=args.seed)
        console().print(f"wrote {', '.join(str(p) for p in paths)}")
        dataset = load_dataset(use_case, paths)
    out = console()
    out.print(f"{use_case.name}: {len(dataset)} rows, fingerprint {dataset.fingerprint[:16]}")
    for key, value in dataset.report.items():
        out.print(f"  {key}: {value}")
    return 0


def cmd_train(args) -> int:
    from projects import get_use_case
    from projects.training import check_training, train

    settings = settings_from(args)
    use_case = get_use_case(args.use_case)
    params = parse_params(args.param)
    family, _ = check_training(use_case, args.family, params, settings)  # before any data is generated
    dataset = load_data(args, settings, use_case)
    result = train(use_case, dataset, family, params, settings=settings, experiment=args.experiment, seed=args.seed)
    if args.json:
        print(json.dumps({"run_id": result.run_id, "model_uri": result.model_uri, "metrics": result.metrics,
                          "params": result.params}, default=str))
    else:
        console().print(f"run {result.run_id}: {use_case.metric} = {result.metrics.get(use_case.metric):.4f}; "
                        f"model {result.model_uri}")
    return 0

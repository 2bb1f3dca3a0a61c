"""civicml register / promote / rollback / audit / models / serve: the release manager's commands."""

from __future__ import annotations

import json

from civicml.cli.common import add_store_options, console, holdout_for, settings_from


def add_commands(sub) -> None:
    p = sub.add_parser("register", help="register a logged model as a new version")
    add_store_options(p)
    p.add_argument("model_uri", help="e.g. runs:/<run id>/model or models:/m-...")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", default="challenger", help="alias to set on the new version (default challenger)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("promote", help="move 'champion' to a candidate if the promotion policy passes")
    add_store_options(p)
    p.add_argument("name", help="registered model name")
    p.add_argument("--from", dest="from_alias", default="challenger", help="alias or version to promote")
    p.add_argument("--to", dest="to_alias", default="champion", help="alias to move (default champion)")
    p.add_argument("--policy", help="policy YAML (default: the use case's policy.yaml)")
    p.add_argument("--holdout", nargs="+", metavar="PATH", help="held-out source files (default: the use case's)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="return 'champion' to the version it had before its last promotion")
    add_store_options(p)
    p.add_argument("name")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("audit", help="print the audit trail of a registered model")
    add_store_options(p)
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("models", help="list registered models, show versions, print lineage")
    models = p.add_subparsers(dest="models_command", required=True, parser_class=type(p))
    q = models.add_parser("list", help="registered models and their aliases")
    add_store_options(q)
    q.set_defaults(func=cmd_models_list)
    q = models.add_parser("show", help="versions of a model with aliases, lineage and metrics")
    add_store_options(q)
    q.add_argument("name")
    q.set_defaults(func=cmd_models_show)
    q = models.add_parser("lineage", help="the chain behind one version")
    add_store_options(q)
    q.add_argument("name")
    q.add_argument("version")
    q.set_defaults(func=cmd_models_lineage)

    p = sub.add_parser("serve", help="serve models:/NAME@ALIAS over HTTP (MLflow scoring protocol)")
    add_store_options(p)
    p.add_argument("name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--runtime", default="pyfunc", help="serving variant (default pyfunc)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5005)
    p.add_argument("--refresh", type=float, default=10.0, help="seconds between alias checks (0: never)")
    p.set_defaults(func=cmd_serve)


def _use_case_of(name: str, settings):
    from projects import get_use_case
    from registry import versions

    for version in reversed(versions(name, settings=settings)):
        if "civicml.use_case" in version.tags:
            return get_use_case(version.tags["civicml.use_case"])
    from civicml.errors import NotFound

    raise NotFound(f"model '{name}' records no use case; pass --holdout files and --policy")


def cmd_register(args) -> int:
    from registry import register

    version = register(args.model_uri, args.name, alias=args.alias, settings=settings_from(args))
    console().print(f"registered {version.name} version {version.version} (sha256 {version.sha256[:12]}...)"
                    + (f" as '{args.alias}'" if args.alias else ""))
    return 0


def cmd_promote(args) -> int:
    from pathlib import Path

    from registry import PromotionPolicy, promote

    settings = settings_from(args)
    use_case = _use_case_of(args.name, settings)
    policy_file = args.policy or getattr(use_case, "policy_file", None)
    policy = PromotionPolicy.from_yaml(policy_file) if policy_file and Path(policy_file).exists() else PromotionPolicy()
    holdout = holdout_for(use_case, settings, args.holdout)
    outcome = promote(args.name, holdout.frame, holdout.target, policy=policy, from_alias=args.from_alias,
                      to_alias=args.to_alias, settings=settings)
    out = console()
    for v in outcome.verdicts:
        out.print(f"  [{'green' if v.passed else 'red'}]{'PASS' if v.passed else 'FAIL'}[/] {v.gate}: {v.detail}")
    if outcome.promoted:
        out.print(f"promoted {args.name} version {outcome.candidate} to '{args.to_alias}' "
                  f"(was {outcome.previous or 'none'})")
        return 0
    out.print(f"refused: {args.name} version {outcome.candidate} stays off '{args.to_alias}'; "
              f"'{args.to_alias}' is still {outcome.previous or 'unset'}")
    return 1


def cmd_rollback(args) -> int:
    from registry import rollback

    old, new = rollback(args.name, settings=settings_from(args))
    console().print(f"rolled back {args.name} 'champion': version {old} -> {new}")
    return 0


def cmd_audit(args) -> int:
    from registry import audit

    records = audit(args.name, settings=settings_from(args))
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    out = console()
    for r in records:
        gates = "; ".join(f"{g['gate']}={'pass' if g['passed'] else 'FAIL'}" for g in r.get("gates", []))
        out.print(f"{r['when']}  {r['action']:<8} by {r['who']}: {r.get('from') or '-'} -> "
                  f"{r.get('to') or r.get('version')}  {gates}")
    return 0


def cmd_models_list(args) -> int:
    from registry import ModelStore

    store = ModelStore(settings_from(args))
    out = console()
    for name in store.models():
        aliases = store.get_model(name).aliases or {}
        out.print(f"{name}  " + ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())))
    return 0


def cmd_models_show(args) -> int:
    from registry import versions

    out = console()
    for v in versions(args.name, settings=settings_from(args)):
        out.print(f"v{v.version}  aliases={','.join(v.aliases) or '-'}  family={v.tags.get('civicml.family', '-')}  "
                  f"run={v.run_id}  by={v.tags.get('civicml.registered_by', '-')}  "
                  f"data={v.tags.get('civicml.data_fingerprint', '-')[:12]}  code={v.tags.get('civicml.code_version', '-')[:10]}")
    return 0


def cmd_models_lineage(args) -> int:
    from registry import lineage

    print(json.dumps(lineage(args.name, args.version, settings=settings_from(args)), indent=2, default=str))
    return 0


def cmd_serve(args) -> int:
    from serving import Endpoint, serve

    endpoint = Endpoint(args.name, alias=args.alias, runtime=args.runtime, settings=settings_from(args),
                        refresh_seconds=args.refresh)
    endpoint.load()  # fail fast, with exit code 2, on an unknown model, alias or runtime
    serve(endpoint, host=args.host, port=args.port)
    return 0

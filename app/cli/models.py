"""civicml register / promote / rollback / audit / models / serve: the release manager's commands."""

from __future__ import annotations

import functools
import json
import logging

from civicml.access import ROLES
from app.cli.common import add_store_options, console, settings_from, user_stderr


def _says_notices(command):
    """Print the registry's notices (a half-registered version removed, files added beside a model) as one
    ``civicml: note:`` line each on the user's stderr (not the libraries' captured one) while ``command`` runs."""

    @functools.wraps(command)
    def run(args) -> int:
        handler = logging.StreamHandler(user_stderr())
        handler.setFormatter(logging.Formatter("civicml: note: %(message)s"))
        handler.setLevel(logging.WARNING)
        logger = logging.getLogger("civicml.registry")
        logger.addHandler(handler)
        propagate, logger.propagate = logger.propagate, False
        try:
            return command(args)
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate

    return run


def add_commands(sub) -> None:
    p = sub.add_parser("register", help="register a logged model as a new version")
    add_store_options(p)
    p.add_argument("model_uri", help="e.g. runs:/<run id>/model or models:/m-...")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", default="challenger", help="alias to set on the new version (default challenger)")
    p.add_argument("--holdout", nargs="+", metavar="PATH",
                   help="held-out source files for the card, rules, charts and map (default: the use case's)")
    p.add_argument("--no-holdout", action="store_true", help="register without a held-out set (no rules or charts)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("alias", help="point an alias (challenger, or any name but champion) at a version "
                                     "(data scientists)")
    add_store_options(p)
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version")
    p.set_defaults(func=cmd_alias)

    p = sub.add_parser("approve", help="approve a version for promotion (release managers)")
    add_store_options(p)
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("--note", help="why (recorded in the audit trail)")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("promote", help="move 'champion' to a candidate if the promotion policy passes")
    add_store_options(p)
    p.add_argument("name", help="registered model name")
    p.add_argument("--from", dest="from_alias", default="challenger", help="alias or version to promote")
    p.add_argument("--to", dest="to_alias", default="champion", help="alias to move (default champion)")
    p.add_argument("--policy", help="a policy YAML instead of the model's governing policy (needs the "
                                    "override_policy permission; shown in the report and audited)")
    p.add_argument("--holdout", nargs="+", metavar="PATH", help="held-out source files (default: the use case's)")
    p.add_argument("--force", action="store_true", help="promote even if the candidate breaks the input contract "
                                                        "of the alias's clients (needs force_promote; audited)")
    p.add_argument("--reason", help="why (recorded in the audit trail; expected with --force)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="return 'champion' to the version it had before its last promotion")
    add_store_options(p)
    p.add_argument("name")
    p.add_argument("--reason", help="why (recorded in the audit trail)")
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
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_models_show)
    q = models.add_parser("lineage", help="the chain behind one version")
    add_store_options(q)
    q.add_argument("name")
    q.add_argument("version")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_models_lineage)
    q = models.add_parser("card", help="print the model card of one version (Markdown)")
    add_store_options(q)
    q.add_argument("name")
    q.add_argument("version")
    q.set_defaults(func=cmd_models_card)

    p = sub.add_parser("whoami", help="who the current token (or single-user mode) says you are")
    add_store_options(p)
    p.set_defaults(func=cmd_whoami, light=True)

    p = sub.add_parser("token", help="make a new token for an access file (prints it once)")
    p.add_argument("principal", help="name the token identifies, e.g. a person or a service")
    p.add_argument("--role", action="append", choices=ROLES, help="role(s) to put in the printed access-file entry")
    p.add_argument("--expires", help="date (or time, UTC) after which the token is refused, e.g. 2027-06-30")
    p.set_defaults(func=cmd_token, light=True)


@_says_notices
def cmd_register(args) -> int:
    from civicml.errors import InvalidInput
    from registry import recorded_fidelity, register, registration_holdout, validate_name

    settings = settings_from(args)
    validate_name(args.name, "model name")  # before any held-out data is made
    if args.holdout and args.no_holdout:
        raise InvalidInput("--holdout and --no-holdout exclude each other")
    use_case, held = None, None
    if not args.no_holdout and _may_register(settings, args.alias):  # else register() refuses (and audits it)
        use_case, held = registration_holdout(args.model_uri, settings, args.holdout, name=args.name)
    version = register(args.model_uri, args.name, alias=args.alias or None, settings=settings,
                       tags=dict(getattr(use_case, "registry_tags", {}) or {}),  # a use-case file: its path
                       holdout=None if held is None else held.frame, target=None if held is None else held.target)
    fidelity = recorded_fidelity(args.name, version.version, settings)
    console().print(f"registered {version.name} version {version.version} (sha256 {version.sha256[:12]}...)"
                    + (f" as '{args.alias}'" if args.alias else "")
                    + (f"; rules fidelity {fidelity} on its held-out set" if fidelity else ""), markup=False)
    return 0


def _may_register(settings, alias: str | None) -> bool:
    """Whether a registration could go ahead: the caller's role and the alias, checked before data is made."""
    from civicml.access import caller
    from civicml.errors import CivicMLError
    from registry import validate_alias

    try:
        if alias:
            validate_alias(alias)
            if alias.casefold() == "champion":
                return False
        return caller(settings).may("register")
    except CivicMLError:
        return False


@_says_notices
def cmd_alias(args) -> int:
    from registry import set_alias

    set_alias(args.name, args.alias, args.version, settings=settings_from(args))
    console().print(f"{args.name}@{args.alias} -> version {args.version}")
    return 0


@_says_notices
def cmd_approve(args) -> int:
    from registry import approve

    approvers = approve(args.name, args.version, settings=settings_from(args), note=args.note)
    console().print(f"approved {args.name} version {args.version}; approvals so far: {', '.join(approvers)}")
    return 0


@_says_notices
def cmd_promote(args) -> int:
    from registry import authorize, promote, promotion_inputs

    settings = settings_from(args)
    authorize(settings, "promote", args.name, alias=args.to_alias)  # a refusal is audited before any data is made
    inputs = promotion_inputs(args.name, settings, policy_file=args.policy, holdout_files=args.holdout)
    recent = _recent_window(args.name, inputs.policy, settings)
    outcome = promote(args.name, **inputs.as_kwargs(), from_alias=args.from_alias, to_alias=args.to_alias,
                      settings=settings, force=args.force, reason=args.reason, **recent)
    out = console()
    for note in outcome.notes:
        out.print(f"  [yellow]NOTE[/] {note}", markup=True, highlight=False)
    for v in outcome.verdicts:
        out.print(f"  [{'green' if v.passed else 'red'}]{'PASS' if v.passed else 'FAIL'}[/] {v.gate}: {v.detail}")
    for v in outcome.variants:  # the champion moves with its variants: what will serve with it, and what not
        fate = f"serves with version {outcome.candidate} (--variant {v['kind']})" if v["gate"] == "passed" \
            else "never served"
        out.print(f"  VARIANT {v['kind']} v{v['version']}{' (built now)' if v.get('built') else ''}: {v['gate']}, "
                  f"{fate}" + "".join(f"; FAIL {g}" for g in v.get("failed_gates") or []), markup=False)
    if outcome.promoted:
        out.print(f"promoted {args.name} version {outcome.candidate} to '{args.to_alias}' "
                  f"(was {outcome.previous or 'none'})" + (" [FORCED]" if outcome.forced else ""), markup=False)
        return 0
    out.print(f"refused: {args.name} version {outcome.candidate} stays off '{args.to_alias}'; "
              f"'{args.to_alias}' is still {outcome.previous or 'unset'}")
    return 1


def _recent_window(name: str, policy, settings) -> dict:
    """``recent``/``recent_name`` for promote when the policy names ``recent_window``: the judging share of the
    model's most recent labelled window in the monitoring store (the registry never reads that store)."""
    if policy.recent_window is None:
        return {}
    from app.cli.monitor import use_case_of
    from monitoring import open_store
    from monitoring.retrain import recent_window_frame

    use_case = use_case_of(name, settings)
    if use_case is None:
        return {}  # the gate refuses: nothing can read the answers as rows of a use case
    store = open_store(settings=settings)
    try:
        traffic = recent_window_frame(store, name, use_case, policy.recent_window.window)
    finally:
        store.close()
    return {"recent": traffic.frame, "recent_name": f"the most recent labelled window of served answers, "
                                                     f"{traffic.label} (the share kept for judging)"}


@_says_notices
def cmd_rollback(args) -> int:
    from registry import rollback

    old, new = rollback(args.name, settings=settings_from(args), reason=args.reason)
    console().print(f"rolled back {args.name} 'champion': version {old} -> {new}")
    return 0


def _figure(value) -> str:
    return "-" if value is None else f"{value:.4g}"


@_says_notices
def cmd_audit(args) -> int:
    from registry import audit

    records = audit(args.name, settings=settings_from(args))
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    out = console()
    for r in records:
        who = f"{r['who']} ({r.get('auth', 'single-user')})"
        action = r["action"]
        if action in ("promote", "refuse", "rollback", "alias"):
            what = f"{r.get('alias')}: {r.get('from') or '-'} -> {r.get('to')}"
        elif action == "denied":
            what = f"{r.get('attempted')}: {r.get('why')}"
        elif action in ("integrity", "discard"):
            what = f"version {r.get('version')}: {r.get('why')}"
        else:
            what = f"version {r.get('version')}" + (f" as {r['alias']}" if r.get("alias") else "")
        out.print(f"{r['when']}  {action:<8} by {who}: {what}", markup=False)
        for g in r.get("gates", []):
            out.print(f"    {'PASS' if g['passed'] else 'FAIL'} {g['gate']}: figure {_figure(g.get('figure'))}, "
                      f"bound {_figure(g.get('threshold'))}" + (f" ({g['detail']})" if g.get("detail") else ""),
                      markup=False)
        if action in ("promote", "refuse"):
            policy = r.get("policy") or {}
            holdout = r.get("holdout") or {}
            out.print(f"    approvals: {', '.join(r.get('approvals') or []) or 'none'}; held-out set "
                      f"{holdout.get('name')} ({holdout.get('rows')} rows, {str(holdout.get('fingerprint'))[:12]});"
                      f" policy {policy.get('source') or 'built-in'} v{policy.get('version') or '-'} "
                      f"sha256 {str(policy.get('sha256'))[:12]}", markup=False)
        if r.get("variants"):
            out.print("    variants: " + ", ".join(
                f"{v.get('kind')} v{v.get('version')} {v.get('gate')}" + (" (built now)" if v.get("built") else "")
                for v in r["variants"]), markup=False)
        for note in r.get("notes") or []:
            out.print(f"    note: {note}", markup=False)
        if r.get("forced"):
            out.print("    FORCED past the input contract", markup=False)
        for key in ("note", "reason"):
            if r.get(key):
                out.print(f"    {key}: {r[key]}", markup=False)
    return 0


@_says_notices
def cmd_models_list(args) -> int:
    from projects import describe_use_cases
    from registry import models

    out = console()
    for name, aliases in models(settings_from(args)).items():
        out.print(f"{name}  " + (", ".join(f"{a}=v{v}" for a, v in aliases.items()) or "(no aliases)"),
                  markup=False)
    # what can be tuned into a model: built-in use cases and installed plugins (besides use-case files)
    out.print("use cases (civicml tune --use-case NAME, or a use-case file):", markup=False)
    for use_case in describe_use_cases():
        out.print(f"  {use_case['name']}  {use_case['kind']}  {use_case['origin']}", markup=False)
    return 0


@_says_notices
def cmd_models_show(args) -> int:
    from registry import show, variant_summaries

    settings = settings_from(args)
    rows = show(args.name, settings=settings)
    variants = variant_summaries(args.name, settings)  # parent version -> its variants
    kinds = {v["version"]: v for found in variants.values() for v in found}
    for v in rows:
        v["variants"] = variants.get(v["version"], [])
        if v["version"] in kinds:
            v["variant"], v["variant_of"] = kinds[v["version"]]["kind"], kinds[v["version"]]["variant_of"]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    out = console()
    for v in rows:
        if v["version"] in kinds and kinds[v["version"]]["variant_of"] in {r["version"] for r in rows}:
            continue  # shown under its parent
        out.print(f"v{v['version']}  aliases: {', '.join(v['aliases']) or '-'}  registered by "
                  f"{v['registered_by'] or '-'} at {v['registered_at'] or '-'}", markup=False)
        out.print(f"    run {v['run_id'] or '-'}  family {v['family'] or '-'}  study {v['study'] or '-'}", markup=False)
        out.print(f"    data {(v['data_fingerprint'] or '-')[:16]}  code {(v['code_version'] or '-')[:12]}  "
                  f"sha256 {(v['sha256'] or '-')[:12]}", markup=False)
        metrics = ", ".join(f"{k} {val:.4g}" for k, val in sorted(v["metrics"].items()))
        out.print(f"    metrics: {metrics or '-'}", markup=False)
        out.print(f"    approvals: {', '.join(v['approved_by']) or 'none'}", markup=False)
        last = v["last_gates"]
        if last:
            gates = "; ".join(f"{g['gate']} {'pass' if g['passed'] else 'FAIL'} ({_figure(g.get('figure'))})"
                              for g in last["gates"])
            out.print(f"    gates ({last['action']} {last['when']} by {last['who']}): {gates}", markup=False)
        else:
            out.print("    gates: never evaluated", markup=False)
        _print_variants(out, v["variants"])
    return 0


def _print_variants(out, variants) -> None:
    from registry import variant_cells

    for variant in variants:
        c = variant_cells(variant)
        aliases = f"  aliases: {', '.join(variant['aliases'])}" if variant.get("aliases") else ""
        out.print(f"    variant {c['kind']} v{c['version']}{aliases}: gate {c['gate']}", markup=False)
        out.print(f"        size {c['size']}; p50 b1 {c['p50 b1']}; p50 b64 {c['p50 b64']}", markup=False)
        out.print(f"        {c['quality']}; agreement with the parent {c['agreement']}", markup=False)


@_says_notices
def cmd_models_lineage(args) -> int:
    from registry import lineage

    chain = lineage(args.name, args.version, settings=settings_from(args))
    if args.json:
        print(json.dumps(chain, indent=2, default=str))
        return 0
    out = console()
    metric_text = ", ".join(f"{k} {v:.4g}" for k, v in sorted((chain.get("run_metrics") or {}).items())
                            if k not in ("fit_seconds", "model_size_bytes"))
    lines = [f"{chain['model']} version {chain['version']}  aliases: {', '.join(chain['aliases']) or '-'}",
             f"  sha256 {chain['sha256']}",
             f"  registered by {chain['registered_by']} at {chain['registered_at']}; approved by "
             f"{', '.join(chain['approved_by']) or 'nobody'}",
             f"  <- run {chain['run_id'] or '-'} (experiment {chain.get('experiment_id', '-')}, family "
             f"{chain['family'] or '-'}): {metric_text or 'no metrics'}"]
    if chain.get("study_run_id") or chain.get("study"):
        lines.append(f"  <- study {chain.get('study') or '-'} (parent run {chain.get('study_run_id') or '-'})")
    lines += [f"  <- data fingerprint {chain['data_fingerprint'] or '-'} (use case {chain['use_case'] or '-'})",
              f"  <- code version {chain['code_version'] or 'not recorded'}",
              f"  model card: {chain['model_card'] or '-'}"]
    if chain.get("variant"):
        v = chain["variant"]
        lines.insert(1, f"  {v['kind']} variant of version {v['variant_of']} (gate {v['gate']}; variant run "
                        f"{v['run_id'] or '-'})")
    for line in lines:
        out.print(line, markup=False)
    _print_variants(out, chain.get("variants") or [])
    return 0


@_says_notices
def cmd_models_card(args) -> int:
    from registry import model_card

    print(model_card(args.name, args.version, settings=settings_from(args)), end="")
    return 0


def cmd_whoami(args) -> int:
    from registry import caller

    who = caller(settings_from(args))
    console().print(f"{who.name}: {', '.join(sorted(who.roles))} ({who.auth})", markup=False)
    return 0


def cmd_token(args) -> int:
    from registry import new_token

    roles = ", ".join(args.role or ["data_scientist"])
    expires = ""
    if args.expires:
        from civicml.access import parse_expiry

        parse_expiry(args.expires)  # not a date, or already past: exit 2 with one line, no token printed
        expires = f", expires: {args.expires}"
    token, digest = new_token()
    print(f"token for {args.principal} (shown once; give it to them, set as CIVICML_TOKEN): {token}")
    print("access-file entry (under 'principals:'):")
    print(f"  {args.principal}: {{roles: [{roles}], token_sha256: {digest}{expires}}}")
    return 0

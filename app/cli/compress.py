"""civicml compress: build a registered version's variants, measure them beside it, gate and register them."""

from __future__ import annotations

from app.cli.common import add_store_options, console, parse_params, settings_from


def add_commands(sub) -> None:
    p = sub.add_parser("compress", help="build a quantized, pruned or converted variant of a registered version, "
                                        "measured beside it and gated by the policy's 'variants:' section")
    add_store_options(p)
    p.add_argument("name", help="registered model name")
    p.add_argument("version", help="parent version (number or alias)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--variant", help="onnx, int8, pruned, distilled or bf16")
    what.add_argument("--all", action="store_true", help="every variant the family supports")
    p.add_argument("--set", dest="settings", action="append", metavar="KEY=VALUE",
                   help="builder setting, e.g. keep=0.5 epochs=2 calibration_size=256 tolerance=0.01")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="training sources for calibration/fine-tuning (default: the parent's own, if still there)")
    p.add_argument("--holdout", nargs="+", metavar="PATH", help="held-out sources (default: the policy's)")
    p.add_argument("--policy", help="policy YAML whose 'variants:' section gates (default: the use case's)")
    p.add_argument("--repeats", type=int, default=40, help="timed calls at batch 1 (a quarter of them at 64)")
    p.add_argument("--no-register-refused", action="store_true", help="do not register variants the gate refuses")
    p.set_defaults(func=cmd_compress)


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def cmd_compress(args) -> int:
    from pathlib import Path

    from civicml.errors import InvalidInput
    from registry import VariantPolicy, compress, compress_all

    settings = settings_from(args)
    options = {"build_settings": parse_params(args.settings), "register_refused": not args.no_register_refused,
               "data": args.data, "holdout": args.holdout,
               "repeats": {1: max(1, args.repeats), 64: max(1, args.repeats // 4)}}
    if args.policy:
        if not Path(args.policy).exists():
            raise InvalidInput(f"policy file not found: {args.policy}")
        options["policy"] = VariantPolicy.from_yaml(args.policy)
    if args.all:
        outcomes = compress_all(args.name, args.version, settings, **options)
    else:
        outcomes = [compress(args.name, args.version, args.variant, settings, **options)]
    out = console()
    refused = 0
    for outcome in outcomes:
        if isinstance(outcome, str):
            out.print(f"  skipped {outcome}", markup=False)
            continue
        m = outcome.metrics
        where = f"version {outcome.version.version}" if outcome.version else "not registered"
        verdict = "passed" if outcome.passed else "REFUSED"
        refused += not outcome.passed
        out.print(f"{outcome.name} v{outcome.parent} {outcome.kind}: {verdict} ({where}); {outcome.method}",
                  markup=False)
        out.print(f"    size {m['parent_size_bytes']:.0f} -> {m['size_bytes']:.0f} B ({_ratio(m['size_reduction'])} "
                  f"smaller); p50 b1 {m['parent_latency_b1_p50_ms']:.2f} -> {m['latency_b1_p50_ms']:.2f} ms "
                  f"({_ratio(m['speedup_b1'])}); p50 b64 {m['parent_latency_b64_p50_ms']:.2f} -> "
                  f"{m['latency_b64_p50_ms']:.2f} ms ({_ratio(m['speedup_b64'])})", markup=False)
        out.print(f"    quality loss {m['quality_loss']:+.4f}, agreement {m['agreement']:.4f}"
                  + (f", cosine {m['cosine']:.4f}" if "cosine" in m else ""), markup=False)
        for v in outcome.verdicts:
            out.print(f"    {'PASS' if v.passed else 'FAIL'} {v.gate}: {v.detail}", markup=False)
    return 1 if refused else 0

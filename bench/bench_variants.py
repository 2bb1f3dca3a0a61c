"""Compressed variants side by side with their parents, in one run, through the lifecycle API.

    .venv/bin/python bench/bench_variants.py [--only sklearn,cnn,minilm] [--scenes 1200] [--epochs 8]
                                             [--requests 1500] [--repeats 40] [--out bench/results/variants.md]

For each family a parent is trained and registered in a fresh CivicML home, then
``registry.variants.compress`` builds every variant the family supports, measures
it beside the parent in the same process on the policy's held-out set (size of
the model payload, p50/p95 latency of ``pyfunc.predict`` at batch 1, 32 and 64,
quality, agreement, cosine), gates it with the use case's ``variants:`` policy
and registers it. The MiniLM rows are re-scored on never-seen phrasings too.
Ratios are parent / variant (higher is better for size and speed). Latency is
wall-clock on whatever the machine is doing: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS: list[dict] = []


def _row(family: str, outcome, extra: dict | None = None) -> dict:
    m = outcome.metrics
    row = {"family": family, "variant": outcome.kind, "gate": "passed" if outcome.passed else "REFUSED",
           "size": f"{m['parent_size_bytes'] / 1e6:.2f} -> {m['size_bytes'] / 1e6:.2f} MB ({m['size_reduction']:.2f}x)",
           "p50 b1": f"{m['parent_latency_b1_p50_ms']:.2f} -> {m['latency_b1_p50_ms']:.2f} ms ({m['speedup_b1']:.2f}x)",
           "p50 b32": f"{m['parent_latency_b32_p50_ms']:.1f} -> {m['latency_b32_p50_ms']:.1f} ms "
                      f"({m['speedup_b32']:.2f}x)" if "speedup_b32" in m else "",
           "p50 b64": f"{m['parent_latency_b64_p50_ms']:.1f} -> {m['latency_b64_p50_ms']:.1f} ms "
                      f"({m['speedup_b64']:.2f}x)",
           "quality": f"{m[f'parent_{outcome.metrics_key}']:.4f} -> {m[outcome.metrics_key]:.4f}"
           if hasattr(outcome, "metrics_key") else "",
           "loss (pts)": f"{100 * m['quality_loss']:+.2f}", "agreement": f"{m['agreement']:.4f}",
           "cosine": f"{m['cosine']:.4f}" if "cosine" in m else "-",
           "why refused": "" if outcome.passed else outcome.reason}
    row.update(extra or {})
    return row


# The issue's "done means" bars: (family, kind) -> [(what, metric key, >= or <=, bound)]
ISSUE_BARS = {
    ("cnn", "int8"): [("b64 speed-up", "speedup_b64", ">=", 1.4), ("size", "size_reduction", ">=", 3.5),
                      ("loss", "quality_loss", "<=", 0.005)],
    ("cnn", "pruned"): [("b64 speed-up", "speedup_b64", ">=", 2.0), ("loss", "quality_loss", "<=", 0.02)],
    ("minilm_linear", "int8"): [("b32 speed-up", "speedup_b32", ">=", 1.5), ("cosine", "cosine", ">=", 0.99),
                                ("loss", "quality_loss", "<=", 0.01),
                                ("never-seen loss", "never_seen_quality_loss", "<=", 0.01)],
    ("minilm_linear", "distilled"): [("b1 speed-up", "speedup_b1", ">=", 10.0),
                                     ("never-seen loss", "never_seen_quality_loss", "<=", 0.03)],
}


def issue_bars(family: str, kind: str, metrics: dict) -> str:
    """Which of the issue's bars this row meets ('met' or the missed ones), '' where the issue sets none."""
    missed = []
    for what, key, op, bound in ISSUE_BARS.get((family, kind), []):
        value = metrics.get(key)
        ok = value is not None and (value >= bound if op == ">=" else value <= bound + 1e-12)
        if not ok:
            missed.append(f"{what} {op} {bound:g} (got {value:.3g})" if value is not None else f"{what}: not measured")
    return "" if (family, kind) not in ISSUE_BARS else ("met" if not missed else "MISSED: " + "; ".join(missed))


def _print(rows: list[dict]) -> str:
    keys = ["family", "variant", "gate", "size", "p50 b1", "p50 b32", "p50 b64", "quality", "loss (pts)", "agreement",
            "cosine"]
    extra = sorted({k for r in rows for k in r} - set(keys) - {"why refused"})
    keys += extra + ["why refused"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def _compress(family, name, version, kind, settings, **kw):
    from registry import compress

    started = time.perf_counter()
    try:
        outcome = compress(name, version, kind, settings, **kw)
    except Exception as err:  # noqa: BLE001 - a kind that cannot be built is a row too
        print(f"  {family} {kind}: {err}", flush=True)
        ROWS.append({"family": family, "variant": kind, "gate": "not built", "why refused": str(err)[:160]})
        return None
    outcome.metrics_key = kw.pop("metric", None) or "macro_f1"
    ROWS.append(_row(family, outcome, {"build+measure s": f"{time.perf_counter() - started:.0f}"}))
    ROWS[-1]["issue bars"] = issue_bars(family, kind, outcome.metrics)
    print(f"  {family} {kind}: {ROWS[-1]}", flush=True)
    return outcome


def bench_sklearn(home: Path, args) -> None:
    from civicml.settings import Settings
    from projects import get_use_case, train
    from registry import register

    uc = get_use_case("service_requests")
    settings = Settings.from_env(env={}, home=home / "sklearn", user="bench")
    data = uc.integrate(uc.generate_sources(home / "sr-data", n=args.requests, seed=1))
    holdout = uc.holdout(home / "sr-holdout", n=1000)
    for family, params in (("logreg", {"char_ngrams": False}), ("decision_tree", {}), ("boosting", {}),
                           ("logreg", {"char_ngrams": True})):
        result = train(uc, data, family, params, settings=settings)
        parent = register(result.model_uri, uc.registered_model, settings=settings)
        label = family + ("+char_wb" if params.get("char_ngrams") else "")
        for kind in ("onnx", "pruned") if family in ("decision_tree", "boosting") else ("onnx",):
            _compress(label, uc.registered_model, parent.version, kind, settings, data=data, holdout=holdout,
                      repeats={1: args.repeats, 64: max(3, args.repeats // 4)})


def bench_cnn(home: Path, args) -> None:
    from civicml.settings import Settings
    from projects import get_use_case, load_dataset, train
    from registry import register

    uc = get_use_case("street_scenes")
    settings = Settings.from_env(env={}, home=home / "cnn", user="bench")
    data = load_dataset(uc, uc.generate_sources(home / "scenes", n=args.scenes, seed=1))
    holdout = uc.holdout(home / "scenes-holdout", n=600)
    result = train(uc, data, "cnn", {"epochs": args.epochs}, settings=settings)
    parent = register(result.model_uri, uc.registered_model, settings=settings)
    repeats = {1: args.repeats, 64: max(3, args.repeats // 4)}
    for kind, build in (("int8", {}), ("pruned", {"keep": 0.5}), ("pruned", {"keep": 0.1, "epochs": 1})):
        outcome = _compress("cnn", uc.registered_model, parent.version, kind, settings, data=data, holdout=holdout,
                            build_settings=build, repeats=repeats)
        if outcome is not None and kind == "pruned":
            ROWS[-1]["variant"] = f"pruned keep={build['keep']}"


def bench_minilm(home: Path, args) -> None:
    from civicml.settings import Settings
    from projects import get_use_case, train
    from registry import register

    uc = get_use_case("service_requests")
    settings = Settings.from_env(env={}, home=home / "minilm", user="bench")
    data = uc.integrate(uc.generate_sources(home / "mini-data", n=args.requests // 2, seed=1))
    holdout = uc.holdout(home / "mini-holdout", n=400)
    unseen = uc.integrate(uc.generate_sources(home / "mini-unseen", n=400, seed=20_000, phrasings="unseen"))
    result = train(uc, data, "minilm_linear", {}, settings=settings)
    parent = register(result.model_uri, uc.registered_model, settings=settings)
    repeats = {1: max(10, args.repeats // 2), 32: max(8, args.repeats // 2), 64: 3}
    for kind in ("int8", "distilled"):
        outcome = _compress("minilm_linear", uc.registered_model, parent.version, kind, settings, data=data,
                            holdout=holdout, repeats=repeats, also_on={"never_seen": unseen})
        if outcome is None:
            continue
        m = outcome.metrics
        ROWS[-1]["never-seen"] = (f"{m['never_seen_parent_macro_f1']:.4f} -> {m['never_seen_macro_f1']:.4f} "
                                  f"(loss {100 * m['never_seen_quality_loss']:+.2f} pts, "
                                  f"agreement {m['never_seen_agreement']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="sklearn,cnn,minilm")
    parser.add_argument("--scenes", type=int, default=1200, help="street images for the CNN parent")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=40, help="timed calls at batch 1 (a quarter at 64)")
    parser.add_argument("--out", default=None, help="also write the table (Markdown) here")
    args = parser.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.ERROR)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmp:
        for part in args.only.split(","):
            print(f"== {part}", flush=True)
            {"sklearn": bench_sklearn, "cnn": bench_cnn, "minilm": bench_minilm}[part](Path(tmp), args)
    table = _print(ROWS)
    load = os.getloadavg()
    footer = (f"\n\n{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; "
              f"{time.perf_counter() - started:.0f} s in all. Command: python bench/bench_variants.py "
              + " ".join(sys.argv[1:]))
    print(table + footer)
    if args.out:
        Path(args.out).write_text(f"# Variants vs parents\n\n{table}{footer}\n")


if __name__ == "__main__":
    main()

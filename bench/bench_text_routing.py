"""311 routing: scikit-learn families vs the MiniLM families, on the same split and on unseen phrasings.

    .venv/bin/python bench/bench_text_routing.py [--n 1200] [--unseen 400] [--seed 1] [--families a,b,...]

Train and validation come from one generated data set with ``seen`` phrasings
(the use case's stratified split); the second column re-scores the same fitted
models on a fresh data set generated with the disjoint ``unseen`` phrasing pool
(typos, jargon, Spanish and mixed language). Every family is fitted once with
its defaults: no tuning. scikit-learn families see all features (text, district,
channel, hour, weekday); the MiniLM families read the description only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1200, help="requests generated for train + validation")
    parser.add_argument("--unseen", type=int, default=400, help="requests generated with unseen phrasings")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--families", default="", help="comma-separated; default: all of the use case's")
    args = parser.parse_args()

    from sklearn.metrics import f1_score

    from projects import get_use_case
    from projects.base import NullReporter

    uc = get_use_case("service_requests")
    with tempfile.TemporaryDirectory() as tmp:
        seen = uc.integrate(uc.generate_sources(Path(tmp) / "seen", n=args.n, seed=args.seed))
        unseen = uc.integrate(uc.generate_sources(Path(tmp) / "unseen", n=args.unseen, seed=args.seed + 1000,
                                                  phrasings="unseen"))
    train, valid = uc.split(seen, seed=0)
    names = [f for f in args.families.split(",") if f] or list(uc.families)
    print(f"train {len(train)}, validation (seen phrasings) {len(valid)}, unseen-phrasing test {len(unseen)}; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print()
    print("| family | macro-F1 validation (seen) | macro-F1 unseen phrasings | fit s | predict ms/row (unseen) |")
    print("|---|---:|---:|---:|---:|")
    precisions = {}
    for name in names:
        family = uc.family(name)
        started = time.perf_counter()
        fitted = family.fit(train, valid, dict(family.defaults), NullReporter())
        fit_s = time.perf_counter() - started
        f1_seen = f1_score(valid.y.astype(str), [str(p) for p in fitted.predict(valid.X)], average="macro")
        started = time.perf_counter()
        predicted = fitted.predict(unseen.X)
        predict_ms = (time.perf_counter() - started) * 1000 / len(unseen)
        f1_unseen = f1_score(unseen.y.astype(str), [str(p) for p in predicted], average="macro")
        print(f"| {name} | {f1_seen:.3f} | {f1_unseen:.3f} | {fit_s:.1f} | {predict_ms:.2f} |", flush=True)
        if getattr(fitted, "precision", None):
            precisions[name] = fitted.precision
    print()
    print(f"MiniLM encoder precision in paddle.inference: {precisions or 'n/a'}")


if __name__ == "__main__":
    main()

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
    parser.add_argument("--home", default=None, help="CivicML home whose MLflow store gets the comparison run "
                                                     "(default: CIVICML_HOME or ./civicml-home)")
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
    rows = []
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
        rows.append({"family": name, "macro_f1_seen": f1_seen, "macro_f1_unseen": f1_unseen, "fit_s": fit_s,
                     "predict_ms_per_row": predict_ms})
        if getattr(fitted, "precision", None):
            precisions[name] = fitted.precision
    print()
    print(f"MiniLM encoder precision in paddle.inference: {precisions or 'n/a'}")
    run_id = _log_comparison(rows, args, len(train), len(valid), len(unseen))
    print(f"logged as MLflow run {run_id} (experiment service_requests, table routing_comparison.json)")


def _log_comparison(rows, args, n_train, n_valid, n_unseen) -> str:
    """The table as an MLflow run, so that it sits beside the trained models in the UI."""
    import mlflow
    import pandas as pd

    from civicml.settings import Settings
    from civicml.tracking import configure, experiment_id

    settings = Settings.from_env(**({"home": args.home} if args.home else {}))
    configure(settings)
    with mlflow.start_run(experiment_id=experiment_id(settings, "service_requests"),
                          run_name="routing-comparison", tags={"civicml.benchmark": "text_routing"}) as run:
        mlflow.log_params({"n": args.n, "unseen": args.unseen, "seed": args.seed, "train_rows": n_train,
                           "valid_rows": n_valid, "unseen_rows": n_unseen})
        mlflow.log_table(pd.DataFrame(rows), "routing_comparison.json")
        for row in rows:
            mlflow.log_metrics({f"{row['family']}.macro_f1_seen": row["macro_f1_seen"],
                                f"{row['family']}.macro_f1_unseen": row["macro_f1_unseen"]})
        return run.info.run_id


if __name__ == "__main__":
    main()

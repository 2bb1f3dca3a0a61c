"""Explanation latency per model family at batch 1, beside plain prediction latency (one process, warm).

Every family is fitted on generated 311 requests (as training does); then, for each of ``--rows`` held-out
requests one at a time, the model predicts the row and the explainer explains it; medians and p90 in ms.
Methods: logreg -> exact linear contributions; decision_tree, boosting (through its SVD), svm (rbf) -> sampled
interventional Shapley values over 100 background rows (words and columns; whole columns for the svm);
minilm_zero_shot -> word occlusion (one encoder pass over all one-word-removed variants).

    PYTHONPATH=. .venv/bin/python bench/bench_explain.py [--rows 30] [--families logreg,decision_tree,...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from projects import get_use_case
from projects.base import NullReporter
from serving.explain import LinearExplainer, OcclusionExplainer, SamplingExplainer, sklearn_output

FAMILIES = "logreg,decision_tree,boosting,svm,minilm_zero_shot"


def _fit(use_case, train, valid, family):
    fam = use_case.family(family)
    params = {**fam.defaults, **({"kernel": "rbf"} if family == "svm" else {})}
    return fam.fit(train, valid, params, NullReporter())


def _timed(fn, rows) -> list[float]:
    fn(rows.iloc[[0]])  # warm up
    out = []
    for i in range(len(rows)):
        row = rows.iloc[[i]]
        started = time.perf_counter()
        fn(row)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--train-rows", type=int, default=1200)
    parser.add_argument("--families", default=FAMILIES)
    args = parser.parse_args()
    use_case = get_use_case("service_requests")
    with tempfile.TemporaryDirectory() as tmp:
        data = use_case.integrate(use_case.generate_sources(Path(tmp) / "d", n=args.train_rows, seed=3))
        holdout = use_case.holdout(Path(tmp) / "h", n=max(100, args.rows))
    train, valid = use_case.split(data, seed=0)
    rows = holdout.X.head(args.rows)
    print(f"| family | method | predict p50 ms | explain p50 ms | explain p90 ms | explain / predict |")
    print("|---|---|---|---|---|---|")
    for family in args.families.split(","):
        fitted = _fit(use_case, train, valid, family)
        if family.startswith("minilm"):
            predict = fitted.predict_frame
            explainer = OcclusionExplainer(fitted.predict_frame, "description")
            X = rows[["description"]]
        else:
            predict = fitted.pipeline.predict
            text = [] if family == "svm" else ["description"]  # as serving picks them (serving.explain.explainer_for)
            explainer = LinearExplainer(fitted.pipeline) if family == "logreg" else \
                SamplingExplainer(sklearn_output(fitted.pipeline), train.X.head(100), text)
            X = rows
        plain = _timed(predict, X)
        explained = _timed(explainer.explain, X)
        p50, e50 = statistics.median(plain), statistics.median(explained)
        print(f"| {family} | {explainer.method} | {p50:.2f} | {e50:.2f} | {np.percentile(explained, 90):.2f} | "
              f"{e50 / p50:.1f}x |", flush=True)


if __name__ == "__main__":
    main()

"""Are explanations faithful? Per family: the share of rows where replacing the top-k stated contributors by
background values moves the model's output the stated way (must be >= 90%), the additivity error, latency per
explanation, and how much the top weight moves when measured against another training sample.

Models are trained and registered as users do and explained as serving does (``serving.explain.explain``'s
ModelExplainer, with the background logged at training). The check is tests/test_explain_faithful.py's own.
Families: 311 router logreg (linear), 311 boosting (HistGradientBoosting over an SVD of TF-IDF), air quality
hist_gradient_boosting (tree SHAP), random_forest and linear, and word occlusion of a text-only model.

    PYTHONPATH=. .venv/bin/python bench/bench_explain_faithful.py [--rows 40] [--k 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tests.test_explain_faithful import _airq, check


def _register(settings, use_case, dataset, family, params, name):
    import mlflow.sklearn

    import registry
    from projects import train
    from serving.explain import ModelExplainer

    result = train(use_case, dataset, family, params, settings=settings)
    registry.register(result.model_uri, name, settings=settings, tags=getattr(use_case, "registry_tags", None))
    local = registry.resolve(name, "challenger", settings=settings)
    return ModelExplainer(local, {"name": name, "version": "1"}), mlflow.sklearn.load_model(str(local.path))


def _timed(explain, rows: pd.DataFrame):
    out, ms = [], []
    for i in range(len(rows)):
        started = time.perf_counter()
        out.extend(explain(rows.iloc[[i]]))
        ms.append((time.perf_counter() - started) * 1000)
    return out, ms


def _stability(explainer, rows, other: pd.DataFrame, example: pd.DataFrame | None) -> tuple[float, float | None]:
    """Median |w_other - w| / |w| of each row's top contributor, measured against another 100-row training sample
    and against the 3-row input example (what explanations used before backgrounds were stored)."""
    from serving.explain import explainer_for

    if explainer.explainer.method not in ("tree_shap", "sampling_shapley"):
        return float("nan"), None
    base = explainer.explainer.explain(rows)
    out = []
    for reference in (other, example):
        if reference is None:
            out.append(None)
            continue
        alt = explainer_for(explainer.model, reference, "bench").explain(rows)
        changes = []
        for e, a in zip(base, alt):
            name, w = e.contributions[0]
            changes.append(abs(dict(a.contributions).get(name, 0.0) - w) / max(abs(w), 1e-12))
        out.append(statistics.median(changes))
    return out[0], out[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--k", type=int, default=2)
    args = parser.parse_args(argv)

    from civicml.settings import Settings
    from projects import get_use_case
    from serving.explain import OcclusionExplainer, input_example

    folder = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    settings = Settings.from_env(env={}, home=folder / "home", user="bench")
    router = get_use_case("service_requests")
    requests = router.integrate(router.generate_sources(folder / "sr", n=800, seed=5))
    r_train, r_valid = router.split(requests, seed=0)
    airq, airq_data, a_train, a_valid = _airq(folder / "airq", described=False)

    cases = [("311 logreg", router, requests, "logreg", {"char_ngrams": False}, r_train, r_valid, "description", 1),
             ("311 boosting (SVD)", router, requests, "boosting", {"max_iter": 40, "components": 32}, r_train,
              r_valid, "description", args.k),
             ("airq hist_gradient_boosting", airq, airq_data, "hist_gradient_boosting", {"max_iter": 60}, a_train,
              a_valid, None, args.k),
             ("airq random_forest", airq, airq_data, "random_forest", {"n_estimators": 40, "max_depth": 8}, a_train,
              a_valid, None, args.k),
             ("airq linear", airq, airq_data, "linear", {}, a_train, a_valid, None, args.k)]
    print(f"| family | method | units | background rows | rows | top-{args.k} direction | additivity error | "
          f"ms per explanation p50 / p90 | top weight vs another 100-row sample | vs the 3-row input example |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, use_case, dataset, family, params, train, valid, text, k in cases:
        explainer, model = _register(settings, use_case, dataset, family, params,
                                     f"bench-{family.replace('_', '-')}-{len(label)}")
        rows = valid.X.head(args.rows).reset_index(drop=True)
        explanations, ms = _timed(explainer.explain, rows)
        background = train.X.sample(min(150, len(train)), random_state=1).reset_index(drop=True)
        result = check(model, explanations, rows, background, text=text, k=k)
        other = train.X.sample(100, random_state=7).reset_index(drop=True)
        stable, example = _stability(explainer, rows.head(10), other, input_example(None, explainer.local.path))
        e = explanations[0]
        print(f"| {label} | {e.method} | {e.units} | {e.background_rows} | {result['rows']} | "
              f"{result['share']:.0%} | {result['additivity']:.1e} | {statistics.median(ms):.0f} / "
              f"{np.percentile(ms, 90):.0f} | {'-' if stable != stable else f'{stable:.0%}'} | "
              f"{'-' if example is None else f'{example:.0%}'} |", flush=True)

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    text_model = make_pipeline(TfidfVectorizer(), LogisticRegression(C=10, max_iter=1000))
    text_model.fit(r_train.X.description, r_train.y)

    def predict(frame):
        p = text_model.predict_proba(frame.description)
        out = pd.DataFrame(p, columns=[f"p_{c}" for c in text_model.classes_])
        out.insert(0, "label", text_model.classes_[p.argmax(axis=1)])
        return out

    rows = r_valid.X[["description"]].head(args.rows).reset_index(drop=True)
    explanations, ms = _timed(OcclusionExplainer(predict, "description").explain, rows)
    agree = 0
    for i, e in enumerate(explanations):  # removing the top word moves the answer's probability the stated way
        word, weight = e.contributions[0]
        without = " ".join(w for w in rows.description[i].split() if f"'{w.strip('.,!?;:')}'" != word)
        moved = predict(rows.iloc[[i]])[f"p_{e.prediction}"].iloc[0] - \
            predict(pd.DataFrame({"description": [without]}))[f"p_{e.prediction}"].iloc[0]
        agree += int(np.sign(moved) == np.sign(weight))
    print(f"| text-only logreg, word occlusion | occlusion | probability | - | {len(rows)} | "
          f"{agree / len(rows):.0%} (top-1) | n/a (removal effects, not a sum) | {statistics.median(ms):.0f} / "
          f"{np.percentile(ms, 90):.0f} | - | - |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

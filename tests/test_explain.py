"""Explanations are faithful, not only present: each method checked against the model's own output."""

from __future__ import annotations

import numpy as np
import pytest

from projects.base import NullReporter
from serving.explain import (FallbackExplainer, LinearExplainer, OcclusionExplainer, SamplingExplainer, sentence,
                             sklearn_output)


@pytest.fixture(scope="module")
def split(requests_use_case, small_requests):
    return requests_use_case.split(small_requests, seed=0)


def _fit(use_case, split, family, **params):
    train, valid = split
    fam = use_case.family(family)
    return fam.fit(train, valid, {**fam.defaults, **params}, NullReporter()).pipeline


def test_linear_contributions_sum_to_the_decision_function(requests_use_case, split):
    pipeline = _fit(requests_use_case, split, "logreg")  # word + char n-gram TF-IDF, one-hot, logistic regression
    rows = split[1].X.head(8)
    explanations = LinearExplainer(pipeline).explain(rows)
    decision = pipeline.decision_function(rows)
    classes = list(pipeline.classes_)
    for i, e in enumerate(explanations):
        assert e.prediction == pipeline.predict(rows)[i]
        k = classes.index(e.prediction)
        assert sum(w for _, w in e.contributions) + e.base == pytest.approx(decision[i, k], abs=1e-8)
        assert e.method == "linear"
    # names are words and categories, not matrix columns; char n-grams are shared out among words
    names = [f for e in explanations for f, _ in e.contributions]
    assert not any("__" in n or n.startswith("no '") for n in names)  # absent words add nothing to a linear model
    assert any(n.startswith("district = ") for n in names)


def test_linear_top_word_is_the_one_that_decides(requests_use_case, split):
    import pandas as pd

    pipeline = _fit(requests_use_case, split, "logreg", char_ngrams=False)
    row = pd.DataFrame([{"description": "There is a large pothole on Elm Street", "district": "Midtown",
                         "channel": "web", "hour": 14, "weekday": 2}])
    e = LinearExplainer(pipeline).explain(row)[0]
    assert e.prediction == "roads"
    words = [(f, w) for f, w in e.contributions if f.startswith("'")]
    assert "pothole" in words[0][0] and words[0][1] > 0  # the strongest word is the one a person would name
    assert e.sentence.startswith("Answered 'roads' (")
    assert f"; {e.contributions[0][0]} raised it most (+" in e.sentence


@pytest.mark.parametrize("family", ["decision_tree",
                                    pytest.param("boosting", marks=pytest.mark.slow)])  # OpenMP: slow when busy
def test_tree_contributions_sum_to_prediction_minus_base(requests_use_case, split, family):
    """Trees over text (and over its SVD) get sampled Shapley values over words and columns, in probability."""
    params = {"max_iter": 20, "components": 32} if family == "boosting" else {"max_depth": 12}
    pipeline = _fit(requests_use_case, split, family, **params)
    rows = split[1].X.head(4)
    explainer = SamplingExplainer(sklearn_output(pipeline), split[0].X.head(40), ["description"])
    explanations = explainer.explain(rows)
    classes = list(pipeline.classes_)
    output = pipeline.predict_proba(rows)
    for i, e in enumerate(explanations):
        k = classes.index(e.prediction)
        assert e.method == "sampling_shapley" and e.units == "probability" and e.background_rows == 40
        assert sum(w for _, w in e.contributions) == pytest.approx(output[i, k] - e.base_value, abs=1e-9)
        assert e.score == pytest.approx(output[i, k], abs=1e-9)


def test_fallback_on_a_model_without_a_special_method(requests_use_case, split):
    pipeline = _fit(requests_use_case, split, "svm", kernel="rbf", char_ngrams=False)
    rows = split[1].X.head(2)
    background = split[0].X.head(10)
    explanations = FallbackExplainer(pipeline.predict, background).explain(rows)
    for i, e in enumerate(explanations):
        assert e.prediction == pipeline.predict(rows)[i]
        assert {f.split(" = ")[0] for f, _ in e.contributions} == set(rows.columns)
        assert e.method == "sampling_shapley" and e.units == "indicator" and e.background_rows == 10
    # the dead-tree request is answered 'parks' because of its text (the second, answered 'sanitation' though
    # it is about mowing, rests on its district and time more than on its words)
    assert explanations[0].contributions[0][0].startswith("description = ") and explanations[0].contributions[0][1] > 0


def test_sentence_reads_plainly():
    text = sentence("roads", [("'pothole'", 2.0), ("district = Midtown", -0.1), ("'flat tires'", 0.07)],
                    base_value=-1.5, units="log-odds", probability=0.81)
    assert text == ("Answered 'roads' (81%); 'pothole' raised it most (+2), district = Midtown lowered it (-0.1), "
                    "'flat tires' raised it (+0.07) (in log-odds, from a base of -1.5).")
    assert sentence(412.0, [("hour = 8", 30.0)], "regression", base_value=380.0) == \
        "Predicted 412 (typical 380). hour = 8 raised it by 30."


@pytest.mark.slow
def test_removing_the_routers_top_word_lowers_its_score(requests_use_case, split):
    import pandas as pd

    train, valid = split
    router = requests_use_case.family("minilm_zero_shot").fit(train, valid, {}, NullReporter())
    rows = pd.DataFrame({"description": ["Huge pothole on Oak Avenue damaged my tire",
                                         "Loud music from a party next door after midnight"]})
    explanations = OcclusionExplainer(router.predict_frame, "description").explain(rows)
    for i, e in enumerate(explanations):
        word, weight = next((f, w) for f, w in e.contributions)
        words = rows.description[i].split()
        without = " ".join(w for w in words if f"'{w.strip('.,')}'" != word)
        before = router.predict_frame(rows.iloc[[i]])[f"p_{e.prediction}"].iloc[0]
        after = router.predict_frame(pd.DataFrame({"description": [without]}))[f"p_{e.prediction}"].iloc[0]
        assert np.sign(before - after) == np.sign(weight) != 0  # removing it moves the score the stated way
        assert before - after == pytest.approx(weight, abs=1e-6)


@pytest.mark.slow
def test_registered_models_get_the_method_of_their_family(settings, requests_use_case, small_requests):
    """Through the registry, as /explain and the console load them: the MiniLM router (a pyfunc python model
    reading one text column) gets word occlusion; a scikit-learn tree gets SHAP."""
    import registry
    from projects import train
    from serving.explain import explain

    row = [{"description": "Loud music from a party next door after midnight", "district": "Old Town",
            "channel": "web", "hour": 1, "weekday": 5}]
    for family, method in (("minilm_zero_shot", "occlusion"), ("decision_tree", "sampling_shapley")):
        result = train(requests_use_case, small_requests, family, settings=settings)
        registry.register(result.model_uri, f"m-{family.replace('_', '-')}", settings=settings)
        e = explain(f"m-{family.replace('_', '-')}", row, ref="challenger", settings=settings)[0]
        assert e.method == method and e.prediction == "noise" and e.model["version"] == "1"
        reasons = " ".join(f for f, w in e.contributions if w > 0)
        if method == "occlusion":  # the router's reasons are words of the text
            assert any(w in reasons for w in ("music", "party", "midnight", "Loud")), reasons
        else:  # a tree may also rely on a word being absent, and says so
            assert all(f.startswith(("'", "no '")) or " = " in f or " is not " in f for f, _ in e.contributions)

"""One answer shape (civicml/answers.py): probability columns, the stable answer, confidence, intervals,
and the V2 model metadata derived from the same functions as the V2 answers (so they cannot drift)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from civicml.answers import (Answer, Conformal, band, conformal, label_of_column, mlflow_body, probability_column,
                             read_labels, read_probabilities, row_confidence, stable_answer, v2_metadata_outputs)

CLASSIFIER = {"task": "classification", "labels": ["roads", "noise", "parks"]}
REGRESSOR = {"task": "regression", "target": "Ozone", "columns": {"Ozone": {"unit": "ppb"}},
             "conformal": {"q": 2.5, "coverage": 0.9, "n": 200}}


def test_probability_columns_name_their_class():
    assert probability_column("roads") == "p_roads" and label_of_column("p_roads") == "roads"
    assert label_of_column("label") is None and label_of_column("p_") == ""


def test_probabilities_are_read_in_the_order_of_the_models_labels():
    frame = pd.DataFrame({"label": ["noise"], "p_parks": [0.1], "p_noise": [0.7], "p_roads": [0.2]})
    classes, p = read_probabilities(frame, CLASSIFIER["labels"])
    assert classes == ["roads", "noise", "parks"] and p.tolist() == [[0.2, 0.7, 0.1]]
    classes, _ = read_probabilities(frame)  # no labels: the columns' own order
    assert classes == ["parks", "noise", "roads"]
    assert read_probabilities(np.array([1.0, 2.0])) is None and read_labels(np.array([1.0])) is None
    assert read_labels(Answer(label=np.array(["a", "b"], dtype=object))).tolist() == ["a", "b"]


def test_a_classifier_answers_label_probabilities_confidence_and_band():
    output = Answer(label=np.array(["noise", "roads"], dtype=object), p_roads=np.array([0.3, 0.55]),
                    p_noise=np.array([0.65, 0.05]), p_parks=np.array([0.05, 0.4]))
    answer = stable_answer(output, metadata=CLASSIFIER)
    assert list(answer) == ["label", "probabilities", "confidence", "band"]
    assert answer["probabilities"].tolist() == [[0.3, 0.65, 0.05], [0.55, 0.05, 0.4]]
    assert answer["confidence"].tolist() == [0.65, 0.55]
    assert answer["band"].tolist() == ["fairly sure", "unsure"]
    assert answer.parameters["probabilities"] == {"labels": ["roads", "noise", "parks"]}
    records = mlflow_body(output, CLASSIFIER)["predictions"]
    assert records[0] == {"label": "noise", "p_roads": 0.3, "p_noise": 0.65, "p_parks": 0.05, "confidence": 0.65,
                          "band": "fairly sure"}  # the existing keys unchanged, confidence beside them


def test_a_model_without_probabilities_gets_no_confidence():
    answer = stable_answer(np.array(["roads", "noise"], dtype=object), metadata=CLASSIFIER)
    assert list(answer) == ["label"] and row_confidence(answer) == [None, None]
    assert mlflow_body(np.array(["roads"], dtype=object), CLASSIFIER) == {"predictions": ["roads"]}


def test_a_regressor_answers_value_and_its_interval():
    answer = stable_answer(np.array([10.0, 31.25]), metadata=REGRESSOR)
    assert answer["interval_low"].tolist() == [7.5, 28.75] and answer["interval_high"].tolist() == [12.5, 33.75]
    assert answer.parameters["value"] == {"unit": "ppb"}
    assert row_confidence(answer)[1] == {"interval": [28.75, 33.75], "coverage": 0.9, "unit": "ppb"}
    body = mlflow_body(np.array([10.0, 31.25]), REGRESSOR)
    assert body == {"predictions": [10.0, 31.25], "intervals": [[7.5, 12.5], [28.75, 33.75]], "coverage": 0.9,
                    "unit": "ppb"}
    plain = stable_answer(np.array([10.0]), metadata={"task": "regression"})  # no quantile: no interval
    assert list(plain) == ["value"] and mlflow_body(np.array([10.0]), {"task": "regression"}) == \
        {"predictions": [10.0]}


def test_the_conformal_quantile_is_the_ceil_n_plus_one_coverage_order_statistic():
    residuals = np.arange(1, 20, dtype=float)  # n = 19: ceil(20 * 0.9) = 18th smallest
    assert conformal(residuals, np.zeros(19)) == Conformal(18.0, 0.9, 19)
    assert conformal(np.zeros(19), -residuals, coverage=0.5).q == 10.0  # ceil(20 * 0.5) = 10th
    assert conformal(np.arange(8.0), np.zeros(8)) is None  # ceil(9 * 0.9) = 9 > 8 rows: no promise
    assert conformal([1.0, np.nan] * 10, [0.0] * 20).n == 10  # unusable rows are not counted
    with pytest.raises(ValueError):
        conformal([1.0], [1.0], coverage=1.0)
    assert Conformal.of(REGRESSOR) == Conformal(2.5, 0.9, 200) and Conformal.of({}) is None


def test_band_edges():
    assert [band(p) for p in (0.95, 0.9, 0.75, 0.6, 0.3)] == \
        ["very sure", "very sure", "fairly sure", "fairly sure", "unsure"]


# -- the V2 metadata is what a V2 answer is -------------------------------------------------------------
ROUTER = "answers-router"
OZONE = "answers-ozone"
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}


@pytest.fixture(scope="module")
def client(tmp_path_factory, small_requests):
    from civicml.settings import Settings
    from ozone_exports import router_and_ozone_endpoints
    from serving import create_app

    root = tmp_path_factory.mktemp("answers")
    settings = Settings.from_env(env={}, home=root / "home", user="tester")
    endpoints = router_and_ozone_endpoints(settings, small_requests, root / "ozone", (ROUTER, OZONE), n=300, seed=3)
    with TestClient(create_app(endpoints, follow=False)) as http:
        yield http


def _v2_inputs(name: str) -> list[dict]:
    if name == ROUTER:
        return [{"name": k, "shape": [1], "datatype": "INT64" if isinstance(v, int) else "BYTES", "data": [v]}
                for k, v in ROW.items()]
    row = {"Temp": 80.0, "Wind": 7.5, "Solar.R": 190.0, "month": "Jul"}
    return [{"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
            for k, v in row.items()]


@pytest.mark.parametrize("name, expected", [
    (ROUTER, ["label", "probabilities", "confidence", "band"]),
    (OZONE, ["value", "interval_low", "interval_high"]),
])
def test_v2_metadata_outputs_are_the_outputs_of_a_v2_answer(client, name, expected):
    meta = client.get(f"/v2/models/{name}")
    assert meta.status_code == 200, meta.text
    response = client.post(f"/v2/models/{name}/infer", json={"inputs": _v2_inputs(name)})
    assert response.status_code == 200, response.text
    declared = meta.json()["outputs"]
    answered = response.json()["outputs"]
    assert [o["name"] for o in declared] == expected
    assert [(o["name"], o["datatype"]) for o in declared] == [(o["name"], o["datatype"]) for o in answered]
    assert [[-1, *o["shape"][1:]] for o in answered] == [o["shape"] for o in declared]
    assert [o.get("parameters") for o in declared] == [o.get("parameters") for o in answered]


def test_v2_metadata_outputs_for_unknown_tasks_are_empty():
    assert v2_metadata_outputs({}) == [] and v2_metadata_outputs({"task": "clustering"}) == []

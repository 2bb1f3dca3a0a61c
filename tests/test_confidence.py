"""Confidence with every answer, over HTTP as clients see it (issue 23, item 4).

A regressor is trained as users train (``projects.train``: its split-conformal quantile is measured on the
validation rows), registered, and served through the real HTTP app; on FRESH rows (another seed) the share
of true values inside the stated interval is checked against the stated coverage. A classifier's confidence
is its top class's probability, with the band's plain words.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

import registry
from civicml.answers import BANDS, DEFAULT_COVERAGE, band
from ozone_exports import ozone_dataset, records, router_and_ozone_endpoints
from serving import create_app

ROUTER = "confidence-router"
OZONE = "confidence-ozone"


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_requests):
    """One server with a 311 router (logreg) and an ozone regressor (linear), both freshly trained."""
    from civicml.settings import Settings

    root = tmp_path_factory.mktemp("confidence")
    settings = Settings.from_env(env={}, home=root / "home", user="tester")
    endpoints = router_and_ozone_endpoints(settings, small_requests, root / "train", (ROUTER, OZONE), n=2000, seed=0)
    with TestClient(create_app(endpoints, follow=False)) as client:
        yield client, settings, root


def _fresh(root, n=500, seed=7):
    _, fresh = ozone_dataset(root / f"fresh-{seed}", n=n, seed=seed)
    return fresh


def test_the_regressor_logs_its_conformal_quantile(served):
    _, settings, _ = served
    meta = registry.resolve(OZONE, "challenger", settings=settings).metadata
    interval = meta["conformal"]
    assert interval["coverage"] == DEFAULT_COVERAGE and 300 <= interval["n"] <= 500  # the validation rows only
    assert 0 < interval["q"] < 30  # noise sd 4 ppb: about 1.64 * 4 plus the linear model's own error


def test_regression_intervals_hold_their_coverage_on_fresh_rows(served):
    client, _, root = served
    fresh = _fresh(root)
    response = client.post(f"/models/{OZONE}/invocations", json={"dataframe_records": records(fresh.X)})
    assert response.status_code == 200, response.text
    body = response.json()
    values = np.asarray(body["predictions"], dtype=float)  # still MLflow's list of values
    intervals = np.asarray(body["intervals"], dtype=float)
    assert body["coverage"] == 0.9 and body["unit"] == "ppb"
    assert intervals.shape == (len(fresh), 2)
    np.testing.assert_allclose(intervals.mean(axis=1), values, atol=1e-9)  # value -/+ q, not rounded
    truth = fresh.y.to_numpy(dtype=float)
    inside = ((intervals[:, 0] <= truth) & (truth <= intervals[:, 1])).mean()
    print(f"share of fresh rows inside the 90% interval: {inside:.3f} ({len(truth)} rows)")
    assert 0.85 <= inside <= 0.97, inside


def test_v2_regression_answers_carry_the_interval_coverage_and_unit(served):
    client, _, root = served
    fresh = _fresh(root, n=40, seed=11)
    rows = fresh.X[fresh.X["Solar.R"].notna()].head(5)
    inputs = [{"name": c, "shape": [len(rows)], "datatype": "BYTES" if c == "month" else "FP64",
               "data": rows[c].tolist()} for c in rows.columns]
    response = client.post(f"/v2/models/{OZONE}/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    tensors = {o["name"]: o for o in response.json()["outputs"]}
    assert list(tensors) == ["value", "interval_low", "interval_high"]
    assert tensors["value"]["parameters"] == {"unit": "ppb"}
    assert tensors["interval_low"]["parameters"] == {"coverage": 0.9, "unit": "ppb"}
    low, value, high = (np.asarray(tensors[n]["data"]) for n in ("interval_low", "value", "interval_high"))
    assert (low < value).all() and (value < high).all()
    np.testing.assert_allclose(high - value, value - low, atol=1e-9)
    mlflow = client.post(f"/models/{OZONE}/invocations", json={"dataframe_records": records(rows)}).json()
    np.testing.assert_allclose(mlflow["intervals"], np.column_stack([low, high]), atol=1e-9)


ROWS = [{"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
         "weekday": 1},
        {"description": "something about the thing over there", "district": "Harbor", "channel": "phone",
         "hour": 23, "weekday": 5}]


def test_classifier_confidence_is_the_top_probability_with_its_band(served):
    client, _, _ = served
    response = client.post(f"/models/{ROUTER}/invocations", json={"dataframe_records": ROWS})
    assert response.status_code == 200, response.text
    for record in response.json()["predictions"]:
        probabilities = {k: v for k, v in record.items() if k.startswith("p_")}
        assert record["label"] == max(probabilities, key=probabilities.get).removeprefix("p_")
        assert record["confidence"] == max(probabilities.values())
        assert record["band"] == ("very sure" if record["confidence"] >= 0.9 else "fairly sure"
                                  if record["confidence"] >= 0.6 else "unsure")
        assert "intervals" not in response.json()
    inputs = [{"name": k, "shape": [len(ROWS)], "datatype": "INT64" if k in ("hour", "weekday") else "BYTES",
               "data": [r[k] for r in ROWS]} for k in ROWS[0]]
    v2 = client.post(f"/v2/models/{ROUTER}/infer", json={"inputs": inputs}).json()
    tensors = {o["name"]: o for o in v2["outputs"]}
    probabilities = np.asarray(tensors["probabilities"]["data"]).reshape(tensors["probabilities"]["shape"])
    assert tensors["confidence"]["datatype"] == "FP64" and tensors["band"]["datatype"] == "BYTES"
    assert tensors["confidence"]["data"] == probabilities.max(axis=1).tolist()
    assert tensors["band"]["data"] == [band(p) for p in probabilities.max(axis=1)]
    assert [r["confidence"] for r in response.json()["predictions"]] == tensors["confidence"]["data"]


def test_band_words_and_thresholds():
    assert BANDS == ((0.9, "very sure"), (0.6, "fairly sure"), (0.0, "unsure"))
    assert [band(p) for p in (1.0, 0.9, 0.8999, 0.6, 0.5999, 0.2)] == \
        ["very sure", "very sure", "fairly sure", "fairly sure", "unsure", "unsure"]


def test_explanations_carry_the_answers_confidence(served, capsys):
    """The CLI's ``civicml explain`` prints it; the console's try-it page reads it from the explanation."""
    from serving.explain import explain

    _, settings, root = served
    [row] = explain(ROUTER, ROWS[:1], ref="challenger", settings=settings)
    assert set(row.confidence) == {"confidence", "band"}
    assert row.confidence["band"] == band(row.confidence["confidence"])
    assert row.to_dict()["confidence"] == row.confidence
    fresh = _fresh(root, n=40, seed=12)
    [value] = explain(OZONE, records(fresh.X.head(1)), ref="challenger", settings=settings)
    low, high = value.confidence["interval"]
    assert low < float(value.prediction) < high and value.confidence["unit"] == "ppb"
    assert value.confidence["coverage"] == 0.9


def test_civicml_explain_prints_the_confidence(served, tmp_path, capsys):
    import json

    from app.cli import main

    _, settings, root = served
    fresh = _fresh(root, n=40, seed=13)
    (tmp_path / "ozone.json").write_text(json.dumps(records(fresh.X.head(2))))
    (tmp_path / "request.json").write_text(json.dumps(ROWS[:1]))
    home = str(settings.home)
    assert main(["explain", OZONE, "--input", str(tmp_path / "ozone.json"), "--alias", "challenger",
                 "--home", home]) == 0
    out = capsys.readouterr().out
    assert out.count("confidence: between ") == 2 and "ppb (90% of the time)" in out, out
    assert main(["explain", ROUTER, "--input", str(tmp_path / "request.json"), "--alias", "challenger",
                 "--home", home]) == 0
    out = capsys.readouterr().out
    assert any(f"confidence: {words} (" in out for _, words in BANDS), out


def test_the_consoles_try_it_page_shows_the_confidence(served):
    import re

    from app.console import create_console

    _, settings, _ = served
    with TestClient(create_console(settings)) as console:
        answer = console.post(f"/models/{OZONE}/try", data={"ref": "challenger", "Temp": "80", "Wind": "7.5",
                                                             "Solar.R": "190", "month": "Jul"})
        assert answer.status_code == 200, answer.text
        said = re.search(r'<p id="confidence" class="confidence"><strong>Likely between ([\d.]+) ppb and ([\d.]+) '
                         r'ppb</strong> \(90 times in 100 ', answer.text)
        assert said and float(said.group(1)) < float(said.group(2)), answer.text
        answer = console.post(f"/models/{ROUTER}/try", data={"ref": "challenger",
                                                              **{k: str(v) for k, v in ROWS[0].items()}})
        assert answer.status_code == 200, answer.text
        said = re.search(r'<p id="confidence" class="confidence [a-z-]+"><strong>([A-Za-z ]+)</strong>: the model '
                         r'gives this answer a probability of (\d+) in 100', answer.text)
    from serving.explain import explain

    [row] = explain(ROUTER, ROWS[:1], ref="challenger", settings=settings)
    expected = row.confidence["confidence"]
    assert said and (said.group(1).lower(), int(said.group(2))) == (band(expected), round(100 * expected)), \
        answer.text

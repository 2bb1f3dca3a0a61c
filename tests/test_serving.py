"""The HTTP server in process: MLflow's scoring protocol, error cases, alias following."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

import registry
from projects import get_use_case, train
from serving import BackgroundServer, Endpoint, EndpointClient, create_app, runtime_names

NAME = "routing-under-test"
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}


@pytest.fixture(scope="module")
def served(tmp_path_factory, requests_dataset, requests_holdout):
    from civicml.settings import Settings

    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("serving") / "home", user="tester")
    use_case = get_use_case("service_requests")
    good = train(use_case, requests_dataset, "logreg", settings=settings)
    registry.register(good.model_uri, NAME, settings=settings)
    assert registry.promote(NAME, requests_holdout.frame, "department", settings=settings).promoted
    endpoint = Endpoint(NAME, settings=settings, refresh_seconds=0)
    with TestClient(create_app(endpoint, follow=False)) as client:
        yield settings, endpoint, client


def test_ping_health_and_version(served):
    _, _, client = served
    assert client.get("/ping").status_code == 200
    health = client.get("/health").json()
    assert health["model"] == {"name": NAME, "version": "1", "alias": "champion", "runtime": "pyfunc"}


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())]}},
    {"dataframe_records": [ROW]},
    {"instances": [ROW]},
    {"inputs": {k: [v] for k, v in ROW.items()}},
])
def test_every_mlflow_json_format_routes_a_request(served, body):
    _, _, client = served
    response = client.post("/invocations", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == ["roads"]
    assert response.json()["model"]["version"] == "1"
    assert response.headers["X-CivicML-Model-Version"] == "1"


def test_csv_and_batches(served, requests_holdout):
    _, _, client = served
    rows = requests_holdout.frame[list(requests_holdout.features)].head(64)
    response = client.post("/invocations", content=rows.to_csv(index=False), headers={"content-type": "text/csv"})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 64
    accuracy = (requests_holdout.frame["department"].head(64).to_numpy() == predictions).mean()
    assert accuracy > 0.8


@pytest.mark.parametrize("body, content_type, fragment", [
    ({"dataframe_records": [{k: v for k, v in ROW.items() if k != "district"}]}, None, "missing column 'district'"),
    ({"dataframe_records": [{**ROW, "district": "Atlantis"}]}, None, "unknown district 'Atlantis'"),
    ({"dataframe_records": [{**ROW, "hour": "eight"}]}, None, "column 'hour' must be numeric"),
    ({"dataframe_records": [{**ROW, "hour": 8.5}]}, None, "whole numbers"),
    ({"dataframe_records": [{**ROW, "description": 42}]}, None, "column 'description' must be text"),
    ({"dataframe_records": [{**ROW, "description": None}]}, None, "missing value"),
    ({"dataframe_records": [{**ROW, "description": "  "}]}, None, "empty value"),
    ({"dataframe_records": [{**ROW, "description": "x" * 100_000}]}, None, "longer than 10000 characters"),
    ({"dataframe_records": []}, None, "no rows"),
    ({"rows": [ROW]}, None, "exactly one of the keys"),
    ({"dataframe_records": [ROW], "instances": [ROW]}, None, "exactly one of the keys"),
    ([ROW], None, "must be an object"),
    ("{not json", "application/json", "malformed JSON"),
    ("", "application/json", "empty request body"),
    ("a,b\n1,2\n", "text/csv", "missing column"),
    ("hello", "text/plain", "unsupported content type"),
])
def test_bad_input_gets_a_clear_4xx(served, body, content_type, fragment):
    _, _, client = served
    if isinstance(body, str):
        response = client.post("/invocations", content=body, headers={"content-type": content_type})
    else:
        response = client.post("/invocations", content=json.dumps(body), headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert fragment in response.json()["message"]


def test_runtimes_are_chosen_by_name(served):
    from civicml.errors import NotFound

    settings, _, _ = served
    assert "pyfunc" in runtime_names()
    with pytest.raises(NotFound, match="unknown runtime 'int4'"):
        Endpoint(NAME, runtime="int4", settings=settings).load()


@pytest.mark.slow
def test_endpoint_follows_the_alias_over_real_http(served, requests_dataset, requests_holdout):
    settings, _, _ = served
    use_case = get_use_case("service_requests")
    better = train(use_case, requests_dataset, "svm", settings=settings)
    registry.register(better.model_uri, NAME, settings=settings)
    endpoint = Endpoint(NAME, settings=settings, refresh_seconds=0.2)
    with BackgroundServer(endpoint) as server, EndpointClient(server.url) as client:
        assert client.predict([ROW])["model"]["version"] == "1"
        outcome = registry.promote(NAME, requests_holdout.frame, "department",
                                   policy=registry.PromotionPolicy(max_regression=0.05), settings=settings)
        assert outcome.promoted, outcome.reason
        import time

        deadline = time.monotonic() + 30
        while client.predict([ROW])["model"]["version"] != "2":
            assert time.monotonic() < deadline, "the endpoint did not follow the alias"
            time.sleep(0.1)
        registry.rollback(NAME, settings=settings)
        while client.predict([ROW])["model"]["version"] != "1":
            assert time.monotonic() < deadline + 30, "the endpoint did not follow the rollback"
            time.sleep(0.1)

"""POST /explain and `civicml explain` against a registered, served model."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.cli import main
from serving import Endpoint, create_app

pytest_plugins = ["explained_model"]  # one session fixture for every module that uses it
NAME = "explained-router"  # the model that fixture registers
ROW = {"description": "Huge pothole on Oak Avenue damaged my tire", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}


@pytest.fixture(scope="module")
def explained(explained_model):
    endpoint = Endpoint(NAME, alias="challenger", settings=explained_model.settings, refresh_seconds=0)
    with TestClient(create_app(endpoint, follow=False)) as client:
        yield explained_model.home, client


@pytest.mark.parametrize("body", [{"dataframe_records": [ROW]},
                                  {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())]}}])
def test_explain_names_the_served_version_and_agrees_with_invocations(explained, body):
    _, client = explained
    answer = client.post("/invocations", json=body).json()
    response = client.post("/explain", json=body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["model"]["version"] == answer["model"]["version"] == "1"
    assert response.headers["X-CivicML-Model-Version"] == "1"
    row = doc["explanations"][0]
    assert row["prediction"] == answer["predictions"][0]["label"] == "roads"  # classifiers answer label + p_<class>
    assert row["method"] == "linear" and row["model"]["alias"] == "challenger"
    assert row["sentence"].startswith("Answered 'roads' (") and " raised it most (+" in row["sentence"]
    assert row["units"] == "log-odds" and row["base_value"] is not None
    assert any("pothole" in c["feature"] and c["weight"] > 0 for c in row["contributions"])


@pytest.mark.parametrize("body, status, fragment", [
    ({"dataframe_records": [{**ROW, "district": "Atlantis"}]}, 400, "unknown district 'Atlantis'"),
    ({"rows": [ROW]}, 400, "exactly one of the keys"),
    ({"dataframe_records": [ROW] * 101}, 400, "too many rows to explain"),
])
def test_explain_rejects_bad_input_with_a_message(explained, body, status, fragment):
    _, client = explained
    response = client.post("/explain", json=body)
    assert response.status_code == status and fragment in response.json()["message"], response.text


def test_cli_explain_prints_the_sentence_and_weights(explained, tmp_path, capsys):
    home, _ = explained
    row = tmp_path / "row.json"
    row.write_text(json.dumps(ROW))
    assert main(["explain", NAME, "--input", str(row), "--alias", "challenger", "--home", str(home), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc[0]["prediction"] == "roads" and doc[0]["model"]["version"] == "1"
    assert len(doc[0]["contributions"]) == 6
    row.write_text("{not json")
    assert main(["explain", NAME, "--input", str(row), "--alias", "challenger", "--home", str(home)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["explain", NAME, "--input", str(tmp_path / "none.json"), "--home", str(home)]) == 2


def test_every_hosted_model_explains_and_metrics_count_explanations(explained):
    """A server hosting two models explains each (/models/{name}/explain); /metrics counts answers and refusals
    per model under protocol "explain", beside inference."""
    import registry

    home, _ = explained
    from civicml.settings import Settings

    settings = Settings.from_env(env={}, home=home, user="tester")
    if "second-router" not in registry.models(settings=settings):
        registry.register(f"models:/{NAME}/1", "second-router", settings=settings)
    endpoints = [Endpoint(NAME, alias="challenger", settings=settings, refresh_seconds=0),
                 Endpoint("second-router", alias="challenger", settings=settings, refresh_seconds=0)]
    with TestClient(create_app(endpoints, follow=False)) as client:
        second = client.post("/models/second-router@challenger/explain", json={"dataframe_records": [ROW]})
        assert second.status_code == 200, second.text
        assert second.json()["model"]["name"] == "second-router"
        assert client.post("/explain", json={"dataframe_records": [ROW]}).json()["model"]["name"] == NAME
        refused = client.post("/models/second-router@challenger/explain", json={"rows": [ROW]})
        assert refused.status_code == 400
        assert client.post("/models/nobody/explain", json={"dataframe_records": [ROW]}).status_code == 404
        metrics = client.get("/metrics").text
    assert 'civicml_requests_total{model="second-router",protocol="explain",status="200",variant="-",version="1"} 1.0' \
        in metrics, metrics
    assert 'model="second-router",protocol="explain",status="400"' in metrics
    assert f'civicml_requests_total{{model="{NAME}",protocol="explain",status="200",variant="-",version="1"}} 1.0' \
        in metrics

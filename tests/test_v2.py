"""Open Inference Protocol V2 over real HTTP, with Triton's own client library (tritonclient[http])."""

from __future__ import annotations

import numpy as np
import pytest

import registry
from projects import get_use_case, train
from serving import BackgroundServer, Endpoint

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

NAME = "v2-router"
ROWS = [{"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
         "weekday": 1},
        {"description": "Loud music from the bar all night", "district": "Midtown", "channel": "phone", "hour": 23,
         "weekday": 5}]
COLUMNS = [("description", "BYTES", object), ("district", "BYTES", object), ("channel", "BYTES", object),
           ("hour", "INT64", np.int64), ("weekday", "INT64", np.int64)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_requests):
    from civicml.settings import Settings

    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("v2") / "home", user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", settings=settings)
    registry.register(result.model_uri, NAME, settings=settings)
    endpoints = [Endpoint(NAME, alias="challenger", settings=settings, refresh_seconds=0, key=NAME),
                 Endpoint(NAME, alias="1", settings=settings, refresh_seconds=0, key="second")]
    with BackgroundServer(endpoints) as running:
        yield running


def _inputs(rows, binary: bool):
    out = []
    for name, datatype, dtype in COLUMNS:
        tensor = tritonclient_http.InferInput(name, [len(rows)], datatype)
        tensor.set_data_from_numpy(np.array([r[name] for r in rows], dtype=dtype), binary_data=binary)
        out.append(tensor)
    return out


@pytest.mark.parametrize("binary", [True, False])
def test_triton_client_round_trip(server, binary):
    client = tritonclient_http.InferenceServerClient(f"{server.host}:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    meta = client.get_model_metadata(NAME)
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [(n, d) for n, d, _ in COLUMNS]
    assert {i["name"]: i.get("parameters", {}).get("range") for i in meta["inputs"]}["hour"] == [0, 23]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities", "confidence", "band"]
    labels = meta["outputs"][1]["parameters"]["labels"]

    result = client.infer(NAME, _inputs(ROWS, binary))
    got = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label").tolist()]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, len(labels))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-9)
    assert got == [labels[i] for i in probabilities.argmax(axis=1)] == ["roads", "noise"]
    assert result.get_response()["model_version"] == "1"

    # the same rows through MLflow's protocol on the same server give the same answer
    import httpx

    mlflow = httpx.post(f"{server.url}/models/{NAME}/invocations", json={"dataframe_records": ROWS}).json()
    assert [p["label"] for p in mlflow["predictions"]] == got

    by_version = client.infer(NAME, _inputs(ROWS[:1], binary), model_version="1",
                              outputs=[tritonclient_http.InferRequestedOutput("label", binary_data=False)])
    assert by_version.as_numpy("probabilities") is None
    assert client.infer("second", _inputs(ROWS[:1], binary)).get_response()["model_name"] == "second"


@pytest.mark.parametrize("change, fragment", [
    ({"hour": 24}, "column 'hour' must be between 0 and 23"),
    ({"district": "Atlantis"}, "unknown district 'Atlantis'"),
    ({"description": "  "}, "empty value"),
])
def test_triton_client_sees_v2_errors(server, change, fragment):
    client = tritonclient_http.InferenceServerClient(f"{server.host}:{server.port}")
    with pytest.raises(InferenceServerException, match=fragment):
        client.infer(NAME, _inputs([{**ROWS[0], **change}], True))


def test_v2_error_bodies_and_routes(server):
    import httpx

    with httpx.Client(base_url=server.url) as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/models/second/versions/1/ready").json()["ready"] is True
        cases = [
            ("/v2/models/nope/infer", {"inputs": []}, 404, "unknown model 'nope'"),
            (f"/v2/models/{NAME}/versions/7/infer", {"inputs": []}, 404, "serves version 1, not 7"),
            (f"/v2/models/{NAME}/infer", {"inputs": []}, 400, "needs 'inputs'"),
            (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "hour", "shape": [1], "datatype": "FP99",
                                                      "data": [1]}]}, 400, "unknown datatype"),
            (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "hour", "shape": [2], "datatype": "INT64",
                                                      "data": [1]}]}, 400, "1 values for shape [2]"),
            (f"/v2/models/{NAME}/infer", {"inputs": [{"name": "hour", "shape": [1], "datatype": "INT64",
                                                      "data": [1]}]}, 400, "missing column 'description'"),
        ]
        for path, body, status, fragment in cases:
            response = http.post(path, json=body)
            assert response.status_code == status, response.text
            assert set(response.json()) == {"error"} and fragment in response.json()["error"], response.text
        assert http.post(f"/v2/models/{NAME}/infer", content=b"x",
                         headers={"content-type": "text/plain"}).status_code == 415
        assert http.get("/v2/models/nope").json() == {"error": "unknown model 'nope' (served: v2-router, second)"}

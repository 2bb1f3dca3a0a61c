"""The HTTP server in process: MLflow's scoring protocol, error cases, alias following."""

from __future__ import annotations

import json

import pandas as pd
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
    [answer] = response.json()["predictions"]  # one stable shape for classifiers: label + p_<class>
    probabilities = {k: v for k, v in answer.items() if k.startswith("p_")}
    assert answer["label"] == "roads" and answer["p_roads"] == max(probabilities.values())
    assert abs(sum(v for k, v in answer.items() if k.startswith("p_")) - 1) < 1e-9
    assert response.json()["model"]["version"] == "1"
    assert response.headers["X-CivicML-Model-Version"] == "1"


def test_csv_and_batches(served, requests_holdout):
    _, _, client = served
    rows = requests_holdout.frame[list(requests_holdout.features)].head(64)
    response = client.post("/invocations", content=rows.to_csv(index=False), headers={"content-type": "text/csv"})
    assert response.status_code == 200
    predictions = [p["label"] for p in response.json()["predictions"]]
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
    # found by an attacker / a busy client: each was a 500 or an answer
    ("[" * 10_000 + "]" * 10_000, "application/json", "malformed JSON"),
    ('{"dataframe_records": [' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "]}", "application/json",
     "malformed JSON"),
    ({"dataframe_split": {"columns": ["description", "description"], "data": [["a", "b"]]}}, None,
     "duplicate columns: description"),
    ({"dataframe_split": {"columns": [["description"]], "data": [["a"]]}}, None, "list of names"),
    ({"dataframe_split": {"columns": [{}], "data": [["a"]]}}, None, "list of names"),
    ({"dataframe_split": {"columns": list(ROW), "data": [[1, 2]]}}, None, "has 2 values for 5 columns"),
    ({"dataframe_split": {"columns": list(ROW), "data": "x"}}, None, "list of rows"),
    ({"dataframe_records": [{**ROW, "hour": 1e20}]}, None, "column 'hour'"),
    ({"dataframe_records": [{**ROW, "hour": 1e308}]}, None, "column 'hour'"),
    ({"dataframe_records": [{**ROW, "hour": 9223372036854775807}]}, None, "must be between 0 and 23"),
    ({"dataframe_records": [{**ROW, "hour": 18446744073709551615}]}, None, "column 'hour'"),
    ("{\"dataframe_records\": [{\"hour\": 1e999}]}", "application/json", "malformed JSON"),
    ({"dataframe_records": [{**ROW, "hour": None}]}, None, "column 'hour' has a missing value"),  # no NaN in ints
    ({"dataframe_records": [{**ROW, "hour": 24}]}, None, "column 'hour' must be between 0 and 23, got 24"),
    ({"dataframe_records": [{**ROW, "weekday": -1}]}, None, "column 'weekday' must be between 0 and 6"),
    ({"dataframe_records": [{**ROW, "weekday": 7}]}, None, "column 'weekday' must be between 0 and 6"),
])
def test_bad_input_gets_a_clear_4xx(served, body, content_type, fragment):
    _, _, client = served
    if isinstance(body, str):
        response = client.post("/invocations", content=body, headers={"content-type": content_type})
    else:
        response = client.post("/invocations", content=json.dumps(body), headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert fragment in response.json()["message"]


def test_status_codes_for_media_type_and_limits(served):
    _, _, client = served
    assert client.post("/invocations", content="x", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/invocations", content="x", headers={"content-type": "application/xml"}).status_code == 415
    many = {"dataframe_records": [ROW] * 10_001}
    response = client.post("/invocations", content=json.dumps(many), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "too many rows: 10001" in response.json()["message"]
    from serving.http import MAX_BODY_BYTES

    huge = b'{"dataframe_records": [' + b" " * (MAX_BODY_BYTES + 1) + b"]}"
    response = client.post("/invocations", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["message"]

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    response = client.post("/invocations", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text


def test_openapi_documents_bodies_and_errors(served):
    _, _, client = served
    doc = client.get("/openapi.json").json()
    invocations = doc["paths"]["/invocations"]["post"]
    assert {"application/json", "text/csv"} <= set(invocations["requestBody"]["content"])
    assert {"200", "400", "413", "415"} <= set(invocations["responses"])
    assert "422" not in invocations["responses"]  # a model failing is the server's fault (500), not the input's
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert "inputs" in infer["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "error" in str(infer["responses"]["400"])


def test_metrics_count_requests_and_batches(served):
    _, _, client = served
    client.post("/invocations", json={"dataframe_records": [ROW]})
    client.post("/invocations", json={"dataframe_records": []})
    text = client.get("/metrics").text
    assert f'civicml_requests_total{{model="{NAME}",protocol="mlflow",status="200",variant="-",version="1"}}' in text
    assert 'status="400"' in text
    assert "civicml_batch_rows_bucket" in text and "civicml_model_loads_total" in text


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
    import threading
    import time

    import httpx

    with BackgroundServer(endpoint) as server, EndpointClient(server.url) as client:
        assert client.predict([ROW])["model"]["version"] == "1"
        codes: list[int] = []
        stop = threading.Event()

        def steady_load():  # a client calling all along, through both swaps
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while not stop.is_set():
                    codes.append(http.post("/invocations", json={"dataframe_records": [ROW]}).status_code)

        workers = [threading.Thread(target=steady_load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            outcome = registry.promote(NAME, requests_holdout.frame, "department",
                                       policy=registry.PromotionPolicy(max_regression=0.05), settings=settings)
            assert outcome.promoted, outcome.reason
            deadline = time.monotonic() + 30
            while client.predict([ROW])["model"]["version"] != "2":
                assert time.monotonic() < deadline, "the endpoint did not follow the alias"
                time.sleep(0.1)
            registry.rollback(NAME, settings=settings)
            while client.predict([ROW])["model"]["version"] != "1":
                assert time.monotonic() < deadline + 30, "the endpoint did not follow the rollback"
                time.sleep(0.1)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        assert codes and set(codes) == {200}, f"{len([c for c in codes if c != 200])} failed of {len(codes)}"


def _rows(holdout, n):
    return holdout.frame[list(holdout.features)].head(n).to_dict(orient="records")


def test_batching_gives_each_caller_its_own_rows(served, requests_holdout):
    """Requests merged into one model call get back exactly what they get one by one."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    settings, _, _ = served
    rows = _rows(requests_holdout, 120)
    requests = [rows[i:i + 1 + i % 3] for i in range(0, 120, 3)]  # 1-3 rows each, different sizes
    alone = Endpoint(NAME, alias="1", settings=settings, refresh_seconds=0, batching=False)
    expected = [alone.predict(pd.DataFrame(r))[0] for r in requests]
    batched = Endpoint(NAME, alias="1", settings=settings, refresh_seconds=0, max_batch=16, max_wait_ms=200)
    batched.load()
    runtime = batched.current.runtime
    before = runtime.batches
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda r: batched.predict(pd.DataFrame(r))[0], requests))
    assert runtime.batches - before < len(requests)  # requests were merged (a 200 ms window for 16 threads)
    for got, want in zip(answers, expected):
        assert list(got["label"]) == list(want["label"])
        for column in want:
            if column != "label":
                np.testing.assert_allclose(got[column], want[column], rtol=0, atol=1e-12)
    alone.close()
    batched.close()


def test_batches_stay_within_max_batch_and_split_per_request(served, requests_holdout):
    from serving.batching import BatchingRuntime

    settings, _, _ = served
    endpoint = Endpoint(NAME, alias="1", settings=settings, refresh_seconds=0, max_batch=8, max_wait_ms=200)
    endpoint.load()
    runtime = endpoint.current.runtime
    assert isinstance(runtime, BatchingRuntime)
    sizes = []
    runtime.on_batch = lambda rows, seconds: sizes.append(rows)
    rows = _rows(requests_holdout, 30)
    checked = [endpoint.current.validator.prepare(pd.DataFrame(rows[i:i + 3])).data for i in range(0, 30, 3)]
    futures = [runtime.submit(c) for c in checked]  # ten 3-row requests at once
    answers = [f.result(timeout=60) for f in futures]
    assert all(s <= 8 for s in sizes) and sum(sizes) == 30
    assert [list(a["label"]) for a in answers] == [
        list(endpoint.predict(pd.DataFrame(rows[i:i + 3]))[0]["label"]) for i in range(0, 30, 3)]
    endpoint.close()


@pytest.mark.slow
def test_concurrent_http_clients_get_their_own_answers(served, requests_holdout):
    """Over real HTTP: 96 requests from 16 threads, each answered as when sent alone."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    settings, endpoint, client = served
    rows = _rows(requests_holdout, 96)
    expected = [client.post("/invocations", json={"dataframe_records": [r]}).json()["predictions"][0]["label"]
                for r in rows]
    with BackgroundServer(Endpoint(NAME, settings=settings, refresh_seconds=0)) as server:
        with httpx.Client(base_url=server.url, timeout=60,
                          limits=httpx.Limits(max_connections=16)) as http:
            def ask(row):
                response = http.post("/invocations", json={"dataframe_records": [row]})
                assert response.status_code == 200, response.text
                return response.json()["predictions"][0]["label"]

            with ThreadPoolExecutor(16) as pool:
                assert list(pool.map(ask, rows)) == expected


def test_rows_without_any_known_word_are_answered_like_the_pipeline(served, requests_holdout):
    """The compiled feature path normalises rows whose words are all unknown (last in a batch too) as
    scikit-learn does; found by schema fuzzing as a 500."""
    import numpy as np
    import mlflow

    settings, endpoint, client = served
    rows = _rows(requests_holdout, 3) + [{**ROW, "description": "Qzx vbnm"}, {**ROW, "description": "Xyzzy plugh"}]
    response = client.post("/invocations", json={"dataframe_records": rows})
    assert response.status_code == 200, response.text
    got = response.json()["predictions"]
    mlflow.set_tracking_uri(settings.tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/{NAME}/1")
    frame = pd.DataFrame(rows)
    want = model.predict_proba(frame)
    labels = [str(c) for c in model.classes_]
    assert [a["label"] for a in got] == [str(x) for x in model.predict(frame)]
    np.testing.assert_allclose([[a[f"p_{c}"] for c in labels] for a in got], want, rtol=0, atol=1e-9)


def test_a_client_that_leaves_mid_body_is_no_server_error(served):
    """Found under load (wrk closing its connections at the end of a run): counted as 499, not 500."""
    import socket
    import time

    import httpx

    settings, _, _ = served
    with BackgroundServer(Endpoint(NAME, alias="1", settings=settings, refresh_seconds=0)) as server:
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000000\r\n\r\n" + b'{"dataframe_records": [' + b" " * 1000)
            time.sleep(0.5)  # the server is reading the body
        for _ in range(100):
            text = httpx.get(f"{server.url}/metrics").text
            if 'status="499"' in text or 'status="500"' in text:
                break
            time.sleep(0.1)
        assert 'status="499"' in text and 'status="500"' not in text

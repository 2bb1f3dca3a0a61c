"""A hostile caller's findings (issue 22), each answered: params, one costly request, protocol leniencies,
the OpenAPI document of a two-model server. In process (TestClient) against a really trained 311 router."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
from fastapi.testclient import TestClient

import registry
from projects import get_use_case, train
from serving import Endpoint, create_app
from serving.http import Limits

NAME = "hostile-router"
LAX = registry.PromotionPolicy(min_value=0.0, max_regression=1.0)
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}
V2_COLUMNS = [("description", "BYTES"), ("district", "BYTES"), ("channel", "BYTES"), ("hour", "INT64"),
              ("weekday", "INT64")]


@pytest.fixture(scope="module")
def settings(tmp_path_factory, small_requests, requests_holdout):
    from civicml.settings import Settings

    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("hostile") / "home", user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", settings=settings)
    registry.register(result.model_uri, NAME, settings=settings)
    assert registry.promote(NAME, requests_holdout.frame, "department", policy=LAX, settings=settings).promoted
    return settings


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(Endpoint(NAME, settings=settings, refresh_seconds=0), follow=False)) as client:
        yield client


def _v2(rows: list[dict], **change) -> dict:
    inputs = [{"name": n, "shape": [len(rows)], "datatype": d, "data": [r[n] for r in rows]} for n, d in V2_COLUMNS]
    for name, tensor in change.items():
        inputs = [{**t, **tensor} if t["name"] == name else t for t in inputs]
    return {"inputs": inputs}


# -- 1. params: refused unless declared; never another answer shape ------------------------------------
def test_params_the_model_does_not_declare_are_refused_by_name(client):
    response = client.post("/invocations", json={"dataframe_records": [ROW], "params": {"x": 1, "y": 2}})
    assert response.status_code == 400, response.text
    assert "unknown params for this model: x, y (it declares none)" in response.json()["message"]
    empty = client.post("/invocations", json={"dataframe_records": [ROW], "params": {}})
    assert empty.status_code == 200 and set(empty.json()["predictions"][0]) >= {"label", "p_roads"}


def test_v2_content_type_parameter_keeps_the_answer_shape(client):
    plain = client.post(f"/v2/models/{NAME}/infer", json=_v2([ROW]))
    with_pd = client.post(f"/v2/models/{NAME}/infer", json={**_v2([ROW]), "parameters": {"content_type": "pd"}})
    assert plain.status_code == with_pd.status_code == 200, with_pd.text
    assert [o["name"] for o in with_pd.json()["outputs"]] == ["label", "probabilities", "confidence", "band"]
    assert with_pd.json()["outputs"] == plain.json()["outputs"]
    other = client.post(f"/v2/models/{NAME}/infer", json={**_v2([ROW]), "parameters": {"content_type": "np"}})
    assert other.status_code == 400 and "content_type 'np'" in other.json()["error"]
    unknown = client.post(f"/v2/models/{NAME}/infer", json={**_v2([ROW]), "parameters": {"temperature": 2}})
    assert unknown.status_code == 400 and "temperature" in unknown.json()["error"]


ECHO = textwrap.dedent('''
    import threading

    import mlflow
    import numpy as np
    from mlflow.pyfunc import PythonModel


    class Echo(PythonModel):
        """Answers, per row, the thread that ran it and its declared param ``suffix``."""

        def predict(self, context, model_input, params=None):
            label = f"{threading.current_thread().name}:{(params or {}).get('suffix')}"
            return np.asarray([label] * len(model_input), dtype=object)


    mlflow.models.set_model(Echo())
''')


def test_declared_params_are_honoured_in_the_batch_worker(settings, tmp_path):
    """A model that declares params gets them: from the batch worker (``inline_ms=0``: never the event loop),
    and in the batch run on the event loop (a cheap model's, serving/batching.py)."""
    import mlflow
    from mlflow.models import infer_signature

    code = tmp_path / "echo.py"
    code.write_text(ECHO)
    example = pd.DataFrame([ROW])
    mlflow.set_tracking_uri(settings.tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(code), input_example=example,
                                       signature=infer_signature(example, ["x"], params={"suffix": "a"}))
    version = registry.register(info.model_uri, "params-echo", alias=None, settings=settings).version
    endpoint = Endpoint("params-echo", alias=version, settings=settings, refresh_seconds=0, inline_ms=0)
    inline = Endpoint("params-echo", alias=version, settings=settings, refresh_seconds=0, key="inline",
                      inline_ms=60_000)  # cheap enough whatever the machine's load: on the event loop after warm-up
    with TestClient(create_app([endpoint, inline], follow=False)) as client:
        given = client.post("/invocations", json={"dataframe_records": [ROW, ROW], "params": {"suffix": "z"}})
        assert given.status_code == 200, given.text
        assert given.json()["predictions"] == ["batch-pyfunc:z"] * 2  # the batch worker thread, the param
        default = client.post("/invocations", json={"dataframe_records": [ROW]})
        assert default.json()["predictions"] == ["batch-pyfunc:a"]
        other = client.post("/invocations", json={"dataframe_records": [ROW], "params": {"suffix": "z", "k": 1}})
        assert other.status_code == 400 and "unknown params for this model: k (it declares: suffix)" in \
            other.json()["message"]
        v2 = client.post(f"/v2/models/params-echo@{version}/infer", json={**_v2([ROW]), "parameters": {"suffix": "q"}})
        assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == ["batch-pyfunc:q"], v2.text
        on_loop = client.post("/models/inline/invocations", json={"dataframe_records": [ROW], "params": {"suffix": "z"}})
        thread, _, suffix = on_loop.json()["predictions"][0].partition(":")
        assert on_loop.status_code == 200 and suffix == "z" and thread != "batch-pyfunc", on_loop.text


# -- 2. one request's cost is capped, its wait is bounded, large requests take turns --------------------
def test_the_default_cost_limit_refuses_the_campaigns_request():
    from civicml.settings import ServingLimits

    assert ServingLimits().max_cost < 1_846 * 9_000  # the 16.7 MB body that held the worker for 28-36 s
    assert ServingLimits.from_env({"CIVICML_SERVE_MAX_COST": "5000"}).max_cost == 5000
    from civicml.errors import InvalidInput

    with pytest.raises(InvalidInput, match="CIVICML_SERVE_DEADLINE must be a positive number"):
        ServingLimits.from_env({"CIVICML_SERVE_DEADLINE": "-1"})


def test_a_request_over_the_cost_limit_gets_413_up_front(settings):
    app = create_app(Endpoint(NAME, settings=settings, refresh_seconds=0), follow=False,
                     limits=Limits(max_cost=50_000))
    with TestClient(app) as client:
        costly = [{**ROW, "description": "pothole " * 1_100}] * 6  # 6 rows x 8,800 characters
        response = client.post("/invocations", json={"dataframe_records": costly})
        assert response.status_code == 413, response.text
        assert "the limit is 50000 per request" in response.json()["message"]
        v2 = client.post(f"/v2/models/{NAME}/infer", json=_v2(costly))
        assert v2.status_code == 413 and "costs" in v2.json()["error"]
        assert client.post("/invocations", json={"dataframe_records": costly[:1]}).status_code == 200


def test_a_request_past_its_deadline_gets_503_with_retry_after(settings):
    app = create_app(Endpoint(NAME, settings=settings, refresh_seconds=0), follow=False,
                     limits=Limits(deadline_seconds=1e-9))
    with TestClient(app) as client:
        response = client.post("/invocations", json={"dataframe_records": [ROW]})
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) >= 1
        assert "time budget" in response.json()["message"]
        v2 = client.post(f"/v2/models/{NAME}/infer", json=_v2([ROW]))
        assert v2.status_code == 503 and int(v2.headers["Retry-After"]) >= 1


def test_a_small_request_is_answered_while_a_large_one_is_still_running(client):
    """Structural, not timed: the batcher takes one slice from each caller in turn, so a one-row request
    that arrives behind a 200-slice request is answered before that request is done."""
    from serving.batching import BatchingRuntime
    from serving.codecs import MLflowCodec
    from serving.runtime import get_runtime

    endpoint = client.app.state.endpoints[NAME]
    inner = get_runtime("pyfunc", endpoint.current.runtime.model)
    inner.load()
    batcher = BatchingRuntime(inner, max_batch=1, max_wait_ms=0, slice_cost=1)  # one row a slice: 200 slices

    def columns(rows):
        return endpoint.current.validator.prepare(MLflowCodec.decode(
            json.dumps({"dataframe_records": rows}).encode(), "application/json")[0]).data

    big, small = columns([ROW] * 200), columns([{**ROW, "description": "Loud music all night"}])
    try:
        large = batcher.submit(big)
        answer = batcher.submit(small).result(timeout=60)
        assert not large.done()  # still running when the small caller got its answer
        assert list(answer["label"]) == ["noise"]
        whole = large.result(timeout=120)
        assert len(whole["label"]) == 200 and set(whole["label"]) == {"roads"}
        assert batcher.batches >= 201
    finally:
        batcher.unload()


# -- 9. protocol leniencies -------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type, body, status, fragment", [
    ("application/json; something=something", json.dumps({"dataframe_records": [ROW]}).encode(), 415,
     "unrecognized content type parameters: something"),
    ("application/json; charset=latin-1", json.dumps({"dataframe_records": [{**ROW, "description": "Café"}]},
                                                     ensure_ascii=False).encode("latin-1"), 415,
     "unsupported charset 'latin-1'"),
    ("application/json; charset=utf-16", json.dumps({"dataframe_records": [ROW]}).encode("utf-16"), 415,
     "unsupported charset 'utf-16'"),
    ("text/csv; charset=iso-8859-1", b"description\nx\n", 415, "unsupported charset"),
    ("text/csv", b"description,district,channel,hour,weekday,hour\nHuge pothole,Midtown,app,8,1,23\n", 400,
     "the CSV header names a column twice: 'hour'"),
])
def test_content_types_as_mlflows_scoring_server_reads_them(client, content_type, body, status, fragment):
    response = client.post("/invocations", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert fragment in response.json()["message"]


def test_utf8_charset_is_accepted(client):
    body = json.dumps({"dataframe_records": [ROW]}).encode()
    for content_type in ("application/json; charset=utf-8", "application/json;charset=UTF-8"):
        assert client.post("/invocations", content=body, headers={"content-type": content_type}).status_code == 200
    csv = b"description,district,channel,hour,weekday\nHuge pothole on Oak Avenue,Midtown,app,8,1\n"
    response = client.post("/invocations", content=csv, headers={"content-type": "text/csv; charset=utf-8"})
    assert response.status_code == 200 and response.json()["predictions"][0]["label"] == "roads"


@pytest.mark.parametrize("change, fragment", [
    ({"hour": {"datatype": "UINT8", "data": [300]}}, "UINT8: 300 is outside 0..255"),
    ({"hour": {"datatype": "INT8", "data": [-129]}}, "INT8: -129 is outside -128..127"),
    ({"hour": {"datatype": "INT64", "data": [8.5]}}, "INT64: its data must be whole numbers"),
    ({"hour": {"datatype": "BYTES", "data": ["8"]}}, "input 'hour' is BYTES, but the model's column 'hour' is long"),
    ({"hour": {"shape": [True]}}, "non-negative integers"),
    ({"hour": {"shape": []}}, "non-empty list"),
])
def test_v2_datatypes_and_shapes_are_checked(client, change, fragment):
    response = client.post(f"/v2/models/{NAME}/infer", json=_v2([ROW], **change))
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]


def test_v2_unknown_requested_output_is_refused(client):
    response = client.post(f"/v2/models/{NAME}/infer", json={**_v2([ROW]), "outputs": [{"name": "colour"}]})
    assert response.status_code == 400, response.text
    assert "unknown requested outputs: colour (the model's outputs: label, probabilities, confidence, band)" \
        in response.json()["error"]
    known = client.post(f"/v2/models/{NAME}/infer", json={**_v2([ROW]), "outputs": [{"name": "label"}]})
    assert known.status_code == 200 and [o["name"] for o in known.json()["outputs"]] == ["label"]


# -- 7. the OpenAPI document says what the checks do ------------------------------------------------------
def test_openapi_says_exactly_one_key_on_a_two_model_server_and_shapes_agree(settings):
    endpoints = [Endpoint(NAME, settings=settings, refresh_seconds=0),
                 Endpoint("no-such-model", settings=settings, refresh_seconds=0)]  # loads nothing: no columns
    with TestClient(create_app(endpoints, follow=False)) as client:
        doc = client.get("/openapi.json").json()
        body = doc["paths"]["/models/{name}/invocations"]["post"]["requestBody"]["content"]["application/json"]
        variants = body["schema"]["oneOf"]
        keys = ["dataframe_split", "dataframe_records", "instances", "inputs"]
        assert [v["required"] for v in variants] == [[k] for k in keys]
        assert all(v["properties"][other] is False for v in variants for other in keys if [other] != v["required"])
        one = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert all(v["properties"]["params"]["additionalProperties"] is False for v in one["oneOf"])
        shape = doc["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"][
            "schema"]["properties"]["inputs"]["items"]["properties"]["shape"]
        assert shape["minItems"] == 1 and shape["items"] == {"type": "integer", "minimum": 0}
        both = client.post(f"/models/{NAME}/invocations", json={"dataframe_records": [ROW], "instances": [ROW]})
        assert both.status_code == 400 and "exactly one of the keys" in both.json()["message"]

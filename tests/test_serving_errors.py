"""Errors to statuses (serving/errors.py): the caller's input is a 4xx, the server's own failure a 500.

A model that fails with a Python error (here ``KeyError``) on an accepted request is a fault of the server,
not of the input: a 500 with a generic message on both protocols, the error in the server's log, never a
422 that blames the caller. A body a codec cannot read is still the caller's (400), and the explanation
routes keep the server's body limit.
"""

from __future__ import annotations

import logging
import textwrap

import pandas as pd
import pytest
from fastapi.testclient import TestClient

import registry
from serving import Endpoint, Limits, create_app

NAME = "keyerror-router"
ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8,
       "weekday": 1}

KEYERROR = textwrap.dedent('''
    import mlflow
    import numpy as np
    from mlflow.pyfunc import PythonModel


    class Lookup(PythonModel):
        """Answers its input example (weekday 0, used for the warm-up); a bug on every other request."""

        def predict(self, context, model_input, params=None):
            if (model_input["weekday"] != 0).any():
                return {}["internal lookup table"]["weekday"]
            return np.asarray(["roads"] * len(model_input), dtype=object)


    mlflow.models.set_model(Lookup())
''')


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    import mlflow

    from civicml.settings import Settings
    from civicml.tracking import fluent

    folder = tmp_path_factory.mktemp("errors")
    settings = Settings.from_env(env={}, home=folder / "home", user="tester")
    code = folder / "lookup.py"
    code.write_text(KEYERROR)
    with fluent(settings), mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                       input_example=pd.DataFrame([{**ROW, "weekday": 0}]))
    version = registry.register(info.model_uri, NAME, alias=None, settings=settings).version
    endpoint = Endpoint(NAME, alias=version, settings=settings, refresh_seconds=0)
    with TestClient(create_app(endpoint, follow=False, limits=Limits(max_body_bytes=4096))) as client:
        client.key = endpoint.key  # the model's name on this server (NAME@version: no alias)
        yield client


def test_a_model_failing_with_a_python_error_is_a_500_not_the_callers_fault(client, caplog):
    assert client.post("/invocations", json={"dataframe_records": [{**ROW, "weekday": 0}]}).status_code == 200
    with caplog.at_level(logging.ERROR, logger="civicml.serving"):
        mlflow = client.post("/invocations", json={"dataframe_records": [ROW]})
        v2 = client.post(f"/v2/models/{client.key}/infer", json={"inputs": [
            {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "INT64", "data": [v]}
            for k, v in ROW.items()]})
    assert mlflow.status_code == 500, mlflow.text
    assert mlflow.json()["error_code"] == "INTERNAL_ERROR" and "lookup" not in mlflow.text
    assert v2.status_code == 500 and set(v2.json()) == {"error"} and "lookup" not in v2.text, v2.text
    logged = [r for r in caplog.records
              if r.name == "civicml.serving" and r.exc_info and isinstance(r.exc_info[1], KeyError)]
    assert len(logged) == 2  # the server's log has what the caller is not told
    metrics = client.get("/metrics").text
    assert f'civicml_requests_total{{model="{NAME}",protocol="mlflow",status="500",variant="-",version="-"}} 1.0' \
        in metrics


@pytest.mark.parametrize("change, fragment", [
    ({"datatype": {"not": "a name"}}, "has an unknown datatype"),  # a JSON object where a name belongs
    ({"data": {"a": 1}}, "needs 'data' as a list"),
])
def test_a_v2_body_the_codec_cannot_read_is_a_400(client, change, fragment):
    body = {"inputs": [{"name": "hour", "shape": [1], "datatype": "INT64", "data": [8], **change}]}
    response = client.post(f"/v2/models/{client.key}/infer", json=body)
    assert response.status_code == 400 and fragment in response.json()["error"], response.text
    outputs = client.post(f"/v2/models/{client.key}/infer", json={**body, "outputs": True})
    assert outputs.status_code == 400, outputs.text
    fine = {"inputs": [{"name": "hour", "shape": [1], "datatype": "INT64", "data": [8]}], "outputs": True}
    assert "'outputs' must be a list" in client.post(f"/v2/models/{client.key}/infer", json=fine).json()["error"]


def test_explanations_keep_the_servers_body_limit(client):
    huge = {"dataframe_records": [ROW] * 100}  # over the 4096 bytes this server was given
    assert client.post("/invocations", json=huge).status_code == 413
    response = client.post("/explain", json=huge)
    assert response.status_code == 413 and "limit is 4096 bytes" in response.json()["message"], response.text
    unknown = client.post("/models/nobody/explain", json={"dataframe_records": [ROW]})
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

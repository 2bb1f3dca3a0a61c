"""The pretrained MiniLM router through the same registry, gates and HTTP server as the other models."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import registry
from projects import get_use_case, train
from serving import Endpoint, create_app

TEXTS = ["Massive crater in the asphalt on Main St, my bike wheel is bent",
         "Nobody collected the trash on Elm Street for two weeks",
         "Party next door blasting music at 3am again",
         "Fire hydrant gushing water all over Cedar Lane"]


@pytest.mark.slow
def test_register_promote_serve_minilm_over_http(settings, requests_dataset, requests_holdout):
    use_case = get_use_case("service_requests")
    result = train(use_case, requests_dataset, "minilm_linear", settings=settings)
    registry.register(result.model_uri, "text-router", settings=settings)
    outcome = registry.promote("text-router", requests_holdout.frame, "department", settings=settings)
    assert outcome.promoted, outcome.reason
    with TestClient(create_app(Endpoint("text-router", settings=settings, refresh_seconds=0), follow=False)) as c:
        one = c.post("/invocations", json={"dataframe_records": [{"description": TEXTS[0]}]})
        assert one.status_code == 200, one.text
        assert one.json()["predictions"][0]["label"] == "roads"
        batch = c.post("/invocations", json={"dataframe_split": {"columns": ["description"],
                                                                  "data": [[t] for t in TEXTS]}})
        assert batch.status_code == 200
        labels = [p["label"] for p in batch.json()["predictions"]]
        assert labels == ["roads", "sanitation", "noise", "water"]
        probabilities = batch.json()["predictions"][0]
        assert abs(sum(v for k, v in probabilities.items() if k.startswith("p_")) - 1) < 1e-3
        assert batch.json()["model"]["version"] == "1"
        for bad, fragment in [("", "empty value"), (17, "must be text"), ("x" * 100_000, "longer than")]:
            response = c.post("/invocations", json={"dataframe_records": [{"description": bad}]})
            assert response.status_code == 400 and fragment in response.json()["message"], response.text

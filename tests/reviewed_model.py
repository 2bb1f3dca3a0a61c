"""One live 311 router in a home of its own, with answers served and recorded: shared by the review and the
public-page tests (``pytest_plugins = ["reviewed_model"]``).

A home of its own because it promotes a champion and writes reviews to the trail: the ``explained_model``
fixture's home is read by other tests that expect nothing live there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

NAME = "public-router"
ROW = {"description": "Huge pothole on Oak Avenue damaged my tire", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}
DISTRICTS = ("Northside", "Riverside", "Old Town", "Midtown")
ANSWERED = 8


@dataclass
class Reviewed:
    settings: object
    home: Path
    name: str
    answer_ids: list[str]
    labels: list[str]
    rows: list[dict]


@pytest.fixture(scope="session")
def reviewed_model(tmp_path_factory, small_requests, requests_holdout) -> Reviewed:
    """Logistic regression on 500 requests, registered and promoted (per-district figures on its card), then
    ``ANSWERED`` rows answered by a server that records every answer."""
    from fastapi.testclient import TestClient

    import registry
    from app.cli.monitor import serving_recorder
    from civicml.settings import Settings
    from projects import get_use_case, train
    from serving import Endpoint, create_app

    home = tmp_path_factory.mktemp("reviewed") / "home"
    settings = Settings.from_env(env={}, home=home, user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", {"char_ngrams": False},
                   settings=settings)
    registry.register(result.model_uri, NAME, settings=settings)
    policy = registry.PromotionPolicy(min_value=0.0, report_by=("district",))
    assert registry.promote(NAME, requests_holdout.frame, "department", policy=policy, settings=settings).promoted
    rows = [{**ROW, "district": DISTRICTS[i % 4], "hour": i} for i in range(ANSWERED)]
    recorder, feedback = serving_recorder([NAME], "all", settings)
    endpoint = Endpoint(NAME, alias="champion", settings=settings, refresh_seconds=0)
    with TestClient(create_app(endpoint, follow=False, recorder=recorder, feedback=feedback)) as client:
        answered = client.post("/invocations", json={"dataframe_records": rows})
        assert answered.status_code == 200, answered.text
        for recording in recorder.recorders.values():
            recording.flush()
    recorder.close()
    body = answered.json()
    return Reviewed(settings, home, NAME, body["answer_ids"], [p["label"] for p in body["predictions"]], rows)

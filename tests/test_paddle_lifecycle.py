"""The Paddle use cases through the same registry, policy gates and HTTP server as the 311 models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fastapi.testclient import TestClient

import registry
from civicml.settings import Settings
from projects import get_use_case, load_dataset, train
from serving import Endpoint, create_app


def _lifecycle(use_case, dataset, family, params, tmp_path, holdout_rows, **policy_changes):
    settings = Settings.from_env(env={}, home=tmp_path / "home", user="tester")
    result = train(use_case, dataset, family, params, settings=settings)
    registry.register(result.model_uri, use_case.registered_model, settings=settings)
    policy = dataclasses.replace(registry.PromotionPolicy.from_yaml(use_case.policy_file), **policy_changes)
    holdout = use_case.holdout(tmp_path / "holdout", n=holdout_rows)
    outcome = registry.promote(use_case.registered_model, holdout.frame, holdout.target, policy=policy,
                               settings=settings)
    return settings, result, holdout, outcome


@pytest.mark.slow
def test_traffic_flow_is_registered_promoted_and_served(tmp_path):
    use_case = get_use_case("traffic_flow")
    dataset = load_dataset(use_case, use_case.generate_sources(tmp_path / "data", n=8000, seed=11))
    settings, result, holdout, outcome = _lifecycle(use_case, dataset, "mlp", {"epochs": 15}, tmp_path, 4000)
    assert outcome.promoted, outcome.reason
    gate = [v for v in outcome.verdicts if v.gate.startswith("mae")][0]
    assert gate.passed and gate.figure < 45.0  # re-evaluated on the held-out set, lower is better

    rows = holdout.frame[list(holdout.features)].head(64)
    with TestClient(create_app(Endpoint(use_case.registered_model, settings=settings, refresh_seconds=0),
                               follow=False)) as client:
        batch = client.post("/invocations", json={"dataframe_split": rows.to_dict(orient="split", index=False)})
        assert batch.status_code == 200, batch.text
        forecasts = np.asarray(batch.json()["predictions"], dtype=float)
        assert forecasts.shape == (64,) and np.isfinite(forecasts).all()
        one = client.post("/invocations", json={"dataframe_records": rows.head(1).to_dict(orient="records")})
        assert one.status_code == 200
        assert one.json()["predictions"][0] == pytest.approx(forecasts[0], rel=1e-5)
        bad = client.post("/invocations", json={"dataframe_records": [{**rows.iloc[0].to_dict(), rows.columns[0]: "x"}]})
        assert bad.status_code == 400


@pytest.mark.slow
def test_street_scenes_is_registered_promoted_and_served(tmp_path):
    use_case = get_use_case("street_scenes")
    dataset = load_dataset(use_case, use_case.generate_sources(tmp_path / "data", n=900, seed=7))
    # a short training for the test: the bar is lowered, every other gate of the project's policy stays
    settings, result, holdout, outcome = _lifecycle(use_case, dataset, "cnn", {"epochs": 5}, tmp_path, 300,
                                                    min_value=0.4)
    assert outcome.promoted, outcome.reason

    images = np.stack(holdout.frame["image"].to_numpy()[:64]).astype(float)
    with TestClient(create_app(Endpoint(use_case.registered_model, settings=settings, refresh_seconds=0),
                               follow=False)) as client:
        batch = client.post("/invocations", json={"inputs": images.tolist()})
        assert batch.status_code == 200, batch.text
        labels = [p["label"] for p in batch.json()["predictions"]]
        assert len(labels) == 64
        accuracy = np.mean(np.asarray(labels) == holdout.frame["label"].to_numpy()[:64])
        assert accuracy > 0.5  # six classes: chance is 1/6
        one = client.post("/invocations", json={"instances": images[:1].tolist()})
        assert one.status_code == 200 and one.json()["predictions"][0]["label"] == labels[0]
        wrong = client.post("/invocations", json={"inputs": images[:, :, :16, :16].tolist()})
        assert wrong.status_code == 400 and "shape" in wrong.json()["message"]

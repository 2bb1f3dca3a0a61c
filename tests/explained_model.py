"""One registered 311 router with its rules and views, shared by the explain and console tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

NAME = "explained-router"
ROW = {"description": "Huge pothole on Oak Avenue damaged my tire", "district": "Midtown", "channel": "app",
       "hour": 8, "weekday": 1}


@dataclass
class Explained:
    settings: object
    home: Path
    name: str
    version: object
    row: dict


@pytest.fixture(scope="session")
def explained_model(tmp_path_factory, small_requests, requests_holdout) -> Explained:
    """Word TF-IDF + one-hot logistic regression on 500 requests, registered (challenger) with a held-out set."""
    import registry
    from civicml.settings import Settings
    from projects import get_use_case, train

    home = tmp_path_factory.mktemp("explained") / "home"
    settings = Settings.from_env(env={}, home=home, user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", {"char_ngrams": False},
                   settings=settings)
    version = registry.register(result.model_uri, NAME, settings=settings, holdout=requests_holdout.frame,
                                target="department")
    return Explained(settings, home, NAME, version, dict(ROW))

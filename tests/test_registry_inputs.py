"""One choice of policy and held-out set: the console's promote button, the demo and ``civicml promote`` all judge
a candidate by the model's *governing* policy and the held-out set it names (``registry.inputs.held_out``).

The model here is not the one the 311 project's ``policy.yaml`` governs (``model: service-requests-router``),
so its governing policy is the built-in one. Before, the console and the demo passed the project's file
instead: a policy for another model (refused), and for the model itself an override that needs
``policy_owner`` where ``civicml promote`` does not.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import registry
from app.cli import main
from app.console import create_console
from civicml.settings import Settings
from projects import get_use_case, train

NAME = "held-out-router"


@pytest.fixture(scope="module")
def two_candidates(tmp_path_factory, small_requests):
    """One trained router registered twice (v1, v2): one candidate for the console, one for the CLI."""
    home = tmp_path_factory.mktemp("inputs") / "home"
    settings = Settings.from_env(env={}, home=home, user="tester")
    result = train(get_use_case("service_requests"), small_requests, "logreg", {"char_ngrams": False},
                   settings=settings)
    first = registry.register(result.model_uri, NAME, settings=settings)
    return settings, home, result.model_uri, first


def _judged(settings, version: str) -> dict:
    """The audit record of the promotion (or refusal) of ``version``."""
    return next(r for r in reversed(registry.audit(NAME, settings=settings))
                if r["action"] in ("promote", "refuse") and r["to"] == version)


def test_console_demo_and_cli_promote_choose_the_same_policy_and_held_out_set(two_candidates):
    settings, home, model_uri, first = two_candidates
    governing = registry.governing_policy(NAME, settings=settings)
    chosen = registry.held_out(NAME, settings)  # what the demo registers and promotes with
    assert chosen.policy == governing and chosen.policy.model is None  # the built-in policy, not the project's file

    with TestClient(create_console(settings)) as client:
        pressed = client.post(f"/models/{NAME}/promote")
    assert pressed.status_code == 200, pressed.text  # not a 400 for another model's policy, nor a 403
    by_console = _judged(settings, first.version)

    second = registry.register(model_uri, NAME, settings=settings)  # a new challenger for the CLI
    assert main(["promote", NAME, "--home", str(home)]) in (0, 1)  # promoted or refused: judged either way
    by_cli = _judged(settings, second.version)

    for record in (by_console, by_cli):
        assert "override" not in " ".join(record["notes"])
        assert record["policy"] == governing.to_record()
    assert by_console["holdout"] == by_cli["holdout"]
    assert by_cli["holdout"]["name"] == chosen.label and by_cli["holdout"]["rows"] == len(chosen.dataset.frame)
    inputs = registry.promotion_inputs(NAME, settings)  # what the demo promotes with
    assert inputs.policy == governing and inputs.holdout_name == chosen.label

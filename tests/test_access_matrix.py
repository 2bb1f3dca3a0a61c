"""Role x action x mode, generated from civicml.access.ACTIONS: every registry entry point refuses exactly the
roles the table refuses, on the embedded store and in team mode; no token, a wrong, expired or revoked token,
and environment tricks are refused everywhere; docs/team-mode.md prints the same table.

Each call is made so that, once authorised, it stops at once on something harmless (a version that does not
exist): an allowed call ends in NotFound (or succeeds), a refused one in PermissionDenied, and nothing is stored.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

import registry
from civicml.access import ACTIONS, ROLES, markdown_table
from civicml.errors import NotFound, PermissionDenied
from civicml.settings import Settings
from monitoring import review_answer
from projects import get_use_case, train
from registry import rollout
from team_mode import moto_s3, team_pg, team_server  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
NAME = "matrix"
NO_RUN = "runs:/" + "0" * 32 + "/model"

# principals: one per role, and a release manager who also owns policies (override and force need promote too)
PRINCIPALS = {role: (role,) for role in ROLES} | {"release_manager+policy_owner": ("release_manager", "policy_owner")}
TOKENS = {who: f"token-{who}-0123456789" for who in PRINCIPALS}


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ACCESS = {"principals": {
    **{who.replace("+", "_"): {"roles": list(roles), "token_sha256": _h(TOKENS[who])} for who, roles in
       PRINCIPALS.items()},
    "expired": {"roles": list(ROLES), "token_sha256": _h("token-expired-0123456789"), "expires": "2020-01-01"},
    "revoked": {"roles": list(ROLES), "token_sha256": _h("token-revoked-0123456789"), "revoked": True},
    "later": {"roles": ["service"], "token_sha256": _h("token-later-0123456789"), "expires": "2999-12-31"},
}}

# action -> a call through the public entry point that performs it
CALLS = {
    "read": lambda s: registry.versions(NAME, settings=s),
    "predict": lambda s: registry.resolve(NAME, "nosuch", settings=s),
    "train": lambda s: registry.require(s, "train"),  # the check `projects.train` makes first
    "tune": lambda s: registry.require(s, "tune"),  # the check `tuning.tune` makes first
    "register": lambda s: registry.register(NO_RUN, NAME, settings=s),
    "set_alias": lambda s: registry.set_alias(NAME, "shadow", "99", settings=s),
    "approve": lambda s: registry.approve(NAME, "99", settings=s),
    "promote": lambda s: registry.promote(NAME, None, None, from_alias="nosuch", settings=s),
    "rollback": lambda s: registry.rollback(NAME, settings=s),
    "override_policy": lambda s: registry.promote(NAME, None, None, from_alias="nosuch", settings=s,
                                                  policy=registry.PromotionPolicy(min_value=0.123)),
    "force_promote": lambda s: registry.promote(NAME, None, None, from_alias="nosuch", settings=s, force=True),
    "stop_rollout": lambda s: rollout.stop(NAME, "automatic: test", automatic=True, settings=s),
    "review": lambda s: review_answer("0" * 32, "roads", "test", model=NAME, settings=s),  # no such answer
    "feedback": lambda s: registry.authorize(s, "feedback", NAME),  # the check `civicml feedback` makes
}
NEEDS_TOO = {"override_policy": ("promote",), "force_promote": ("promote",)}  # the entry point checks these first


def test_every_action_in_the_table_has_an_entry_point():
    assert set(CALLS) == set(ACTIONS)


def _allowed(roles, action: str) -> bool:
    return all(set(roles) & ACTIONS[a] for a in (*NEEDS_TOO.get(action, ()), action))


def _outcome(call, settings) -> str:
    try:
        call(settings)
    except PermissionDenied as err:
        return f"denied: {err}"
    except NotFound:
        return "allowed"
    return "allowed"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, small_requests):
    folder = tmp_path_factory.mktemp("matrix")
    settings = Settings.from_env(env={}, home=folder / "home", user="tester")
    model = train(get_use_case("service_requests"), small_requests, "logreg", settings=settings)
    registry.register(model.model_uri, NAME, settings=settings)
    (folder / "access.yaml").write_text(yaml.safe_dump(ACCESS))
    return settings, folder / "access.yaml"


@pytest.fixture(scope="module")
def team(tmp_path_factory, small_requests, request):
    server = request.getfixturevalue("team_server")
    folder = tmp_path_factory.mktemp("matrix-team")
    settings = server.settings(folder / "home", user="tester")
    model = train(get_use_case("service_requests"), small_requests, "logreg", settings=settings)
    registry.register(model.model_uri, NAME, settings=settings)
    (folder / "access.yaml").write_text(yaml.safe_dump(ACCESS))
    return settings, folder / "access.yaml"


@pytest.fixture(params=["embedded", pytest.param("team", marks=[pytest.mark.slow, pytest.mark.postgres,
                                                                 pytest.mark.s3])])
def store(request):
    return request.getfixturevalue(request.param)


def _env(settings: Settings, **env) -> Settings:
    return Settings.from_env(env=env, home=settings.home, tracking_uri=settings.tracking_uri)


@pytest.mark.parametrize("action", list(ACTIONS))
def test_role_x_action(store, action):
    settings, access = store
    call = CALLS[action]
    assert _outcome(call, settings) == "allowed"  # single-user mode: the local user holds every role
    seen = {}
    for who, roles in PRINCIPALS.items():
        got = _outcome(call, settings.with_(access_file=access, token=TOKENS[who]))
        expected = _allowed(roles, action)
        seen[who] = got
        assert (got == "allowed") == expected, (who, action, got)
        if not expected and all(set(roles) & ACTIONS[a] for a in NEEDS_TOO.get(action, ())):
            assert f"may not {action.replace('_', ' ')}" in got
    # and a denial is on the model's trail with who tried what (train and tune act on no model)
    denied = [who for who, got in seen.items() if got != "allowed"]
    if denied and action not in ("train", "tune"):
        last = registry.audit(NAME, settings=settings)[-1]
        assert last["action"] == "denied" and last["who"] == denied[-1].replace("+", "_")


@pytest.mark.parametrize("action", list(ACTIONS))
def test_bad_tokens_and_environment_tricks_are_refused(store, action):
    settings, access = store
    call = CALLS[action]
    configured = settings.with_(access_file=access)
    cases = {
        "no token": (configured, "set CIVICML_TOKEN"),
        "wrong token": (configured.with_(token="guessed-password"), "not in the access configuration"),
        "expired token": (configured.with_(token="token-expired-0123456789"), "expired at 2020-01-01"),
        "revoked token": (configured.with_(token="token-revoked-0123456789"), "was revoked"),
        "CIVICML_ACCESS grants roles": (_env(settings, CIVICML_ACCESS=yaml.safe_dump(ACCESS),
                                             CIVICML_TOKEN="token-expired-0123456789"), "CIVICML_ACCESS is not read"),
        "CIVICML_ACCESS beside the file": (_env(settings, CIVICML_ACCESS="{}", CIVICML_ACCESS_FILE=str(access),
                                                CIVICML_TOKEN=TOKENS["service"]), "CIVICML_ACCESS is not read"),
        "CIVICML_ACCESS_FILE empty": (_env(settings, CIVICML_ACCESS_FILE="", CIVICML_TOKEN=TOKENS["service"]),
                                      "CIVICML_ACCESS_FILE is set but empty"),
    }
    for case, (tricked, message) in cases.items():
        got = _outcome(call, tricked)
        assert got.startswith("denied") and message in got, (case, action, got)


def test_identity_comes_from_the_token_only(embedded):
    settings, access = embedded
    env = {"CIVICML_ACCESS_FILE": str(access), "CIVICML_TOKEN": TOKENS["service"], "CIVICML_USER": "release_manager"}
    who = registry.caller(_env(settings, **env))
    assert (who.name, who.roles, who.auth) == ("service", frozenset({"service"}), "token")
    later = registry.caller(settings.with_(access_file=access, token="token-later-0123456789"))
    assert later.name == "later"  # an expiry in the future is no refusal


def test_docs_print_the_table_from_access_py():
    text = (ROOT / "docs" / "team-mode.md").read_text()
    start, end = "<!-- access-table: generated by `python -m civicml.access` -->\n", "<!-- access-table end -->"
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0] == markdown_table()


def test_a_labeller_reads_and_hands_in_labels_and_nothing_else():
    assert {action for action, roles in ACTIONS.items() if "labeller" in roles} == {"read", "feedback"}
    assert ACTIONS["feedback"] == {"service", "labeller"}


def test_post_feedback_takes_a_service_or_labeller_token_and_a_labeller_cannot_predict(embedded):
    """POST /feedback checks the `feedback` action (inference routes still need `service`); the sink is the
    callable `civicml serve --record` hands the server."""
    from fastapi.testclient import TestClient

    from serving import Endpoint
    from serving.http import create_app

    settings, access = embedded
    team = settings.with_(access_file=access)
    sink = lambda pairs: {"joined": len(pairs)}  # noqa: E731
    app = create_app(Endpoint(NAME, alias="champion", settings=team, refresh_seconds=0), follow=False,
                     feedback=sink)
    body = {"outcomes": [{"answer_id": "d" * 32, "outcome": "roads"}]}
    client = TestClient(app)  # no lifespan: the model need not load for these checks
    answers = {who: client.post("/feedback", json=body, headers={"Authorization": f"Bearer {token}"})
               for who, token in TOKENS.items()}
    assert {who for who, r in answers.items() if r.status_code == 200} == {"service", "labeller"}
    assert answers["labeller"].json() == {"joined": 1}
    refused = answers["data_scientist"]
    assert refused.status_code == 403 and "may not hand in feedback" in refused.json()["message"]
    assert client.post("/feedback", json=body).status_code == 401
    assert client.post("/feedback", json=body, headers={"Authorization": "Bearer guessed"}).status_code == 401
    predict = client.post("/invocations", json={"dataframe_records": [{"description": "pothole"}]},
                          headers={"Authorization": f"Bearer {TOKENS['labeller']}"})
    assert predict.status_code == 403

"""Roles: every role x every action, identities from tokens, single-user mode, and the CLI's answers."""

from __future__ import annotations

import hashlib

import pytest
import yaml

import registry
from app.cli import main
from civicml.errors import InvalidInput, PermissionDenied
from civicml.settings import Settings
from projects import get_use_case, train

TOKENS = {"ana": "ana-token-5f1e2d3c4b5a", "rui": "rui-token-9a8b7c6d5e4f", "router": "router-token-0a1b2c3d4e"}
ROLE_OF = {"ana": "data_scientist", "rui": "release_manager", "router": "service"}
ACCESS = {"principals": {who: {"roles": [ROLE_OF[who]], "token_sha256": hashlib.sha256(t.encode()).hexdigest()}
                         for who, t in TOKENS.items()}}
NAME = "roles"


def with_access(settings: Settings, data: dict, folder, **changes) -> Settings:
    """``settings`` with an access file holding ``data`` (roles come only from a file)."""
    import uuid

    path = folder / f"access-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(data))
    return settings.with_(access_file=path, **changes)

# action -> the one role allowed (read and predict: every role)
MATRIX = {
    "register": {"data_scientist"},
    "set_alias": {"data_scientist"},
    "approve": {"release_manager"},
    "promote": {"release_manager"},
    "rollback": {"release_manager"},
    "read": {"data_scientist", "release_manager", "service"},
    "predict": {"data_scientist", "release_manager", "service"},
    "train": {"data_scientist"},
    "tune": {"data_scientist"},
}


@pytest.fixture(scope="module")
def team(tmp_path_factory, requests_dataset):
    """One embedded store; settings per principal (one access file)."""
    folder = tmp_path_factory.mktemp("roles")
    base = Settings.from_env(env={}, home=folder / "home", user="tester")
    use_case = get_use_case("service_requests")
    good = train(use_case, requests_dataset, "logreg", settings=base)
    weak = train(use_case, requests_dataset, "decision_tree", {"max_depth": 3}, settings=base)
    as_ = {who: with_access(base, ACCESS, folder, token=tok) for who, tok in TOKENS.items()}
    return base, as_, good, weak


def _attempt(action, settings, good, holdout):
    """Perform ``action`` as ``settings``' caller."""
    if action == "register":
        return registry.register(good.model_uri, NAME, settings=settings)
    if action == "set_alias":
        return registry.set_alias(NAME, "challenger", "3", settings=settings)
    if action == "approve":
        return registry.approve(NAME, "2", settings=settings)
    if action == "promote":
        return registry.promote(NAME, holdout.frame, "department", settings=settings)  # the governing policy
    if action == "rollback":
        return registry.rollback(NAME, settings=settings)
    if action == "read":
        registry.versions(NAME, settings=settings)
        registry.audit(NAME, settings=settings)
        registry.lineage(NAME, "1", settings=settings)
        registry.show(NAME, settings=settings)
        registry.models(settings)
        return registry.model_card(NAME, "1", settings=settings)
    if action == "predict":
        return registry.resolve(NAME, "champion", settings=settings)
    return registry.require(settings, action)  # train, tune: the check their entry points make


def _state(settings):
    store = registry.ModelStore(settings)
    return {v.version: (v.aliases, v.tags) for v in store.versions(NAME)}


def test_every_role_times_every_action(team, requests_holdout):
    base, as_, good, weak = team
    # state to act on: v1 champion, v2 challenger (registered by the data scientist, promoted by the manager)
    registry.register(good.model_uri, NAME, settings=as_["ana"])
    assert registry.promote(NAME, requests_holdout.frame, "department", settings=as_["rui"]).promoted
    registry.register(weak.model_uri, NAME, settings=as_["ana"])
    order = ["read", "predict", "train", "tune", "register", "set_alias", "approve", "promote", "rollback"]
    seen = {}
    for action in order:
        for who in ("router", "ana", "rui"):  # denied callers first: a refusal must change nothing
            role = ROLE_OF[who]
            if role in MATRIX[action]:
                _attempt(action, as_[who], good, requests_holdout)
                seen[(role, action)] = "allowed"
            else:
                before = _state(base)
                with pytest.raises(PermissionDenied) as err:
                    _attempt(action, as_[who], good, requests_holdout)
                assert str(err.value).startswith(f"permission denied: {role} may not {action.replace('_', ' ')}")
                assert _state(base) == before  # a refusal changes nothing but the trail, which records it
                if action not in ("train", "tune"):  # those have no model whose trail would say so
                    denied = registry.audit(NAME, settings=base)[-1]
                    assert (denied["action"], denied["who"], denied["attempted"]) == ("denied", who, action)
                    assert denied["why"] == str(err.value) and denied["when"].startswith("20")
                seen[(role, action)] = "denied"
    assert len(seen) == len(order) * 3
    trail = [r for r in registry.audit(NAME, settings=base) if r["action"] != "denied"]
    assert [(r["action"], r["who"]) for r in trail] == [
        ("register", "ana"), ("promote", "rui"), ("register", "ana"), ("register", "ana"), ("alias", "ana"),
        ("approve", "rui"), ("promote", "rui"), ("rollback", "rui")]
    assert all(r["auth"] == "token" for r in trail)


def test_tokens_missing_unknown_and_access_file_typos(team, tmp_path):
    base, as_, _, _ = team
    configured = with_access(base, ACCESS, tmp_path)
    with pytest.raises(PermissionDenied, match="set CIVICML_TOKEN"):
        registry.versions(NAME, settings=configured)
    with pytest.raises(PermissionDenied, match="not in the access configuration"):
        registry.versions(NAME, settings=configured.with_(token="guessed-password"))
    # CIVICML_USER does not choose who you are once access is configured
    assert registry.caller(as_["router"].with_(user="rui")).name == "router"
    bad = {"principals": {"rui": {"roles": ["releese_manager"], "token_sha256": "0" * 64}}}
    with pytest.raises(InvalidInput, match=r"field 'principals.rui.roles': unknown role 'releese_manager' "
                                           r"\(did you mean 'release_manager'\?\)"):
        registry.caller(with_access(base, bad, tmp_path, token="x"))
    bad = {"principals": {"rui": {"roles": ["release_manager"], "token": "plain-text"}}}
    with pytest.raises(InvalidInput, match="unknown field 'principals.rui.token'"):
        registry.caller(with_access(base, bad, tmp_path, token="x"))
    bad = {"principals": {"rui": {"roles": ["release_manager"], "token_sha256": "short"}}}
    with pytest.raises(InvalidInput, match="token_sha256' must be the 64-hex-digit SHA-256"):
        registry.caller(with_access(base, bad, tmp_path, token="x"))


def test_single_user_mode_without_access_configuration(team):
    base, _, _, _ = team
    who = registry.caller(base)
    assert who.name == "tester" and who.roles == frozenset(registry.ROLES) and who.auth == "single-user"
    assert registry.require(base, "promote") == who


def test_an_access_file_in_the_home_switches_single_user_mode_off(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert not Settings.from_env(env={}, home=home).access_configured
    (home / "access.yaml").write_text(yaml.safe_dump(ACCESS))
    settings = Settings.from_env(env={}, home=home)
    assert settings.access_file == (home / "access.yaml").resolve()
    with pytest.raises(PermissionDenied):
        registry.require(settings, "read")
    env = {"CIVICML_TOKEN": TOKENS["rui"]}
    assert registry.caller(Settings.from_env(env=env, home=home)).name == "rui"
    assert "rui-token" not in repr(Settings.from_env(env=env, home=home))  # tokens never printed


def test_cli_permission_denied_is_one_line_and_exit_2(team, monkeypatch, capsys, tmp_path):
    base, _, _, _ = team
    access = tmp_path / "access.yaml"
    access.write_text(yaml.safe_dump(ACCESS))
    monkeypatch.setenv("CIVICML_ACCESS_FILE", str(access))
    monkeypatch.setenv("CIVICML_TOKEN", TOKENS["router"])
    home = ["--home", str(base.home)]
    capsys.readouterr()
    assert main(["whoami", *home]) == 0
    assert capsys.readouterr().out.strip() == "router: service (token)"
    for argv in (["promote", NAME, *home], ["rollback", NAME, *home], ["approve", NAME, "1", *home],
                 ["alias", NAME, "challenger", "1", *home], ["register", "runs:/x/model", "--name", NAME, *home]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("civicml: error: permission denied: service may not "), err
    assert main(["models", "show", NAME, *home]) == 0  # a service may read
    monkeypatch.delenv("CIVICML_TOKEN")
    assert main(["models", "list", *home]) == 2
    assert "set CIVICML_TOKEN" in capsys.readouterr().err


def test_token_command_prints_an_entry_that_works(capsys, tmp_path):
    assert main(["token", "eva", "--role", "release_manager"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[0].rsplit(" ", 1)[1]
    entry = yaml.safe_load("principals:\n" + out[2])
    home = tmp_path / "home"
    settings = with_access(Settings.from_env(env={}, home=home), entry, tmp_path, token=token)
    assert registry.caller(settings).name == "eva" and registry.caller(settings).roles == {"release_manager"}

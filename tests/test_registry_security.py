"""Issue 14, one test per defect a security review found: each through the Python API and the CLI, on the
embedded store and (where it applies) in team mode (PostgreSQL + moto S3 behind `civicml server`).

1. `register runs:/<run>/model` makes a version that loads (one digest, whatever URI form registered it);
2. the policy that governs a model is recorded with it; another policy needs `override_policy`; breaking the
   serving alias's input contract needs `--force` by a role allowed to, and both are audited;
3. no environment variable grants a role; an empty or unreadable access setting is an error;
4. reserved aliases are reserved in every case;
5. a tampered champion is treated as absent for the comparison gates, so a good version can replace it;
6. integrity refusals (resolve, serve, promote) are audited with who, when and why;
7. a registration killed after the version row exists is removed by the next registry command, which says so;
8. plain MLflow opening a version in place (``__pycache__``, ``registered_model_meta``) does not break it, and
   CivicML itself never writes into the store when it loads.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

import registry
from app.cli import main
from civicml.errors import IntegrityError, InvalidInput, NotFound, PermissionDenied
from civicml.settings import Settings
from projects import get_use_case, train
from team_mode import BUCKET, PREFIX, moto_s3, team_pg, team_server  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
HOLD = "department"
LAX = "version: 1\nmetric: macro_f1\nmin_value: null\nmax_regression: 1.0\nsignature: any\n"
TOKENS = {"ana": "ana-token-0f1e2d3c4b5a", "rui": "rui-token-9a8b7c6d5e4f", "olga": "olga-token-77aa88bb99cc",
          "router": "router-token-0a1b2c3d4e"}
ROLES_OF = {"ana": ["data_scientist"], "rui": ["release_manager"], "olga": ["release_manager", "policy_owner"],
            "router": ["service"]}


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ACCESS = {"principals": {who: {"roles": ROLES_OF[who], "token_sha256": _h(t)} for who, t in TOKENS.items()}}


@dataclass
class Mode:
    """One store (embedded, or the team server), models trained into it, and how to reach its files."""

    name: str
    settings: Settings
    good: object
    folder: Path
    s3: object = None

    def cli(self, *argv: str) -> list[str]:
        opts = ["--home", str(self.settings.home)] + (["--tracking-uri", self.settings.tracking_uri]
                                                      if self.name == "team" else [])
        return [*argv, *opts]

    def as_(self, who: str) -> Settings:
        path = self.folder / "access.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(ACCESS))
        return self.settings.with_(access_file=path, token=TOKENS[who])

    # -- the files of a registered version, where the store keeps them -------------------------------
    def _location(self, name: str, version: str) -> str:
        store = registry.ModelStore(self.settings)
        uri = store.download_uri(name, version)
        if uri.startswith("runs:/"):  # a model logged as plain run artifacts: where that run keeps them
            run_id, rel = uri[len("runs:/"):].split("/", 1)
            uri = store.client.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + rel
        return uri

    def files(self, name: str, version: str) -> dict[str, bytes]:
        uri = self._location(name, version)
        if self.s3 is None:
            root = Path(unquote(urlparse(uri).path))
            return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        prefix = self._prefix(uri)
        client = self.s3.client()
        return {k[len(prefix):]: client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
                for k in self.s3.keys(prefix)}

    def write(self, name: str, version: str, rel: str, data: bytes | None) -> None:
        """Write (or with ``None`` delete) one file of the version, behind CivicML's back."""
        uri = self._location(name, version)
        if self.s3 is None:
            path = Path(unquote(urlparse(uri).path)) / rel
            if data is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            return
        key = self._prefix(uri) + rel
        if data is None:
            self.s3.client().delete_object(Bucket=BUCKET, Key=key)
        else:
            self.s3.client().put_object(Bucket=BUCKET, Key=key, Body=data)

    @staticmethod
    def _prefix(uri: str) -> str:
        assert uri.startswith("mlflow-artifacts:"), uri
        return PREFIX + "/" + urlparse(uri).path.lstrip("/").rstrip("/") + "/"

    def flip(self, name: str, version: str, rel: str = "model.skops") -> bytes:
        original = self.files(name, version)[rel]
        self.write(name, version, rel, original[:-1] + bytes([original[-1] ^ 1]))
        return original


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, requests_dataset):
    folder = tmp_path_factory.mktemp("security")
    settings = Settings.from_env(env={}, home=folder / "home", user="tester")
    good = train(get_use_case("service_requests"), requests_dataset, "logreg", settings=settings)
    return Mode("single-user", settings, good, folder)


@pytest.fixture(scope="module")
def team(tmp_path_factory, requests_dataset, request):
    server = request.getfixturevalue("team_server")
    folder = tmp_path_factory.mktemp("security-team")
    settings = server.settings(folder / "home", user="tester")
    good = train(get_use_case("service_requests"), requests_dataset, "logreg", settings=settings)
    return Mode("team", settings, good, folder, server.s3)


TEAM = pytest.param("team", marks=[pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3])


@pytest.fixture(params=["single-user", TEAM])
def mode(request) -> Mode:
    return request.getfixturevalue("embedded" if request.param == "single-user" else "team")


@pytest.fixture
def user(monkeypatch):
    for var in ("CIVICML_ACCESS", "CIVICML_ACCESS_FILE", "CIVICML_TOKEN", "CIVICML_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CIVICML_USER", "tester")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("civicml: error: "), err
    return err[0]


def _policy(tmp_path: Path, text: str = LAX) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


# -- 1. the runs:/ form registers a version that loads and promotes ------------------------------
def test_1_runs_uri_form_registers_a_loadable_version(mode, tmp_path, capsys, user):
    name = "d1-runs-form"
    runs_uri = f"runs:/{mode.good.run_id}/model"
    by_runs = registry.register(runs_uri, name, settings=mode.settings)
    by_model = registry.register(mode.good.model_uri, name, settings=mode.settings)
    assert by_runs.sha256 == by_model.sha256 and by_runs.manifest == by_model.manifest  # one digest, any form
    assert "MLmodel" in by_runs.manifest and not any(p.startswith("model/") for p in by_runs.manifest)
    assert registry.resolve(name, by_runs.version, settings=mode.settings).version.version == by_runs.version
    capsys.readouterr()
    assert main(mode.cli("register", runs_uri, "--name", name, "--alias", "candidate")) == 0
    assert "version 3" in capsys.readouterr().out
    assert main(mode.cli("promote", name, "--from", "candidate", "--policy", str(_policy(tmp_path)))) == 0
    assert registry.resolve(name, settings=mode.settings).version.version == "3"


# -- 2. the policy is the model's; overrides and forced contract breaks need their own permission --
def _relog(mode: Mode, folder: Path, change) -> str:
    """A copy of the good model whose signature's inputs ``change`` edits: a break of its clients' contract."""
    import mlflow

    from civicml.tracking import configure, experiment_id

    # through the home's own store: a models:/m-... URI would otherwise be looked up in MLflow's process-wide one
    local = registry.ModelStore(mode.settings).download(mode.good.model_uri, folder)
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    for part in ("inputs", "outputs"):
        spec = mlmodel["signature"][part]
        spec = yaml.safe_load(spec) if isinstance(spec, str) else spec
        change(part, spec)
        mlmodel["signature"][part] = json.dumps(spec)
    (local / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    configure(mode.settings)
    with mlflow.start_run(experiment_id=experiment_id(mode.settings, "security-breaking")) as run:
        mlflow.set_tag("civicml.use_case", "service_requests")
        mlflow.log_artifacts(str(local), "model")
    return f"runs:/{run.info.run_id}/model"


def _requires_priority(part, spec) -> None:
    if part == "inputs":
        spec.append({"type": "string", "name": "priority", "required": True})


def _answers_in_pairs(part, spec) -> None:
    """Outputs of another shape: every client that reads the answer breaks, though the model still predicts."""
    if part == "outputs":
        spec[0]["tensor-spec"]["shape"] = [-1, 2]


@pytest.mark.slow  # three promotions under the project's policy (latency gate) and two re-logged models
def test_2_the_governing_policy_is_recorded_and_overrides_and_forcing_need_their_own_permission(
        mode, requests_holdout, tmp_path, capsys, user, monkeypatch):
    use_case = get_use_case("service_requests")
    name = use_case.registered_model  # the name the project's policy governs
    ana, rui, olga = mode.as_("ana"), mode.as_("rui"), mode.as_("olga")
    registry.register(mode.good.model_uri, name, settings=ana)
    governing = registry.governing_policy(name, settings=rui)
    assert governing.sha256 == hashlib.sha256(use_case.policy_file.read_bytes()).hexdigest()
    assert governing.source == str(use_case.policy_file)
    trail = registry.audit(name, settings=rui)
    assert trail[-1]["policy_recorded"]["sha256"] == governing.sha256
    inputs = registry.promotion_inputs(name, settings=rui)  # what the CLI, the demo and notebooks use
    assert inputs.policy == governing and inputs.holdout_name == "service_requests-holdout"
    assert registry.promote(name, **inputs.as_kwargs(), settings=rui).promoted

    # the release manager's own lax policy is an override: refused, and the refusal audited
    registry.register(_relog(mode, tmp_path / "a", _requires_priority), name, settings=ana)  # v2
    lax = registry.PromotionPolicy.from_yaml(_policy(tmp_path))
    frame = requests_holdout.frame.assign(priority="normal")  # held-out rows that can feed both models
    with pytest.raises(PermissionDenied, match="release_manager may not override policy"):
        registry.promote(name, frame, HOLD, policy=lax, settings=rui)
    denied = registry.audit(name, settings=rui)[-1]
    assert (denied["action"], denied["who"], denied["attempted"]) == ("denied", "rui", "override_policy")
    monkeypatch.setenv("CIVICML_ACCESS_FILE", str(mode.folder / "access.yaml"))
    monkeypatch.setenv("CIVICML_TOKEN", TOKENS["rui"])
    capsys.readouterr()
    assert main(mode.cli("promote", name, "--policy", str(_policy(tmp_path)))) == 2
    assert "may not override policy" in _one_line_error(capsys)
    assert registry.resolve(name, settings=rui).version.version == "1"

    # whatever the policy says, breaking the champion's input contract is refused ...
    outcome = registry.promote(name, frame, HOLD, policy=lax, settings=olga)
    assert not outcome.promoted and outcome.notes[0].startswith("policy override by olga")
    contract = [v for v in outcome.verdicts if v.gate == "signature compatible"][0]
    assert not contract.passed and "requires new input column 'priority'" in contract.detail
    # ... unless forced, by a role allowed to (not a plain release manager), with who and why audited
    with pytest.raises(PermissionDenied, match="may not force promote"):
        registry.promote(name, frame, HOLD, settings=rui, force=True)
    outcome = registry.promote(name, frame, HOLD, policy=lax, settings=olga, force=True, reason="clients updated")
    assert outcome.promoted and outcome.forced
    record = registry.audit(name, settings=rui)[-1]
    assert record["action"] == "promote" and record["forced"] is True and record["who"] == "olga"
    assert record["reason"] == "clients updated" and record["notes"][0].startswith("policy override by olga")
    forced = {g["gate"]: g for g in record["gates"]}["signature compatible"]
    assert forced["passed"] and forced["detail"].startswith("FORCED by olga (clients updated)")

    assert registry.rollback(name, settings=rui, reason="clients were not updated after all") == ("2", "1")

    # the CLI: under the governing policy a contract break is refused (exit 1); --force by a release
    # manager is refused (exit 2, one line); by a policy owner it promotes and says so
    registry.register(_relog(mode, tmp_path / "b", _answers_in_pairs), name, settings=ana)  # v3
    capsys.readouterr()
    assert main(mode.cli("promote", name)) == 1
    out = capsys.readouterr().out
    assert "FAIL signature compatible: output schema changes" in out
    assert main(mode.cli("promote", name, "--force", "--reason", "new app release")) == 2
    assert "may not force promote" in _one_line_error(capsys)
    monkeypatch.setenv("CIVICML_TOKEN", TOKENS["olga"])
    assert main(mode.cli("promote", name, "--force", "--reason", "new app release")) == 0
    out = capsys.readouterr().out
    assert "PASS signature compatible: FORCED by olga (new app release)" in out and "[FORCED]" in out
    assert main(mode.cli("audit", name)) == 0
    assert "FORCED past the input contract" in capsys.readouterr().out


# -- 3. no environment variable grants a role; empty or unreadable access settings are errors ------
def test_3_environment_never_grants_a_role(mode, tmp_path, capsys, monkeypatch, user):
    name = "d3-env"
    registry.register(mode.good.model_uri, name, settings=mode.settings)
    grant_all = yaml.safe_dump({"principals": {"mallory": {"roles": ["release_manager", "policy_owner"],
                                                           "token_sha256": _h("mallory-token-123456")}}})
    env = {"CIVICML_ACCESS": grant_all, "CIVICML_TOKEN": "mallory-token-123456"}
    tricked = Settings.from_env(env=env, home=mode.settings.home, tracking_uri=mode.settings.tracking_uri)
    with pytest.raises(PermissionDenied, match="CIVICML_ACCESS is not read"):
        registry.rollback(name, settings=tricked)
    # beside a real access file, too: the variable is refused, not merged
    env["CIVICML_ACCESS_FILE"] = str(mode.folder / "access.yaml")
    mode.as_("rui")  # writes the file
    with pytest.raises(PermissionDenied, match="CIVICML_ACCESS is not read"):
        registry.caller(Settings.from_env(env=env, home=mode.settings.home))
    # an empty CIVICML_ACCESS_FILE is not single-user mode, not even with an access.yaml in the home
    emptied = Settings.from_env(env={"CIVICML_ACCESS_FILE": ""}, home=mode.settings.home,
                                tracking_uri=mode.settings.tracking_uri)
    with pytest.raises(PermissionDenied, match="CIVICML_ACCESS_FILE is set but empty"):
        registry.versions(name, settings=emptied)
    # an access file that is empty, lists nobody, or cannot be read
    for content, message in (("", "is empty"), ("principals: {}\n", "lists no principals"), (None, "unreadable")):
        path = tmp_path / f"access-{message.split()[-1]}.yaml"
        if content is None:
            path.mkdir()  # a folder where the file should be
        else:
            path.write_text(content)
        with pytest.raises(InvalidInput, match=message):
            registry.versions(name, settings=mode.settings.with_(access_file=path))
    # the same through the CLI: exit 2, one line, nothing stored changed
    before = registry.audit(name, settings=mode.settings)
    for var, value in (("CIVICML_ACCESS", grant_all), ("CIVICML_ACCESS_FILE", "")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            m.setenv("CIVICML_TOKEN", "mallory-token-123456")
            capsys.readouterr()
            assert main(mode.cli("rollback", name)) == 2
            assert "permission denied" in _one_line_error(capsys)
            assert main(mode.cli("whoami")) == 2
            _one_line_error(capsys)
    assert registry.models(mode.settings)[name] == {"challenger": "1"}
    assert [r["action"] for r in registry.audit(name, settings=mode.settings)][:len(before)] == \
        [r["action"] for r in before]


# -- 4. reserved aliases are reserved in every case ------------------------------------------------
def test_4_champion_is_reserved_in_every_case(mode, capsys, user):
    name = "d4-reserved"
    ana = mode.as_("ana")
    registry.register(mode.good.model_uri, name, settings=ana)
    for alias in ("champion", "Champion", "CHAMPION", "cHaMpIoN"):
        with pytest.raises(InvalidInput, match="reserved"):
            registry.set_alias(name, alias, "1", settings=ana)
        with pytest.raises(InvalidInput, match="reserved"):
            registry.register(mode.good.model_uri, name, alias=alias, settings=ana)
        capsys.readouterr()
        assert main(mode.cli("alias", name, alias, "1")) == 2
        assert "reserved" in _one_line_error(capsys)
        assert main(mode.cli("register", mode.good.model_uri, "--name", name, "--alias", alias)) == 2
        assert "reserved" in _one_line_error(capsys)
    with pytest.raises(InvalidInput, match="did you mean 'champion'"):
        registry.promote(name, None, None, to_alias="Champion", settings=mode.as_("rui"))
    assert registry.models(mode.settings)[name] == {"challenger": "1"}
    assert [v.version for v in registry.versions(name, settings=mode.settings)] == ["1"]


# -- 5 and 6. a tampered champion does not block recovery; integrity refusals are audited ----------
def test_5_a_tampered_champion_is_treated_as_absent_and_can_be_replaced(mode, requests_holdout, tmp_path,
                                                                        capsys, user):
    name = "d5-tampered-champion"
    registry.register(mode.good.model_uri, name, settings=mode.settings)
    assert registry.promote(name, requests_holdout.frame, HOLD, settings=mode.settings).promoted
    registry.register(_copy(mode, tmp_path / "v2"), name, settings=mode.settings)  # v2: the good model, copied
    mode.flip(name, "1")  # the champion's bytes change in the store
    with pytest.raises(IntegrityError, match=r"version 1 \(changed: model.skops\)"):
        registry.resolve(name, settings=mode.settings)
    capsys.readouterr()
    assert main(mode.cli("promote", name, "--holdout", *_holdout_files(tmp_path))) == 0
    out = capsys.readouterr().out
    assert "NOTE 'champion' version 1 failed its integrity check and is treated as absent" in out
    assert "PASS macro_f1 vs champion: no current champion" in out and "promoted" in out
    trail = registry.audit(name, settings=mode.settings)
    promoted = trail[-1]
    assert promoted["action"] == "promote" and promoted["to"] == "2" and promoted["from"] == "1"
    assert "failed its integrity check" in promoted["notes"][0]
    integrity = [r for r in trail if r["action"] == "integrity"]
    assert [(r["version"], r["purpose"]) for r in integrity] == [("1", "resolve"), ("1", "compare")]
    assert registry.resolve(name, settings=mode.settings).version.version == "2"
    # rolling back to the tampered version is refused (and audited); from a tampered one, allowed
    with pytest.raises(IntegrityError):
        registry.rollback(name, settings=mode.settings)
    assert registry.audit(name, settings=mode.settings)[-1]["purpose"] == "rollback"
    registry.register(_copy(mode, tmp_path / "v3"), name, settings=mode.settings)  # v3
    assert registry.promote(name, requests_holdout.frame, HOLD, settings=mode.settings).promoted
    mode.flip(name, "3")
    assert registry.rollback(name, settings=mode.settings, reason="v3 tampered") == ("3", "2")


def _copy(mode: Mode, folder: Path) -> str:
    """The good model logged again by another run: the same bytes in their own place in the store."""
    return _relog(mode, folder, lambda part, spec: None)


def _holdout_files(tmp_path: Path) -> list[str]:
    use_case = get_use_case("service_requests")
    return [str(p) for p in use_case.generate_sources(tmp_path / "holdout", n=300, seed=11)]


def test_6_integrity_refusals_are_audited_for_resolve_serve_and_promote(mode, requests_holdout, capsys, user,
                                                                         monkeypatch):
    name = "d6-audited"
    registry.register(mode.good.model_uri, name, settings=mode.settings)
    original = mode.flip(name, "1")
    router = mode.as_("router")
    with pytest.raises(IntegrityError):
        registry.resolve(name, "challenger", settings=router)
    from serving import Endpoint

    with pytest.raises(IntegrityError):
        Endpoint(name, alias="challenger", settings=router, refresh_seconds=0).load()
    with pytest.raises(IntegrityError):
        registry.promote(name, requests_holdout.frame, HOLD, settings=mode.as_("rui"))
    monkeypatch.setenv("CIVICML_ACCESS_FILE", str(mode.folder / "access.yaml"))
    monkeypatch.setenv("CIVICML_TOKEN", TOKENS["rui"])
    capsys.readouterr()
    assert main(mode.cli("promote", name)) == 2
    assert "checksum mismatch" in _one_line_error(capsys)
    trail = [r for r in registry.audit(name, settings=router) if r["action"] == "integrity"]
    assert [(r["who"], r["purpose"]) for r in trail] == [("router", "resolve"), ("router", "resolve"),
                                                         ("rui", "promote"), ("rui", "promote")]
    for r in trail:
        assert r["version"] == "1" and "changed: model.skops" in r["why"] and r["when"].startswith("20")
        assert r["auth"] == "token" and r["sha256"]
    assert main(mode.cli("audit", name)) == 0
    assert "integrity by router (token): version 1: checksum mismatch" in capsys.readouterr().out
    mode.write(name, "1", "model.skops", original)
    assert registry.resolve(name, "challenger", settings=router).version.version == "1"


# -- 7. a registration killed half-way is finished off by the next registry command ---------------
KILLED_REGISTRATION = """
import os, signal, sys
from civicml.settings import Settings
from registry.store import ModelStore
home, tracking_uri, uri, name = sys.argv[1:5]
store = ModelStore(Settings.from_env(env={}, home=home, tracking_uri=tracking_uri, user="tester"))
# the process dies right after the version row exists, before card, alias and audit record
store.register(uri, name, tags={"civicml.registered_by": "tester"},
               complete=lambda version: os.kill(os.getpid(), signal.SIGKILL))
"""


def _killed_registration(mode: Mode, name: str) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_REGISTRATION, str(mode.settings.home),
                           mode.settings.tracking_uri, mode.good.model_uri, name], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]


@pytest.mark.slow  # two Python processes started and killed
def test_7_a_half_registered_version_is_invisible_then_removed_by_the_next_command(mode, capsys, caplog, user):
    name = "d7-half"
    registry.register(mode.good.model_uri, name, settings=mode.settings)
    _killed_registration(mode, name)
    store = registry.ModelStore(mode.settings)
    assert [v.version for v in store.versions(name)] == ["1", "2"] and store.get_version(name, "2").pending
    # invisible to readers, not loadable
    assert [v.version for v in registry.versions(name, settings=mode.settings)] == ["1"]
    with pytest.raises(NotFound, match="registration has not completed"):
        registry.resolve(name, "2", settings=mode.settings)
    # the next command that changes the model removes it, says so, and the trail records it
    with caplog.at_level("WARNING", logger="civicml.registry"):
        registry.set_alias(name, "shadow", "1", settings=mode.settings)
    assert "removed half-registered version 2 of 'd7-half'" in caplog.text
    assert [v.version for v in store.versions(name)] == ["1"]
    discard = [r for r in registry.audit(name, settings=mode.settings) if r["action"] == "discard"]
    assert [(r["version"], r["why"]) for r in discard] == [("2", "registration did not complete")]
    # through the CLI: the note is one line on stderr, and the command does its own work
    _killed_registration(mode, name)
    capsys.readouterr()
    assert main(mode.cli("register", mode.good.model_uri, "--name", name)) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "civicml: note: removed half-registered version 3 of 'd7-half' " \
                                   "(registration by tester at ? did not complete)"
    assert "registered d7-half version 4" in captured.out
    assert [v.version for v in registry.versions(name, settings=mode.settings)] == ["1", "4"]


# -- 8. plain MLflow may open a version in place; CivicML only reads the store ---------------------
def test_8_plain_mlflow_tools_do_not_break_a_version_and_civicml_never_writes_into_the_store(
        embedded, requests_holdout, tmp_path, capsys, user):
    import mlflow

    mode = embedded  # the case: the embedded store, whose artifact folders tools open in place
    name = "d8-plain-mlflow"
    registry.register(mode.good.model_uri, name, settings=mode.settings)
    assert registry.promote(name, requests_holdout.frame, HOLD, settings=mode.settings).promoted
    # a plain MLflow user points both of MLflow's process-wide URIs at the home (CivicML sets neither)
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(mode.settings.tracking_uri)
    mlflow.set_registry_uri(mode.settings.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        assert len(model.predict(requests_holdout.frame.drop(columns=[HOLD]).head(3))) == 3
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    # what such tools leave in the version's folder
    mode.write(name, "1", "__pycache__/model.cpython-311.pyc", b"\x00compiled")
    mode.write(name, "1", "registered_model_meta", b"model_name: d8\n")
    before = mode.files(name, "1")
    local = registry.resolve(name, settings=mode.settings)
    assert "__pycache__/model.cpython-311.pyc" in local.added
    assert not (local.path / "__pycache__").exists()  # never loaded: not what was registered
    registry.register(_copy(mode, tmp_path / "v2"), name, settings=mode.settings)
    capsys.readouterr()
    assert main(mode.cli("promote", name)) == 0  # the champion is compared, not refused
    captured = capsys.readouterr()
    assert "files added since registration, not loaded: __pycache__/model.cpython-311.pyc" in captured.err
    assert mode.files(name, "1") == before  # CivicML loaded it twice and wrote nothing into the store
    assert str(local.path).startswith(str(mode.settings.home / "cache"))
    # a recorded file that changes or disappears is still refused
    original = mode.files(name, "1")["MLmodel"]
    mode.write(name, "1", "MLmodel", None)
    with pytest.raises(IntegrityError, match=r"missing: MLmodel"):
        registry.resolve(name, "1", settings=mode.settings)
    mode.write(name, "1", "MLmodel", original + b"\n# edited\n")
    with pytest.raises(IntegrityError, match=r"changed: MLmodel"):
        registry.resolve(name, "1", settings=mode.settings)
    mode.write(name, "1", "MLmodel", original)
    assert registry.resolve(name, "1", settings=mode.settings).version.version == "1"


# -- no process-global MLflow state per store ------------------------------------------------------
def test_two_homes_in_one_process_never_cross(embedded, tmp_path, requests_dataset, user):
    import mlflow

    other = Settings.from_env(env={}, home=tmp_path / "other", user="tester")
    store_a, store_b = registry.ModelStore(embedded.settings), registry.ModelStore(other)
    name = "d-two-homes"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(other.tracking_uri)  # whatever MLflow's process-wide stores are, A's calls stay in A
    mlflow.set_registry_uri(other.tracking_uri)
    try:
        registry.register(embedded.good.model_uri, name, settings=embedded.settings)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    assert name not in registry.models(other)  # B is created after A, yet A's calls stay in A
    registry.register(embedded.good.model_uri, name, settings=embedded.settings)
    with pytest.raises(NotFound):
        store_b.get_model(name)
    assert [v.version for v in store_a.versions(name)] == ["1", "2"]
    store_b = registry.ModelStore(other)  # the store made last must not capture the other's downloads
    local = store_a.fetch(name, store_a.get_version(name, "2"))
    assert local.path.is_relative_to(embedded.settings.home) and (local.path / "MLmodel").is_file()
    assert store_b.models() == []

"""The registry as a release manager uses it: gates that refuse, audit trail, rollback, lineage, cards, checksums.

Models are trained once per module (logreg: good; decision tree of depth 2: worse) in
one embedded home; each test registers them under its own model name.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

import registry
from app.cli import main
from civicml.errors import IntegrityError, InvalidInput, NotFound
from civicml.settings import Settings
from projects import get_use_case, train

HOLD = "department"
PROJECT_POLICY = Path(__file__).resolve().parents[1] / "projects" / "service_requests" / "policy.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, requests_dataset):
    settings = Settings.from_env(env={}, home=tmp_path_factory.mktemp("registry") / "home", user="tester")
    use_case = get_use_case("service_requests")
    good = train(use_case, requests_dataset, "logreg", settings=settings)
    weak = train(use_case, requests_dataset, "decision_tree", {"max_depth": 2}, settings=settings)
    return settings, good, weak


def _cli(settings: Settings, *argv: str) -> int:
    return main([*argv[:1], *(["--home", str(settings.home)] if argv[0] != "models" else []), *argv[1:]])


def _models_cli(settings: Settings, sub: str, *argv: str) -> int:
    return main(["models", sub, "--home", str(settings.home), *argv])


def _state(settings, name):
    """Everything a refusal must leave untouched: aliases and every version's tags and description."""
    store = registry.ModelStore(settings)
    return ({v.version: (v.aliases, v.tags, v.description) for v in store.versions(name)},
            dict(store.get_model(name).aliases or {}))


# -- policy files -----------------------------------------------------------------------------
def test_project_policy_turns_every_gate_on():
    policy = registry.PromotionPolicy.from_yaml(PROJECT_POLICY)
    titles = [g.title for g in policy.gates()]
    assert titles == ["macro_f1 >= 0.8", "accuracy >= 0.8", "macro_f1 vs baseline", "macro_f1 vs champion",
                      "signature compatible", "latency p95 <= 250.0 ms", "accuracy on unseen phrasings >= 0.35"]
    assert policy.model == "service-requests-router" and policy.holdout.seed == 10000
    assert policy.sha256 == hashlib.sha256(PROJECT_POLICY.read_bytes()).hexdigest()


@pytest.mark.parametrize("text, field", [
    ("latncy_p95_ms: 20\n", "'latncy_p95_ms' (did you mean 'latency_p95_ms'?)"),
    ("holdout: {name: h, sed: 3}\n", "'holdout.sed' (did you mean 'seed'?)"),
    ("thresholds: {acuracy: 0.9}\n", "'thresholds.acuracy': unknown metric 'acuracy' (did you mean 'accuracy'?)"),
    ("min_value: high\n", "'min_value' must be a number, got 'high'"),
    ("approvals: 1.5\n", "'approvals' must be an integer"),
    ("latency_repeats: 0\n", "'latency_repeats' must be >= 1, got 0"),
    ("signature: strict\n", "'signature' must be one of compatible, any"),
    # 'f1' is a scikit-learn scorer (binary F1) and so a known metric since projects.metrics: a real typo here
    ("metric: f1score\n", "'metric': unknown metric 'f1score'"),
])
def test_policy_typo_names_the_field(tmp_path, text, field):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as err:
        registry.PromotionPolicy.from_yaml(path)
    assert field in str(err.value) and str(path) in str(err.value)


def test_policy_typo_is_exit_2_from_promote(trained, tmp_path, capsys):
    settings, good, _ = trained
    registry.register(good.model_uri, "typo", settings=settings)
    path = tmp_path / "policy.yaml"
    path.write_text("metric: macro_f1\nmin_valeu: 0.8\n")
    capsys.readouterr()
    assert _cli(settings, "promote", "typo", "--policy", str(path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown field 'min_valeu' (did you mean 'min_value'?)" in err[0]
    assert registry.ModelStore(settings).alias_or_none("typo", "champion") is None


# -- each gate can refuse, and a refusal changes nothing but the trail -------------------------
def _refused_by(settings, name, holdout, policy, gate_prefix):
    before = _state(settings, name)
    trail = len(registry.audit(name, settings=settings))
    outcome = registry.promote(name, holdout.frame, HOLD, policy=policy, settings=settings)
    assert not outcome.promoted
    failed = [v for v in outcome.verdicts if not v.passed]
    assert [v.gate for v in failed if v.gate.startswith(gate_prefix)], outcome.reason
    assert _state(settings, name) == before
    records = registry.audit(name, settings=settings)
    assert len(records) == trail + 1 and records[-1]["action"] == "refuse"
    return outcome


def test_each_gate_can_refuse(trained, requests_holdout):
    settings, good, weak = trained
    name = "gates"
    registry.register(good.model_uri, name, settings=settings)
    assert registry.promote(name, requests_holdout.frame, HOLD, settings=settings).promoted
    registry.register(weak.model_uri, name, settings=settings)  # v2 @challenger, worse than v1

    lax = dict(min_value=0.0, max_regression=1.0)
    _refused_by(settings, name, requests_holdout, registry.PromotionPolicy(min_value=0.95, max_regression=1.0),
                "macro_f1 >=")
    _refused_by(settings, name, requests_holdout, registry.PromotionPolicy(min_value=0.0), "macro_f1 vs champion")
    _refused_by(settings, name, requests_holdout, registry.PromotionPolicy(**lax, thresholds={"accuracy": 0.99}),
                "accuracy >=")
    _refused_by(settings, name, requests_holdout,
                registry.PromotionPolicy(**lax, max_regressions={"accuracy": 0.0}), "accuracy vs champion")
    slow = _refused_by(settings, name, requests_holdout,
                       registry.PromotionPolicy(**lax, latency_p95_ms=0.001, latency_rows=5), "latency p95")
    latency = [v for v in slow.verdicts if v.gate.startswith("latency")][0]
    assert latency.figure > 0.001 and "single-row predictions, each the fastest of 3" in latency.detail
    _refused_by(settings, name, requests_holdout, registry.PromotionPolicy(**lax, approvals=1), "approvals >= 1")
    pinned = registry.PromotionPolicy(**lax, holdout=registry.HoldoutSpec(name="pinned", fingerprint="0" * 64))
    _refused_by(settings, name, requests_holdout, pinned, "holdout data set")

    # the same lax policy passes once nothing else stands in the way: the refusals were the gates' doing
    outcome = registry.promote(name, requests_holdout.frame, HOLD, policy=registry.PromotionPolicy(**lax),
                               settings=settings)
    assert outcome.promoted and registry.ModelStore(settings).by_alias(name, "champion").version == "2"


def _relog_with_extra_required_column(settings, model_uri: str, tmp_path: Path) -> str:
    """A copy of a logged model whose signature requires one more input column: a breaking change."""
    import mlflow

    from civicml.tracking import configure, experiment_id

    configure(settings)  # this test's own use of MLflow's fluent API: the process-wide URI, reset after it
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(tmp_path)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    inputs = yaml.safe_load(mlmodel["signature"]["inputs"]) if isinstance(mlmodel["signature"]["inputs"], str) \
        else mlmodel["signature"]["inputs"]
    inputs.append({"type": "string", "name": "priority", "required": True})
    import json

    mlmodel["signature"]["inputs"] = json.dumps(inputs)
    (local / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with mlflow.start_run(experiment_id=experiment_id(settings, "signature-break")) as run:
        mlflow.log_artifacts(str(local), "model")
    return f"runs:/{run.info.run_id}/model"


def test_signature_gate_refuses_a_breaking_candidate(trained, requests_holdout, tmp_path):
    settings, good, _ = trained
    name = "signature"
    registry.register(good.model_uri, name, settings=settings)
    assert registry.promote(name, requests_holdout.frame, HOLD, settings=settings).promoted
    registry.register(_relog_with_extra_required_column(settings, good.model_uri, tmp_path), name, settings=settings)
    policy = registry.PromotionPolicy(min_value=0.0, max_regression=1.0, signature="compatible")
    outcome = _refused_by(settings, name, requests_holdout, policy, "signature compatible")
    verdict = [v for v in outcome.verdicts if v.gate == "signature compatible"][0]
    assert "requires new input column 'priority'" in verdict.detail
    # the metric gates could not feed the candidate the held-out rows either: they fail closed, with the reason
    assert any("could not evaluate" in v.detail for v in outcome.verdicts if not v.passed)


def test_approvals_are_counted_per_distinct_release_manager(trained, requests_holdout, tmp_path):
    settings, good, weak = trained
    name = "approvals"
    tokens = {who: f"tok-{who}-0123456789" for who in ("ana", "rui", "eva")}
    access = {"principals": {"ana": {"roles": ["data_scientist"], "token_sha256": _h(tokens["ana"])},
                             # the policy below is not the model's own: promoting under it is an override
                             "rui": {"roles": ["release_manager", "policy_owner"], "token_sha256": _h(tokens["rui"])},
                             "eva": {"roles": ["release_manager"], "token_sha256": _h(tokens["eva"])}}}
    (tmp_path / "access.yaml").write_text(yaml.safe_dump(access))
    as_ = {who: settings.with_(access_file=tmp_path / "access.yaml", token=tok) for who, tok in tokens.items()}
    version = registry.register(good.model_uri, name, settings=as_["ana"])
    policy = registry.PromotionPolicy(min_value=0.5, approvals=2)
    assert registry.approve(name, version.version, settings=as_["rui"]) == ["rui"]
    with pytest.raises(InvalidInput, match="already approved"):
        registry.approve(name, version.version, settings=as_["rui"])
    refused = registry.promote(name, requests_holdout.frame, HOLD, policy=policy, settings=as_["rui"])
    assert not refused.promoted and "1 of 2 required" in refused.reason
    assert registry.approve(name, version.version, settings=as_["eva"], note="read the card") == ["rui", "eva"]
    outcome = registry.promote(name, requests_holdout.frame, HOLD, policy=policy, settings=as_["rui"])
    assert outcome.promoted, outcome.reason
    record = registry.audit(name, settings=as_["ana"])[-1]
    assert record["action"] == "promote" and record["approvals"] == ["rui", "eva"]
    assert record["who"] == "rui" and record["auth"] == "token" and record["roles"] == ["policy_owner",
                                                                                       "release_manager"]
    # an approval is for one version: the next one starts from zero
    second = registry.register(weak.model_uri, name, settings=as_["ana"])
    assert registry.approvals(name, second.version, settings=as_["ana"]) == []


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- audit trail and rollback -----------------------------------------------------------------
def test_audit_trail_records_who_when_from_to_gates_and_approvals(trained, requests_holdout, capsys):
    settings, good, weak = trained
    name = "audited"
    registry.register(good.model_uri, name, settings=settings)
    registry.approve(name, "1", settings=settings)
    policy = registry.PromotionPolicy.from_yaml(PROJECT_POLICY)
    policy = registry.PromotionPolicy(**{**{f: getattr(policy, f) for f in ("metric", "min_value", "thresholds",
                                                                            "signature", "report_by")},
                                         "approvals": 1, "latency_p95_ms": 5000.0, "latency_rows": 5},
                                      source="inline", sha256="abc")
    assert registry.promote(name, requests_holdout.frame, HOLD, policy=policy, settings=settings).promoted
    registry.register(weak.model_uri, name, settings=settings)
    assert not registry.promote(name, requests_holdout.frame, HOLD, policy=policy, settings=settings).promoted

    trail = registry.audit(name, settings=settings)
    assert [r["action"] for r in trail] == ["register", "approve", "promote", "register", "refuse"]
    for r in trail:
        assert r["who"] == "tester" and r["auth"] == "single-user" and r["when"].startswith("20")
        assert set(r["roles"]) == set(registry.ROLES)
    promoted, refused = trail[2], trail[4]
    assert (promoted["from"], promoted["to"], promoted["alias"]) == (None, "1", "champion")
    assert (refused["from"], refused["to"]) == ("1", "2")
    assert promoted["approvals"] == ["tester"] and refused["approvals"] == []
    gates = {g["gate"]: g for g in promoted["gates"]}
    assert set(gates) == {"macro_f1 >= 0.8", "accuracy >= 0.8", "macro_f1 vs champion", "signature compatible",
                          "latency p95 <= 5000.0 ms", "approvals >= 1"}
    assert all(g["passed"] for g in gates.values())
    assert 0.8 <= gates["macro_f1 >= 0.8"]["figure"] <= 1.0 and gates["macro_f1 >= 0.8"]["threshold"] == 0.8
    assert not {g["gate"]: g for g in refused["gates"]}["macro_f1 >= 0.8"]["passed"]
    assert promoted["holdout"]["rows"] == len(requests_holdout.frame) and len(promoted["holdout"]["fingerprint"]) == 64
    assert promoted["policy"]["sha256"] == "abc" and promoted["candidate_sha256"] == registry.versions(
        name, settings=settings)[0].sha256

    capsys.readouterr()
    assert _cli(settings, "audit", name) == 0
    out = capsys.readouterr().out
    assert "promote  by tester (single-user): champion: - -> 1" in out
    assert "refuse   by tester (single-user): champion: 1 -> 2" in out
    assert "FAIL macro_f1 >= 0.8: figure" in out and "approvals: tester;" in out


def test_rollback_walks_back_through_promotions(trained, requests_holdout, capsys, monkeypatch):
    settings, good, weak = trained
    monkeypatch.setenv("CIVICML_USER", "tester")  # the CLI reads who is acting from the environment
    name = "rollback"
    lax = registry.PromotionPolicy(min_value=0.0, max_regression=1.0)
    for uri in (good.model_uri, weak.model_uri, good.model_uri):
        registry.register(uri, name, settings=settings)
        assert registry.promote(name, requests_holdout.frame, HOLD, policy=lax, settings=settings).promoted
    store = registry.ModelStore(settings)
    assert store.by_alias(name, "champion").version == "3"
    assert registry.rollback(name, settings=settings) == ("3", "2")
    capsys.readouterr()
    assert _cli(settings, "rollback", name, "--reason", "complaints from Harbor") == 0
    assert "version 2 -> 1" in capsys.readouterr().out
    assert store.by_alias(name, "champion").version == "1"
    assert registry.resolve(name, settings=settings).version.version == "1"
    assert _cli(settings, "rollback", name) == 2
    assert "no earlier version to roll back to" in capsys.readouterr().err
    trail = [r for r in registry.audit(name, settings=settings) if r["action"] == "rollback"]
    assert [(r["from"], r["to"]) for r in trail] == [("3", "2"), ("2", "1")]
    assert trail[1]["reason"] == "complaints from Harbor" and trail[1]["who"] == "tester"
    # promoting again after rollbacks starts a new history from the current champion
    registry.set_alias(name, "challenger", "3", settings=settings)
    assert registry.promote(name, requests_holdout.frame, HOLD, policy=lax, settings=settings).promoted
    assert registry.rollback(name, settings=settings) == ("3", "1")


# -- lineage, model cards, listings -----------------------------------------------------------
@pytest.mark.slow
def test_lineage_of_a_tuned_model_reaches_study_run_data_and_code(trained, requests_dataset, capsys):
    from tuning import tune

    settings, _, _ = trained
    use_case = get_use_case("service_requests")
    result = tune(use_case, requests_dataset, n_trials=2, families=["logreg"], study_name="lineage-study",
                  settings=settings, seed=1)
    version = registry.register(result.best_model_uri, "tuned", settings=settings,
                                tags={"civicml.study": result.study_name})
    chain = registry.lineage("tuned", version.version, settings=settings)
    assert chain["study"] == "lineage-study" and chain["study_run_id"]
    assert chain["run_id"] and chain["study_run_id"] != chain["run_id"]
    assert chain["data_fingerprint"] == requests_dataset.fingerprint
    assert chain["code_version"] and len(chain["code_version"]) >= 7
    assert chain["registered_by"] == "tester" and chain["aliases"] == ["challenger"]
    assert chain["run_metrics"]["macro_f1"] > 0.5
    capsys.readouterr()
    assert _models_cli(settings, "lineage", "tuned", version.version) == 0
    out = capsys.readouterr().out
    assert f"<- run {chain['run_id']}" in out and "<- study lineage-study" in out
    assert f"<- data fingerprint {requests_dataset.fingerprint}" in out and f"<- code version {chain['code_version']}" in out


def test_model_card_at_registration_and_promotion(trained, requests_holdout):
    settings, good, _ = trained
    name = "carded"
    version = registry.register(good.model_uri, name, settings=settings)
    card = registry.model_card(name, version.version, settings=settings)
    for section in ("## Intended use", "Route 311", "## Data sources", "## Metrics", "### Per class",
                    "## Limitations", good.run_id, version.sha256):
        assert section in card
    assert "validation split of run" in card
    policy = registry.PromotionPolicy(min_value=0.5, report_by=("district",))
    assert registry.promote(name, requests_holdout.frame, HOLD, policy=policy, settings=settings).promoted
    card = registry.model_card(name, version.version, settings=settings)
    assert "### Per district" in card and "held-out set" in card
    districts = set(requests_holdout.frame["district"])
    assert all(f"| {d} |" in card for d in districts)
    assert "Promoted to 'champion'" in registry.versions(name, settings=settings)[0].description
    # the card is verified when read
    uri = registry.lineage(name, version.version, settings=settings)["model_card"]
    path = _local_artifact(settings, uri)
    path.write_text(path.read_text().replace("Route 311", "Route anything"))
    with pytest.raises(IntegrityError, match="model card"):
        registry.model_card(name, version.version, settings=settings)


def _local_artifact(settings, runs_uri: str) -> Path:
    """The file behind ``runs:/<id>/<path>`` in the embedded store."""
    import mlflow

    run_id, rel = runs_uri[len("runs:/"):].split("/", 1)
    root = mlflow.tracking.MlflowClient(settings.tracking_uri).get_run(run_id).info.artifact_uri
    return Path(unquote(urlparse(root).path)) / rel


def test_models_list_and_show_print_what_a_release_manager_asks(trained, requests_holdout, capsys):
    settings, good, weak = trained
    name = "shown"
    registry.register(good.model_uri, name, settings=settings)
    assert registry.promote(name, requests_holdout.frame, HOLD, settings=settings).promoted
    registry.register(weak.model_uri, name, settings=settings)
    registry.set_alias(name, "shadow", "1", settings=settings)
    capsys.readouterr()
    assert _models_cli(settings, "list") == 0
    assert f"{name}  challenger=v2, champion=v1, shadow=v1" in capsys.readouterr().out
    assert _models_cli(settings, "show", name) == 0
    out = capsys.readouterr().out
    assert "v1  aliases: champion, shadow  registered by tester" in out
    assert "v2  aliases: challenger  registered by tester" in out
    assert f"run {good.run_id}  family logreg" in out and f"run {weak.run_id}  family decision_tree" in out
    assert "macro_f1 >= 0.7 pass" in out and "gates: never evaluated" in out
    assert "data " in out and "code " in out and "metrics: accuracy" in out
    rows = registry.show(name, settings=settings)
    assert rows[0]["data_fingerprint"] and rows[0]["code_version"] and rows[0]["metrics"]["macro_f1"] > 0.5


# -- checksums and faults ---------------------------------------------------------------------
def test_tampered_artifact_is_refused_on_load(trained):
    settings, good, _ = trained
    name = "tampered"
    version = registry.register(good.model_uri, name, settings=settings)
    registry.resolve(name, "challenger", settings=settings)  # loads while intact
    folder = Path(unquote(urlparse(registry.ModelStore(settings).download_uri(name, version.version)).path))
    target = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    backup = target.with_suffix(".bak-outside")
    shutil.copy(target, backup)
    try:
        original = target.read_bytes()
        target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # (the last byte of a zip is often 0)
        with pytest.raises(IntegrityError, match=f"checksum mismatch for model '{name}' version 1 "
                                                 f"\\(changed: {target.name}\\)"):
            registry.resolve(name, "challenger", settings=settings)
    finally:
        shutil.move(backup, target)
    registry.resolve(name, "1", settings=settings)


def test_faults_are_clear_errors_and_exit_2(trained, capsys):
    settings, good, _ = trained
    registry.register(good.model_uri, "faults", settings=settings)
    with pytest.raises(NotFound, match="no registered model named 'nope'"):
        registry.resolve("nope", settings=settings)
    with pytest.raises(NotFound, match="has no version 7"):
        registry.lineage("faults", "7", settings=settings)
    with pytest.raises(NotFound, match="has no alias 'champion'"):
        registry.resolve("faults", settings=settings)
    with pytest.raises(InvalidInput, match="moves only through"):
        registry.set_alias("faults", "champion", "1", settings=settings)
    with pytest.raises(NotFound, match="cannot read model artifacts"):
        registry.register("runs:/0123456789abcdef0123456789abcdef/model", "never", settings=settings)
    assert "never" not in registry.models(settings)
    for argv in (("models", "show", "nope"), ("models", "lineage", "faults", "7"), ("rollback", "faults"),
                 ("promote", "faults", "--from", "shadow"), ("approve", "faults", "9")):
        capsys.readouterr()
        code = _models_cli(settings, argv[1], *argv[2:]) if argv[0] == "models" else _cli(settings, *argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("civicml: error: "), (argv, err)


def test_a_registration_that_fails_halfway_leaves_nothing_behind(trained):
    """The artifact store refuses the model card after the version exists: the version goes again."""
    settings, good, weak = trained
    name = "halfway"
    registry.register(good.model_uri, name, settings=settings)
    before = _state(settings, name), registry.audit(name, settings=settings)
    cards = _local_artifact(settings, f"runs:/{weak.run_id}/model_cards")
    cards.mkdir(exist_ok=True)
    blockers = [cards / name, cards / "halfway-new"]  # the folders the two cards would go to
    for blocker in blockers:
        blocker.write_text("a file where the store needs a folder")
    try:
        with pytest.raises(registry.ArtifactsUnavailable, match="cannot write model_cards/"):
            registry.register(weak.model_uri, name, settings=settings)
        assert (_state(settings, name), registry.audit(name, settings=settings)) == before
        with pytest.raises(registry.ArtifactsUnavailable):
            registry.register(weak.model_uri, "halfway-new", settings=settings)
        assert "halfway-new" not in registry.models(settings)  # the model this call created went too
    finally:
        for blocker in blockers:
            blocker.unlink()
    assert registry.register(weak.model_uri, name, settings=settings).version == "3"  # numbers are not reused

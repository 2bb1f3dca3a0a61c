"""Team mode for real: `civicml server` (mlflow server) on a fresh PostgreSQL database, artifacts proxied to
moto's S3 server over HTTP; train -> register -> promote -> rollback -> load through it, from the CLI and the
Python API, and the objects really are in the bucket.
"""

from __future__ import annotations

import json

import pandas as pd
import psycopg2
import pytest

import registry
from app.cli import main
from civicml.errors import IntegrityError
from projects import get_use_case, train
from team_mode import BUCKET, PREFIX, moto_s3, team_pg, team_server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

ROW = {"description": "Huge pothole on Oak Avenue", "district": "Midtown", "channel": "app", "hour": 8, "weekday": 1}
LAX_POLICY = """\
version: 1
metric: macro_f1
min_value: 0.5
max_regression: 0.5
signature: compatible
latency_p95_ms: 5000
latency_rows: 10
report_by: [district]
"""


def test_server_command_validates_before_starting(capsys, monkeypatch):
    monkeypatch.delenv("CIVICML_SERVER_BACKEND", raising=False)
    monkeypatch.delenv("CIVICML_SERVER_ARTIFACTS", raising=False)
    assert main(["server"]) == 2
    assert "no backend store" in capsys.readouterr().err
    assert main(["server", "--backend-store-uri", "http://db", "--artifacts-destination", "s3://b/p"]) == 2
    assert "must be a database URI" in capsys.readouterr().err
    assert main(["server", "--backend-store-uri", "postgresql://postgres@127.0.0.1:1/none",
                 "--artifacts-destination", "s3://b/p"]) == 2
    assert "cannot reach the backend store" in capsys.readouterr().err
    monkeypatch.setenv("CIVICML_SERVER_BACKEND", "postgresql://ml:secret@db:5432/mlflow")
    monkeypatch.setenv("CIVICML_SERVER_ARTIFACTS", "s3://city-models/mlflow")
    assert main(["server", "--dry-run"]) == 0
    command = capsys.readouterr().out
    from app.cli.server import sqlalchemy_uri

    # psycopg2 named explicitly only where psycopg 3 (SQLAlchemy 2.1's default for postgresql://) is missing
    scheme = sqlalchemy_uri("postgresql://db/x").split("://")[0]
    assert f"mlflow server --backend-store-uri {scheme}://ml:***@db:5432/mlflow --serve-artifacts " \
           "--artifacts-destination s3://city-models/mlflow --host 127.0.0.1 --port 5000" in command
    assert "secret" not in command


@pytest.fixture(scope="module")
def team_trained(team_server, requests_dataset, tmp_path_factory):
    """One logistic regression trained through the team server (its artifacts in the bucket)."""
    settings = team_server.settings(tmp_path_factory.mktemp("team") / "home", user="tester")
    return settings, train(get_use_case("service_requests"), requests_dataset, "logreg", settings=settings)


@pytest.mark.slow
def test_train_register_promote_rollback_load_through_the_server(team_server, team_trained, tmp_path, capsys,
                                                                 monkeypatch):
    settings, good = team_trained
    name = "team-router"
    monkeypatch.setenv("CIVICML_USER", "tester")
    store_args = ["--tracking-uri", team_server.url, "--home", str(settings.home)]
    policy = tmp_path / "policy.yaml"
    policy.write_text(LAX_POLICY)

    # v1: trained with the Python API, registered and promoted with the CLI
    assert main(["register", good.model_uri, "--name", name, *store_args]) == 0
    assert main(["promote", name, "--policy", str(policy), *store_args]) == 0
    # v2: trained with the CLI against the server (a shallow tree), registered, promoted
    capsys.readouterr()
    assert main(["train", *store_args, "--rows", "600", "--family", "decision_tree", "--param", "max_depth=6",
                 "--json"]) == 0
    weak_uri = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model_uri"]
    assert main(["register", weak_uri, "--name", name, *store_args]) == 0
    assert main(["promote", name, "--policy", str(policy), *store_args]) == 0
    assert registry.ModelStore(settings).by_alias(name, "champion").version == "2"
    capsys.readouterr()
    assert main(["rollback", name, *store_args]) == 0
    assert "version 2 -> 1" in capsys.readouterr().out

    # load: the registry's verified copy, and a serving endpoint following 'champion'
    local = registry.resolve(name, settings=settings)
    assert local.version.version == "1" and (local.path / "MLmodel").exists()
    from serving import Endpoint

    endpoint = Endpoint(name, settings=settings, refresh_seconds=0)
    _, served = endpoint.predict(pd.DataFrame([ROW]))
    assert served.version == "1"
    endpoint.close()

    assert main(["audit", name, *store_args]) == 0
    out = capsys.readouterr().out
    assert "promote  by tester (single-user): champion: - -> 1" in out
    assert "rollback by tester (single-user): champion: 2 -> 1" in out
    assert main(["models", "show", name, *store_args]) == 0
    assert "v1  aliases: champion" in capsys.readouterr().out

    # the artifacts are objects in the bucket, the registry rows are in PostgreSQL
    keys = team_server.s3.keys(PREFIX + "/")
    for version in registry.versions(name, settings=settings):
        model_id = version.source.split("/")[-1]
        files = {k.rsplit("/", 1)[1] for k in keys if f"/models/{model_id}/artifacts/" in k}
        assert {"MLmodel", "model.skops", "requirements.txt"} <= files, files
    cards = [k for k in keys if f"/model_cards/{name}/" in k]
    assert any(k.endswith("v1-registered.md") for k in cards) and any(k.endswith("v1-promoted.md") for k in cards)
    with psycopg2.connect(team_server.backend, connect_timeout=3) as conn, conn.cursor() as cur:
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (name,))
        assert dict(cur.fetchall()) == {"champion": 1, "challenger": 2}
        cur.execute("SELECT count(*) FROM registered_model_tags WHERE name = %s AND key LIKE 'civicml.audit.%%'",
                    (name,))
        assert cur.fetchone()[0] == 5  # register, promote, register, promote, rollback
    card = registry.model_card(name, "1", settings=settings)
    assert "### Per district" in card


@pytest.mark.slow
def test_tampered_object_in_the_bucket_is_refused_on_load(team_server, team_trained):
    settings, good = team_trained
    name = "team-tampered"
    version = registry.register(good.model_uri, name, settings=settings)
    s3 = team_server.s3.client()
    model_id = version.source.split("/")[-1]
    key = next(k for k in team_server.s3.keys(PREFIX + "/") if k.endswith(f"/models/{model_id}/artifacts/model.skops"))
    original = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=original[:-1] + bytes([original[-1] ^ 1]))
    try:
        with pytest.raises(IntegrityError, match=f"checksum mismatch for model '{name}' version 1"):
            registry.resolve(name, "challenger", settings=settings)
    finally:
        s3.put_object(Bucket=BUCKET, Key=key, Body=original)
    assert registry.resolve(name, "challenger", settings=settings).version.version == "1"


@pytest.mark.slow
def test_registration_while_s3_is_down_leaves_no_version(team_server, team_trained, monkeypatch, capsys):
    settings, good = team_trained
    name = "team-outage"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail now, not after minutes of back-off
    monkeypatch.setenv("CIVICML_USER", "tester")
    team_server.s3.stop()
    try:
        with pytest.raises(registry.ArtifactsUnavailable, match="artifact store did not answer"):
            registry.register(good.model_uri, name, settings=settings)
        capsys.readouterr()
        assert main(["register", good.model_uri, "--name", name, "--tracking-uri", team_server.url,
                     "--home", str(settings.home)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "artifact store did not answer" in err[0]
    finally:
        team_server.s3.start()
    assert name not in registry.models(settings)
    version = registry.register(good.model_uri, name, settings=settings)
    assert version.version == "1" and registry.model_card(name, "1", settings=settings)

"""A new embedded store is copied from an empty, migrated MLflow schema kept in the cache folder."""

from __future__ import annotations

import os
import sqlite3

import pytest

from civicml.settings import Settings, cache_dir
from civicml.tracking import seed_database, tracking_client


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_new_home_is_seeded_and_its_default_experiment_keeps_artifacts_under_the_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CIVICML_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    settings = Settings.from_env(env={}, home=tmp_path / "home")
    client = tracking_client(settings)
    templates = list((tmp_path / "cache").glob("mlflow-*-schema.db"))
    assert len(templates) == 1 and {"experiments", "runs", "registered_models"} <= _tables(templates[0])
    assert not list((tmp_path / "home").glob(".*.seed"))  # the staged copy is gone
    default = client.get_experiment("0")
    assert default.artifact_location == f"file://{tmp_path / 'home' / 'artifacts'}/0"
    # a run and a registered model work on the seeded store, and the template stays empty
    run = client.create_run("0")
    client.create_registered_model("seeded")
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith(default.artifact_location)
    with sqlite3.connect(templates[0]) as db:
        assert db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 0


def test_an_existing_database_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("CIVICML_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "mlflow.db"
    path.write_bytes(b"")
    assert seed_database(f"sqlite:///{path}") is False and path.read_bytes() == b""


def test_an_unwritable_cache_leaves_mlflow_to_create_the_tables(tmp_path, monkeypatch):
    if os.geteuid() == 0:  # root writes through permissions: point the cache below a file instead
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("CIVICML_CACHE_DIR", str(tmp_path / "file" / "cache"))
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        monkeypatch.setenv("CIVICML_CACHE_DIR", str(tmp_path / "ro" / "cache"))
    settings = Settings.from_env(env={}, home=tmp_path / "home")
    assert seed_database(settings.tracking_uri) is False
    client = tracking_client(settings)
    assert client.get_experiment("0").name == "Default"


@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "postgresql://nobody@127.0.0.1/none", "sqlite://"])
def test_other_stores_are_left_alone(uri):
    assert seed_database(uri) is False


def test_wal_stores_sync_at_checkpoints_and_other_sqlite_files_keep_their_setting(tmp_path):
    """The home's stores are in WAL mode, where a connection syncs at checkpoints (synchronous=NORMAL, 1);
    a SQLite file in the default rollback-journal mode keeps SQLite's full sync (2)."""
    import sqlalchemy as sa

    settings = Settings.from_env(env={}, home=tmp_path / "home", user="tester")
    client = tracking_client(settings)
    client.create_experiment("synced")  # MLflow's own engine opened its connections after ours was set up
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).close()
    for uri, expected in ((settings.tracking_uri, 1), (f"sqlite:///{plain}", 2)):
        engine = sa.create_engine(uri)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == expected, uri
        engine.dispose()

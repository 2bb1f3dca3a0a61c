"""Shared fixtures: a temporary CivicML home, generated 311 data, and a fresh PostgreSQL database."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

# Three test processes share two cores: an OpenMP pool per process (HistGradientBoosting, BLAS) spins on cores
# the others need (the pruning test used 2.3x the CPU with the default pool). One thread per process is the
# suite's setting; child processes the tests start inherit it. Users' own runs keep the libraries' default.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from civicml.settings import Settings  # noqa: E402

PG_ADMIN_URL = os.environ.get("CIVICML_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


MLFLOW_EXPORTS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@pytest.fixture(scope="session", autouse=True)
def _a_current_folder_of_its_own(tmp_path_factory):
    """Each test process works in an empty folder of its own, as a user's command does, and not in the
    repository: what a test writes into the current folder (MLflow's ``./mlflow.db`` fallback) is then its
    own, never another xdist worker's."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(autouse=True)
def _no_inherited_mlflow_environment(monkeypatch):
    """Every test starts from MLflow's state in a fresh process: no process-wide tracking or registry URI
    (what an earlier test set) and none of the variables MLflow exports, so that no test passes because
    another pointed MLflow somewhere first. A test that makes MLflow fall back to ``./mlflow.db`` fails."""
    import mlflow

    stray = Path("mlflow.db")
    existed = stray.exists()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for name in MLFLOW_EXPORTS:
        monkeypatch.delenv(name, raising=False)
    yield
    for name in MLFLOW_EXPORTS:
        os.environ.pop(name, None)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    if stray.exists() and not existed:
        stray.unlink()
        pytest.fail("the test wrote ./mlflow.db: something used MLflow's process-wide tracking URI unset")


@pytest.fixture
def settings(tmp_path) -> Settings:
    """The embedded default in a temporary home: SQLite tracking and Optuna, local artifacts."""
    return Settings.from_env(env={}, home=tmp_path / "home", user="tester")


@pytest.fixture(scope="session")
def requests_use_case():
    from projects import get_use_case

    return get_use_case("service_requests")


@pytest.fixture(scope="session")
def small_requests(requests_use_case, tmp_path_factory):
    """500 generated 311 requests: enough for fast tuning tests."""
    folder = tmp_path_factory.mktemp("sr-small")
    return requests_use_case.integrate(requests_use_case.generate_sources(folder, n=500, seed=5))


@pytest.fixture(scope="session")
def requests_dataset(tmp_path_factory):
    from projects import get_use_case

    use_case = get_use_case("service_requests")
    folder = tmp_path_factory.mktemp("sr-data")
    return use_case.integrate(use_case.generate_sources(folder, n=1200, seed=3))


@pytest.fixture(scope="session")
def requests_holdout(tmp_path_factory):
    from projects import get_use_case

    use_case = get_use_case("service_requests")
    return use_case.holdout(tmp_path_factory.mktemp("sr-holdout"), n=500)


@contextlib.contextmanager
def fresh_postgres_database(prefix: str = "civicml_test"):
    """Create a new, empty PostgreSQL database, yield its URL, drop it afterwards.

    Skips when the server is down, except under CI=true, where that is a failure.
    """
    import psycopg2

    try:
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
    except psycopg2.OperationalError as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {err}")
        pytest.skip(f"PostgreSQL is not reachable: {err}")
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture
def postgres_db():
    """A new, empty PostgreSQL database for one test (see :func:`fresh_postgres_database`)."""
    with fresh_postgres_database() as url:
        yield url


def run_in_clean_process(script: str, *args: str, cwd) -> dict:
    """Run ``script`` in a new Python without PYTHONPATH or MLflow's pickle opt-in (as a serving host
    would); return the JSON object it printed last, with whether it loaded any ``projects`` module."""
    import json
    import subprocess
    import sys

    script += ("\nimport json as _j, sys as _s\n"
               "print(_j.dumps({**result, 'projects_loaded': any(k == 'projects' or k.startswith('projects.')"
               " for k in _s.modules)}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION")}
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# The files that take longest, in that order, start first. `make test` runs whole files on each xdist
# process (--dist loadfile) in collection order, so a long file collected late (test_tuning.py is near the end
# of the alphabet) would run on its own at the end while the other processes sit idle. Refresh the list from
# the per-file times of a full run (`make test PYTEST_ARGS=--junitxml=FILE`) when it drifts.
LONGEST_FIRST = ("test_tuning.py", "test_demo.py", "test_registry_security.py", "test_real_files.py",
                 "test_journey.py", "test_cli.py", "test_scoring.py", "test_tabular_lifecycle.py", "test_team_mode.py",
                 "test_variants_text.py", "test_access_matrix.py", "test_registry.py", "test_street_scenes.py",
                 "test_tuning_distributed.py", "test_console.py", "test_paddle_lifecycle.py", "test_serving.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    for item in items:
        if {"postgres_db", "team_pg"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def load_logged(settings: Settings, uri: str):
    """``mlflow.pyfunc.load_model`` of a ``models:/m-...`` or ``runs:/`` URI in ``settings``' store (MLflow
    resolves those through its process-wide tracking URI, which no test relies on: see above)."""
    import mlflow

    from civicml.tracking import fluent

    with fluent(settings):
        return mlflow.pyfunc.load_model(uri)


def download_logged(settings: Settings, uri: str, dst: str) -> str:
    import mlflow

    from civicml.tracking import fluent

    with fluent(settings):
        return mlflow.artifacts.download_artifacts(uri, dst_path=dst)


def logged_info(settings: Settings, uri: str):
    import mlflow

    from civicml.tracking import fluent

    with fluent(settings):
        return mlflow.models.get_model_info(uri)

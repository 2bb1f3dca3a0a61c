"""Point MLflow at the configured stores, and create experiments where artifacts belong.

With the embedded default, a new experiment's artifacts would otherwise land in
``./mlruns`` of whatever folder a command runs in; here they always go under
``CIVICML_HOME``. Against a tracking server, the server decides (proxied artifacts).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from civicml.settings import Settings, cache_dir
from civicml.sqlite import database_file, write_ahead_log


def tracking_client(settings: Settings) -> MlflowClient:
    """A client on ``settings``' stores, leaving MLflow's process-wide current store alone.

    The embedded default's database is created here, with its ``Default`` experiment's artifacts under
    the home (MLflow would otherwise put them in ``./mlruns`` of whatever folder a command runs in).
    """
    if settings.embedded:
        settings.ensure_home()
    if settings.tracking_uri.startswith("sqlite:") and settings.tracking_uri not in _CREATED:
        seed_database(settings.tracking_uri)
    write_ahead_log(settings.tracking_uri)
    if settings.tracking_uri.startswith("sqlite:"):
        _create_database(settings)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress is ours to show
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def configure(settings: Settings) -> MlflowClient:
    """Make ``settings``' stores MLflow's current ones (the fluent API: ``mlflow.start_run``, model logging)
    and return a client on them."""
    client = tracking_client(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return client


_CREATED: set[str] = set()
_log = logging.getLogger("civicml.tracking")


def seed_database(uri: str) -> bool:
    """Give a new SQLite tracking store MLflow's tables by copying an empty, fully migrated database.

    MLflow builds a new store's schema by running every one of its migrations (about fifty), one
    transaction each: seconds for each new home. The same empty schema is built once per MLflow version
    into :func:`cache_dir` and copied. The copy holds tables only: MLflow still creates the ``Default``
    experiment, with this home's artifact root, when the store is first opened. Returns whether a copy
    was made; an existing database, or any failure here (a read-only cache, say), leaves MLflow to do
    it its own way."""
    path = database_file(uri)
    if path is None or path.exists():
        return False
    try:
        template = _schema_template()
        staged = path.with_name(f".{path.name}.{os.getpid()}.seed")
        shutil.copyfile(template, staged)
        try:
            os.link(staged, path)  # never over a database another process created meanwhile
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)
        return True
    except Exception as err:  # noqa: BLE001 - an optimisation only: MLflow creates the tables itself
        _log.debug("no schema template for %s (%s); MLflow creates the tables", uri, err)
        return False


def _schema_template() -> Path:
    """The empty database with the installed MLflow's schema, built on first use (atomically)."""
    template = cache_dir() / f"mlflow-{mlflow.__version__}-schema.db"
    if template.is_file():
        return template
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    template.parent.mkdir(parents=True, exist_ok=True)
    staged = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    staged.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{staged}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    os.replace(staged, template)
    return template


def _create_database(settings: Settings) -> None:
    """Open the SQLite tracking store once per process with CivicML's artifact root as its default root:
    MLflow creates the tables and the ``Default`` experiment (id 0) the first time, and that experiment
    keeps the artifact location it gets then."""
    if settings.tracking_uri in _CREATED or not settings.artifact_root:
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(settings.tracking_uri, settings.artifact_root)
    _CREATED.add(settings.tracking_uri)


def experiment_id(settings: Settings, name: str) -> str:
    """The id of experiment ``name``, created (with CivicML's artifact root) if missing."""
    client = tracking_client(settings)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{settings.artifact_root.rstrip('/')}/{name}" if settings.artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by another worker
        return client.get_experiment_by_name(name).experiment_id

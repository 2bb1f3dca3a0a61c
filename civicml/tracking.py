"""Point MLflow at the configured stores, and create experiments where artifacts belong.

With the embedded default, a new experiment's artifacts would otherwise land in
``./mlruns`` of whatever folder a command runs in; here they always go under
``CIVICML_HOME``. Against a tracking server, the server decides (proxied artifacts).
"""

from __future__ import annotations

import os

import mlflow
from mlflow.tracking import MlflowClient

from civicml.settings import Settings
from civicml.sqlite import write_ahead_log


def tracking_client(settings: Settings) -> MlflowClient:
    """A client on ``settings``' stores, leaving MLflow's process-wide current store alone.

    The embedded default's database is created here, with its ``Default`` experiment's artifacts under
    the home (MLflow would otherwise put them in ``./mlruns`` of whatever folder a command runs in).
    """
    if settings.embedded:
        settings.ensure_home()
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

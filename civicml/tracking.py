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


def configure(settings: Settings) -> MlflowClient:
    """Make ``settings``' stores MLflow's current ones and return a client on them."""
    if settings.embedded:
        settings.ensure_home()
    write_ahead_log(settings.tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress is ours to show
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def experiment_id(settings: Settings, name: str) -> str:
    """The id of experiment ``name``, created (with CivicML's artifact root) if missing."""
    client = configure(settings)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{settings.artifact_root.rstrip('/')}/{name}" if settings.artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by another worker
        return client.get_experiment_by_name(name).experiment_id

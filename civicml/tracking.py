"""Point MLflow at the configured stores, and create experiments where artifacts belong.

With the embedded default, a new experiment's artifacts would otherwise land in
``./mlruns`` of whatever folder a command runs in; here they always go under
``CIVICML_HOME``. Against a tracking server, the server decides (proxied artifacts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator
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
    """Make ``settings``' stores MLflow's current ones for good and return a client on them.

    For scripts and notebooks that use MLflow's fluent API themselves; CivicML's own code never calls it:
    it uses :func:`fluent`, which puts back what was there."""
    client = tracking_client(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return client


class _FluentScope:
    """Who holds MLflow's process-wide tracking and registry URIs now, and what to put back.

    MLflow's fluent API (``mlflow.start_run``, ``log_model``, ``runs:/`` and ``models:/m-...`` resolution) reads
    one tracking URI for the whole process; unset, it is ``sqlite:///mlflow.db`` in the current folder. Any
    number of threads may hold the scope at once for the same store (tuning trials in threads); a thread
    that wants another store waits until the scope is free, so two homes never cross in one process. When
    the last holder leaves, the URIs and their environment variables are put back as they were.
    """

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.uri: str | None = None
        self.holders = 0
        self.saved: tuple | None = None
        self.mine = threading.local()

    def enter(self, uri: str) -> None:
        held = getattr(self.mine, "uri", None)
        if held is not None and held != uri:
            raise RuntimeError(f"MLflow's fluent API is already pointed at {held} in this thread; "
                               f"a nested call cannot point it at {uri}")
        with self.changed:
            while self.holders and self.uri != uri:
                self.changed.wait()
            if not self.holders:
                self.saved = _process_uris()
                mlflow.set_tracking_uri(uri)
                mlflow.set_registry_uri(uri)
                self.uri = uri
            self.holders += 1
        self.mine.depth = getattr(self.mine, "depth", 0) + 1
        self.mine.uri = uri

    def leave(self) -> None:
        self.mine.depth -= 1
        if not self.mine.depth:
            self.mine.uri = None
        with self.changed:
            self.holders -= 1
            if not self.holders:
                _restore_process_uris(self.saved)
                self.uri = self.saved = None
                self.changed.notify_all()


_SCOPE = _FluentScope()
_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _process_uris() -> tuple:
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return (tracking_utils._tracking_uri, registry_utils._registry_uri,
            {name: os.environ.get(name) for name in _URI_VARIABLES})


def _restore_process_uris(saved: tuple) -> None:
    tracking, registry, variables = saved
    mlflow.set_tracking_uri(tracking)  # None unsets it
    mlflow.set_registry_uri(registry)
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def fluent(settings: Settings) -> Iterator[MlflowClient]:
    """Point MLflow's fluent API at ``settings``' stores for the ``with`` block, and put back what was there.

    The one place in CivicML that touches MLflow's process-wide state: model logging (``log_model`` takes no
    client), ``mlflow.start_run`` and the resolution of ``runs:/``/``models:/m-...`` URIs inside MLflow.
    Yields a client on the same stores. See :class:`_FluentScope` for threads."""
    client = tracking_client(settings)
    _SCOPE.enter(settings.tracking_uri)
    try:
        yield client
    finally:
        _SCOPE.leave()


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

"""Optuna storage chosen by URI, with heartbeats where the backend has them.

==============================  ===========================================  =================
URI                             backend                                      parallel workers
==============================  ===========================================  =================
``sqlite:///PATH``              RDB on SQLite (the embedded default)         no: refused
``journal:///PATH``             Optuna's journal file (file locks)           yes, one machine
``postgresql://...``            RDB on PostgreSQL (team mode)                yes, any machine
==============================  ===========================================  =================

PostgreSQL storages get heartbeats: a worker that dies mid-trial (SIGKILL, lost
machine) stops beating, and the next worker to start a trial marks the stale
trial FAIL, calls ``on_stale`` (tuning marks the trial's MLflow run FAILED there)
and queues a retry of the same parameters
(``RetryHeartbeatStaleTrialCallback(max_retry=1)``, the successor of
``RetryFailedTrialCallback``). The storages of one machine (SQLite, journal) need
none: every trial names its worker's host, process id and process start, and
tuning fails and retries the trials of a process that has ended the same way
(``tuning.worker.fail_dead_trials``), when a worker starts and then as often as a
heartbeat would go stale. A heartbeat costs each trial two store round trips and
a thread; a process check costs nothing while no trial of another process runs.
Optuna looks for stale trials before every trial; on PostgreSQL tuning looks at
most once per heartbeat interval and process (``_TeamStorage``), so a dead
worker's trial is found at most one interval after its grace period.

:func:`study_lock` serialises the few steps that read and then write a study's
shared state (its MLflow parent run, its invocation counter) across every
process, and every machine, that uses the same storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import optuna

from civicml.errors import InvalidInput, Unavailable
from civicml.sqlite import write_ahead_log

KINDS = ("sqlite", "journal", "postgresql")


@dataclass(frozen=True)
class Heartbeat:
    """How often a running trial proves it is alive, and how long silence means dead (seconds)."""

    interval: int = 10
    grace_period: int = 30
    max_retry: int = 1

    def __post_init__(self):
        if self.interval < 1 or self.grace_period <= self.interval:
            raise InvalidInput(f"heartbeat needs interval >= 1 and grace period > interval, got "
                               f"{self.interval}, {self.grace_period}")


def storage_kind(uri: str) -> str:
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "postgres":
        scheme = "postgresql"
    if scheme not in KINDS:
        raise InvalidInput(f"unsupported Optuna storage '{uri}': use sqlite:///PATH, journal:///PATH "
                           f"or postgresql://USER@HOST/DB")
    return scheme


def check_workers(uri: str, workers: int) -> None:
    if workers < 1:
        raise InvalidInput(f"--workers must be at least 1, got {workers}")
    if workers > 1 and storage_kind(uri) == "sqlite":
        raise InvalidInput(f"SQLite storage cannot take {workers} parallel workers (database is locked); "
                           f"use --storage journal:///PATH.log on one machine or postgresql://... for a team")


def open_storage(uri: str, heartbeat: Heartbeat | None = None,
                 on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None
                 ) -> optuna.storages.BaseStorage:
    """The storage behind ``uri``; PostgreSQL storages beat hearts and retry stale trials once."""
    kind = storage_kind(uri)
    if kind == "journal":
        path = _local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    if kind == "sqlite":
        write_ahead_log(uri)  # creates the folder and file; see civicml.sqlite
    heartbeat = heartbeat or Heartbeat()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)

    def stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    # PostgreSQL: no pool_pre_ping (a "SELECT 1" before every one of Optuna's sessions, about a dozen round
    # trips a trial); _TeamStorage pings only a connection that sat idle (see _ping_when_idle)
    engine_kwargs = {} if kind == "postgresql" else {"connect_args": {"timeout": 30}}
    if kind == "postgresql":
        uri = _postgres_driver(uri)
    beats = dict(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace_period,
                 heartbeat_stale_trial_callback=stale) if kind == "postgresql" else {}
    make = _TeamStorage if kind == "postgresql" else optuna.storages.RDBStorage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(SCHEMA_RACE_RETRIES + 1):
            try:
                return make(uri, engine_kwargs=engine_kwargs, **beats)
            except Exception as err:  # sqlalchemy's OperationalError and friends: say which store failed
                if isinstance(err, InvalidInput):
                    raise
                if kind == "postgresql" and attempt < SCHEMA_RACE_RETRIES and _schema_race(err):
                    time.sleep(0.5)  # another worker is creating Optuna's tables in this new database
                    continue
                first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
                raise InvalidInput(f"cannot open Optuna storage {_redact(uri)}: {first}") from None


SCHEMA_RACE_RETRIES = 10
IDLE_PING_SECONDS = 10.0


class _TeamStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage on PostgreSQL, with two costs per trial taken off every worker's path.

    * Stale trials: Optuna looks for them before every trial (``fail_stale_trials``: the database's clock
      and every running trial's heartbeat, about 3 round trips); here at most once per heartbeat interval
      per study and process. A dead worker's trial goes stale after the grace period anyway, so it is found
      at most one interval later than before.
    * Connection checks: a pooled connection is pinged before use only when it sat idle for
      ``IDLE_PING_SECONDS`` (one that was used a moment ago is alive; ``pool_pre_ping`` pinged them all). A
      connection that still breaks fails that one call, and SQLAlchemy then replaces the whole pool.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stale_checked: dict[int, float] = {}
        _ping_when_idle(self.engine, IDLE_PING_SECONDS)

    def __setstate__(self, state) -> None:  # unpickled: a new engine, the same checks
        super().__setstate__(state)
        _ping_when_idle(self.engine, IDLE_PING_SECONDS)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.monotonic()
        checks = self.__dict__.setdefault("_stale_checked", {})
        if now - checks.get(study_id, float("-inf")) < (self.heartbeat_interval or 0):
            return []
        checks[study_id] = now
        return super()._get_stale_trial_ids(study_id)


def _ping_when_idle(engine, idle_seconds: float) -> None:
    """Before a pooled connection is handed out, ping it if it was idle ``idle_seconds`` or more; one that
    does not answer is replaced (SQLAlchemy's recipe for pessimistic disconnect handling)."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "checkin")
    def _returned(dbapi_connection, record) -> None:
        record.info["civicml.idle_since"] = time.monotonic()

    @sqlalchemy.event.listens_for(engine, "checkout")
    def _handed_out(dbapi_connection, record, proxy) -> None:
        since = record.info.get("civicml.idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except Exception as err:
            raise sqlalchemy.exc.DisconnectionError(str(err)) from err


def trial_count(study: optuna.Study) -> int | None:
    """How many trials ``study`` holds, by one count on the database (every state); ``None`` where its storage
    is not an RDB one. Far cheaper than reading the trials, which a running trial makes Optuna read again."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # Optuna wraps an RDBStorage in a cache
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    import sqlalchemy
    from optuna.storages._rdb.models import TrialModel

    query = sqlalchemy.select(sqlalchemy.func.count()).select_from(TrialModel).where(
        TrialModel.study_id == study._study_id)
    with backend.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _schema_race(err: BaseException) -> bool:
    """Whether ``err`` is PostgreSQL refusing a second ``CREATE TABLE`` of the same table: two workers opening
    a new, empty storage at once both create Optuna's tables, and one of them loses (its retry finds them).
    Optuna may wrap the database's error (``StorageInternalError`` "raised during the commit"): the whole
    chain of causes is read."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        orig = getattr(err, "orig", None)
        text = f"{err!r} {err} {orig!r}"
        if "UniqueViolation" in text or "already exists" in text or "pg_type_typname_nsp_index" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


LOCK_SECONDS = 60


@contextlib.contextmanager
def study_lock(uri: str, study_name: str, timeout: float = LOCK_SECONDS) -> Iterator[None]:
    """Hold study ``study_name``'s lock in storage ``uri`` for the ``with`` block.

    Two machines that start a new study of the same name at the same moment would
    otherwise both find no parent run and each create one, and both read the same
    invocation count. Optuna has no lock of its own to lend, so the lock lives
    where every participant already reaches: a PostgreSQL advisory lock for
    PostgreSQL storage (any machine, one lock per study), an exclusive ``flock`` on a
    file beside the SQLite database or journal file (one machine, one lock for all
    its studies: the section is short). Raises
    :class:`~civicml.errors.Unavailable` when it cannot be taken within ``timeout``.
    """
    if storage_kind(uri) == "postgresql":
        with _advisory_lock(uri, study_name, timeout):
            yield
    else:
        with _file_lock(Path(f"{_local_path(uri)}.civicml-lock"), study_name, timeout):
            yield


def _lock_key(study_name: str) -> int:
    """A signed 64-bit key, the same in every process (``hash()`` is salted per process)."""
    digest = hashlib.sha256(f"civicml.study:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def _advisory_lock(uri: str, study_name: str, timeout: float) -> Iterator[None]:
    """A session-level advisory lock on a connection of its own (advisory locks are per database).

    The connection autocommits, so no transaction stays open while the lock is
    held; closing it releases the lock too, should the unlock not get through.
    """
    import sqlalchemy

    engine = sqlalchemy.create_engine(_postgres_driver(uri), poolclass=sqlalchemy.pool.NullPool,
                                      isolation_level="AUTOCOMMIT")
    key = _lock_key(study_name)
    try:
        conn = _locked_connection(engine, key, timeout)
    except sqlalchemy.exc.SQLAlchemyError as err:  # the server is down, or the lock timed out
        engine.dispose()
        first = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise Unavailable(f"cannot lock study '{study_name}' in {_redact(uri)} (waited at most {timeout:g} s): "
                          f"{first}") from None
    try:
        yield
    finally:
        try:
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            conn.close()
            engine.dispose()


def _locked_connection(engine, key: int, timeout: float):
    """A new connection that holds advisory lock ``key``, waiting at most ``timeout`` seconds for it."""
    import sqlalchemy

    conn = engine.connect()
    try:
        conn.execute(sqlalchemy.text(f"SET lock_timeout = {max(1, int(timeout * 1000))}"))
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _file_lock(path: Path, study_name: str, timeout: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``; each open file conflicts, so threads of one process wait too."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"cannot lock study '{study_name}' ({path}) within {timeout:g} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _local_path(uri: str) -> Path:
    """The file behind ``sqlite:///PATH`` or ``journal:///PATH`` (``journal:PATH`` too)."""
    if storage_kind(uri) == "sqlite":
        return Path(uri[len("sqlite:///"):])
    rest = uri[len("journal:"):]
    return Path(rest[2:] if rest.startswith("//") else rest)


def _postgres_driver(uri: str) -> str:
    """A plain ``postgresql://`` URI gets psycopg2, the driver tuning's locks and heartbeats were measured
    with, where it is installed; else psycopg 3 (SQLAlchemy 2.1's default for plain URLs, which users'
    own ``optuna`` and ``mlflow`` commands use)."""
    scheme, rest = uri.split("://", 1)
    if "+" in scheme:
        return uri
    import importlib.util

    driver = "psycopg2" if importlib.util.find_spec("psycopg2") else "psycopg"
    return f"postgresql+{driver}://{rest}"


def _redact(uri: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return uri

"""Optuna storage chosen by URI, with heartbeats where the backend has them.

==============================  ===========================================  =================
URI                             backend                                      parallel workers
==============================  ===========================================  =================
``sqlite:///PATH``              RDB on SQLite (the embedded default)         no: refused
``journal:///PATH``             Optuna's journal file (file locks)           yes, one machine
``postgresql://...``            RDB on PostgreSQL (team mode)                yes, any machine
==============================  ===========================================  =================

RDB storages get heartbeats: a worker that dies mid-trial (SIGKILL, lost machine)
stops beating, and the next worker to start a trial marks the stale trial FAIL,
calls ``on_stale`` (tuning marks the trial's MLflow run FAILED there) and queues
a retry of the same parameters (``RetryHeartbeatStaleTrialCallback(max_retry=1)``,
the successor of ``RetryFailedTrialCallback``). The journal backend has no
heartbeats in Optuna 5: a killed worker's trial stays RUNNING there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

from civicml.errors import InvalidInput

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
    """The storage behind ``uri``; RDB storages beat hearts and retry stale trials once."""
    kind = storage_kind(uri)
    if kind == "journal":
        rest = uri[len("journal:"):]
        path = Path(rest[2:] if rest.startswith("//") else rest)
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    if kind == "sqlite":
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    heartbeat = heartbeat or Heartbeat()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)

    def stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    engine_kwargs = {"pool_pre_ping": True} if kind == "postgresql" else {"connect_args": {"timeout": 30}}
    if kind == "postgresql":
        uri = _postgres_driver(uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(uri, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=heartbeat.interval,
                                              grace_period=heartbeat.grace_period,
                                              heartbeat_stale_trial_callback=stale)
        except Exception as err:  # sqlalchemy's OperationalError and friends: say which store failed
            if isinstance(err, InvalidInput):
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
            raise InvalidInput(f"cannot open Optuna storage {_redact(uri)}: {first}") from None


def _postgres_driver(uri: str) -> str:
    """A plain ``postgresql://`` URI gets the driver that is installed (SQLAlchemy 2.1 defaults to psycopg 3)."""
    scheme, rest = uri.split("://", 1)
    if "+" in scheme:
        return uri
    import importlib.util

    driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
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

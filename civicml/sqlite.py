"""The embedded stores' SQLite files use write-ahead logging.

In SQLite's default (rollback journal) mode every commit writes and syncs a
journal file, and a reader blocks the one writer. With a write-ahead log a
commit is one append, and readers (``mlflow ui``, a second terminal asking how
a study goes) never block the process that is writing. The mode is stored in
the database file, so setting it once is enough; every later connection, MLflow's
and Optuna's included, uses it. WAL needs the file on a local disk (not NFS),
which is where ``CIVICML_HOME`` belongs anyway.

In WAL mode the process's SQLite connections (MLflow's, Optuna's, the answer records') sync at checkpoints,
not at every commit (``PRAGMA synchronous=NORMAL``, set as each connection opens): a commit cost 0.25 ms
with its fsync against 0.014 ms without on this machine kind's disk, and a tuning trial commits a dozen
times. A commit still survives the process crashing; after a power cut or an operating-system crash the
last commits may be lost, never the database's consistency (SQLite's documentation of WAL). A team that
needs every commit on disk runs its stores on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from pathlib import Path

PREFIX = "sqlite:///"


def database_file(uri: str) -> Path | None:
    """The file behind a ``sqlite:///PATH`` URI; None for other URIs and in-memory databases."""
    if not uri.startswith(PREFIX):
        return None
    path = uri[len(PREFIX):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


@functools.lru_cache(maxsize=32)
def write_ahead_log(uri: str) -> bool:
    """Switch the SQLite database behind ``uri`` to WAL (creating the file if need be); other URIs are left
    alone. Returns whether the database now uses WAL; a database that is busy keeps its mode this time."""
    path = database_file(uri)
    if path is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    _sync_at_checkpoints()
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as connection:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.DatabaseError:
        write_ahead_log.cache_clear()  # try again next time
        return False
    return str(mode).lower() == "wal"


@functools.lru_cache(maxsize=1)
def _sync_at_checkpoints() -> None:
    """From now on, every SQLite connection SQLAlchemy opens in this process whose database is in WAL mode
    syncs at checkpoints only (see the module's doc); other databases are left as they are."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def on_connect(connection, _record) -> None:
        if not isinstance(connection, sqlite3.Connection):
            return
        cursor = connection.cursor()
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    event.listen(Engine, "connect", on_connect)

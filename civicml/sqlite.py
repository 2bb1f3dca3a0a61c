"""The embedded stores' SQLite files use write-ahead logging.

In SQLite's default (rollback journal) mode every commit writes and syncs a
journal file, and a reader blocks the one writer. With a write-ahead log a
commit is one append, and readers (``mlflow ui``, a second terminal asking how
a study goes) never block the process that is writing. The mode is stored in
the database file, so setting it once is enough; every later connection, MLflow's
and Optuna's included, uses it. WAL needs the file on a local disk (not NFS),
which is where ``CIVICML_HOME`` belongs anyway.
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
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as connection:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.DatabaseError:
        write_ahead_log.cache_clear()  # try again next time
        return False
    return str(mode).lower() == "wal"

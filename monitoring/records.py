"""Served answers, recorded on purpose: a recording policy, masking, and the store.

Serving hands each answered row to a ``monitoring.recorder.Recorder`` (anything with ``record(answer_record)``); it never
imports this package. The top floor builds the recorder (:func:`recorder_for`) and gives it to serving::

    from monitoring import recorder_for
    recorder = recorder_for(use_case, "sample=0.1", settings=settings)      # SQLite under the home
    recorder.record({"answer_id": new_answer_id(), "model": "service-requests-router", "version": "3",
                     "variant": "fp32", "arm": "champion", "inputs": {"description": "...", ...},
                     "answer": "roads", "confidence": 0.91, "latency_ms": 4.2})
    recorder.close()                                                          # flushes what is queued

The recorder that serving is handed, and how what it keeps becomes this store's rows: :mod:`monitoring.recorder`.

The store is one table, ``answer_records``, through SQLAlchemy Core: SQLite under ``Settings.home``
(``monitoring/records.db``, write-ahead log) or PostgreSQL given a ``postgresql://`` URL. SQLite is kept
under a size cap: past ``max_bytes`` the oldest records are deleted (whole, with their outcomes) until
the file is at 80% of the cap, and their pages are given back.

Inputs are masked before they are written (:class:`monitoring.masking.RecordMasking`): only the use case's features are
kept, personal-data columns seed the masker with their names and are dropped, and every text value goes
through :class:`projects.masking.Masker` (e-mails, phones, introductions, known names).
"""

from __future__ import annotations

import json
import operator
import re
import time as _time
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from civicml.errors import InvalidInput
from civicml.settings import Settings
from monitoring.masking import plain as _plain
from registry import record_mode

ARMS = ("champion", "canary", "shadow")
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
TABLE = "answer_records"


def new_answer_id() -> str:
    """A new answer id: a UUIDv7 in hex (32 characters; RFC 9562: the time in milliseconds, then random bits),
    as serving makes them, so that ids stored one after another sort one after another."""
    bits = int.from_bytes(os.urandom(10), "big")
    value = ((_time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (bits >> 62 & 0xFFF) << 64
             | 0x2 << 62 | bits & (1 << 62) - 1)
    return f"{value:032x}"


_ANSWER_ID = re.compile(r"[0-9a-f]{32}")


def is_answer_id(value: Any) -> bool:
    return isinstance(value, str) and _ANSWER_ID.fullmatch(value) is not None


# -- the record ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswerRecord:
    """One answered row: who answered, what was asked (masked once stored), what was answered."""

    answer_id: str
    model: str
    version: str
    inputs: Mapping[str, Any]
    answer: Any  # a label (classifier) or a value (regressor)
    variant: str = "fp32"
    arm: str = "champion"
    confidence: float | None = None  # a classifier's top-class probability
    latency_ms: float | None = None
    time: float = field(default_factory=_time.time)  # epoch seconds, UTC
    group: str | None = None  # the use case's group column's value (filled by the masking)

    @classmethod
    def of(cls, value: "AnswerRecord | Mapping[str, Any]") -> "AnswerRecord":
        """An :class:`AnswerRecord` from itself or from a mapping with its field names (what serving passes:
        serving does not import this package)."""
        if isinstance(value, AnswerRecord):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInput(f"an answer record is a mapping or an AnswerRecord, got {type(value).__name__}")
        unknown = sorted(set(value) - _FIELDS)
        if unknown:
            raise InvalidInput(f"answer record: unknown field '{unknown[0]}' (known: {', '.join(sorted(_FIELDS))})")
        missing = [k for k in ("answer_id", "model", "version", "inputs", "answer") if k not in value]
        if missing:
            raise InvalidInput(f"answer record: field '{missing[0]}' is required")
        record = cls(**{k: value[k] for k in value})
        if not is_answer_id(record.answer_id):
            raise InvalidInput(f"answer record: answer_id must be 32 hex characters, "
                               f"got {record.answer_id!r}")
        if record.arm not in ARMS:
            raise InvalidInput(f"answer record: arm must be one of {', '.join(ARMS)}, got {record.arm!r}")
        return record


_FIELDS = frozenset(AnswerRecord.__dataclass_fields__)


# -- the policy ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordPolicy:
    """What share of answers is recorded: ``off``, ``all`` or ``sample=R`` (0 < R <= 1).

    Sampling is decided by the answer id (its hex digits 17 to 23, random in a UUIDv7 and in a uuid4, as a
    fraction), so it needs no random state, and replicas that see the same id decide the same; the rows of a
    request share them (serving's ids differ in their last 8 digits only)."""

    mode: str = "off"
    rate: float = 0.0

    @classmethod
    def parse(cls, text: "str | RecordPolicy | None") -> "RecordPolicy":
        if isinstance(text, RecordPolicy):
            return text
        return cls(*record_mode(text))  # the one grammar of a record policy: off, all, sample=R

    def wants(self, answer_id: str) -> bool:
        if self.mode == "off":
            return False
        if self.mode == "all":
            return True
        try:
            fraction = int(str(answer_id)[17:24], 16) / 0x1000_0000
        except ValueError:
            return False
        return fraction < self.rate

    def __str__(self) -> str:
        return f"sample={self.rate:g}" if self.mode == "sample" else self.mode


# -- the store -----------------------------------------------------------------------------------
def default_store_url(settings: Settings | None = None) -> str:
    settings = settings or Settings.from_env()
    return f"sqlite:///{settings.home / 'monitoring' / 'records.db'}"


class RecordStore:
    """Answer records and their outcomes, in SQLite or PostgreSQL (chosen by the URL's scheme)."""

    def __init__(self, url: str, max_bytes: int = DEFAULT_MAX_BYTES, keep_open: bool = False):
        import sqlalchemy as sa

        if not isinstance(url, str) or not url.startswith(("sqlite:///", "postgresql://", "postgresql+")):
            raise InvalidInput(f"record store must be a sqlite:/// or postgresql:// URL, got {url!r}")
        if max_bytes < 64 * 1024:
            raise InvalidInput(f"record store size cap must be at least 64 KiB, got {max_bytes}")
        self.url, self.max_bytes = url, int(max_bytes)
        self.sqlite = url.startswith("sqlite:///")
        if self.sqlite:
            from civicml.sqlite import database_file, write_ahead_log

            path = database_file(url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                _auto_vacuum(path)
                write_ahead_log(url)
            self._path = path
        # SQLite: no connection kept open between uses (NullPool), but by the recorder's writer process
        # (keep_open), which writes all day and whose inserts need the answer-id index's pages in its cache. A
        # process holding one while something else in it opens and closes the file (a copy, a byte search)
        # loses its SQLite locks (POSIX locks are per process); another process then takes itself for the
        # last user and removes the shared-memory file, and the next connection here fails with "disk I/O
        # error". Opening a connection costs ~0.1 ms, with an empty page cache.
        if not self.sqlite:
            self._engine = sa.create_engine(url)
        elif keep_open:
            self._engine = sa.create_engine(url, connect_args={"timeout": 30}, pool_size=1)
            sa.event.listen(self._engine, "connect", _large_cache)
        else:
            self._engine = sa.create_engine(url, connect_args={"timeout": 30}, poolclass=sa.pool.NullPool)
        meta = sa.MetaData()
        self._table = sa.Table(
            TABLE, meta,
            sa.Column("answer_id", sa.String(32), primary_key=True),
            sa.Column("model", sa.String(200), nullable=False),
            sa.Column("version", sa.String(64), nullable=False),
            sa.Column("variant", sa.String(64), nullable=False),
            sa.Column("arm", sa.String(16), nullable=False),
            sa.Column("time", sa.Float, nullable=False),
            sa.Column("grp", sa.String(200)),
            sa.Column("inputs", sa.Text, nullable=False),
            sa.Column("answer", sa.Text, nullable=False),
            sa.Column("confidence", sa.Float),
            sa.Column("latency_ms", sa.Float),
            sa.Column("outcome", sa.Text),
            sa.Column("outcome_time", sa.Float),
            sa.Index(f"ix_{TABLE}_model_time", "model", "time"),
        )
        self._reviews = review_table(meta)
        meta.create_all(self._engine)

    # writing ---------------------------------------------------------------------------------
    def write(self, records: Iterable[AnswerRecord]) -> int:
        """Store already-masked records (one transaction); an id already stored is kept as it was."""
        return self.write_rows([_row(r) for r in records])

    def write_rows(self, rows: list) -> int:
        """Store rows already in the table's shape (:func:`masked_rows`: mappings by column, or tuples in
        :data:`ROW_COLUMNS`' order, one kind in a call), in one transaction; an id already stored is kept as it was.
        Returns how many were new."""
        if not rows:
            return 0
        if self.sqlite:  # one prepared statement, run by the driver: SQLAlchemy's insert cost more than masking
            if rows[0].__class__ is tuple:  # already in ROW_COLUMNS' order (the recorder's request rows)
                names, values = ROW_COLUMNS, rows
            else:
                names = [c.name for c in self._table.columns if c.name in rows[0]]
                row_values = operator.itemgetter(*names)  # a row's values in the statement's order, in C
                values = [row_values(r) for r in rows]
            with self._engine.begin() as conn:
                result = conn.exec_driver_sql(
                    f"INSERT OR IGNORE INTO {TABLE} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                    values)
                fresh = max(result.rowcount, 0)
            self.enforce_cap()
            return fresh
        rows = [dict(zip(ROW_COLUMNS, r)) if r.__class__ is tuple else r for r in rows]
        with self._engine.begin() as conn:
            known = self._known(conn, [r["answer_id"] for r in rows])
            fresh = [r for r in rows if r["answer_id"] not in known]
            if fresh:
                conn.execute(self._table.insert(), fresh)
        return len(fresh)

    def _known(self, conn, ids: list[str]) -> set[str]:
        import sqlalchemy as sa

        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            found |= set(conn.execute(sa.select(self._table.c.answer_id)
                                      .where(self._table.c.answer_id.in_(chunk))).scalars())
        return found

    def set_outcomes(self, pairs: Iterable[tuple[str, Any]], when: float | None = None) -> dict[str, list[str]]:
        """Join outcomes to answer ids: ``{"joined", "already_known", "conflicting", "unknown"}`` -> ids.
        An id labelled before keeps its first outcome: the same again is ``already_known``, another one
        ``conflicting``; both are reported, nothing is overwritten."""
        import sqlalchemy as sa

        when = _time.time() if when is None else when
        out: dict[str, list[str]] = {"joined": [], "already_known": [], "conflicting": [], "unknown": []}
        pairs = list(pairs)
        t = self._table
        with self._engine.begin() as conn:
            stored: dict[str, Any] = {}
            ids = list(dict.fromkeys(i for i, _ in pairs))
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                for answer_id, outcome in conn.execute(sa.select(t.c.answer_id, t.c.outcome)
                                                       .where(t.c.answer_id.in_(chunk))):
                    stored[answer_id] = outcome
            updates = []
            for answer_id, outcome in pairs:
                encoded = json.dumps(_plain(outcome))
                if answer_id not in stored:
                    out["unknown"].append(answer_id)
                elif stored[answer_id] is None:
                    stored[answer_id] = encoded
                    updates.append({"b_id": answer_id, "b_outcome": encoded})
                    out["joined"].append(answer_id)
                elif stored[answer_id] == encoded:
                    out["already_known"].append(answer_id)
                else:
                    out["conflicting"].append(answer_id)
            if updates:
                conn.execute(t.update().where(t.c.answer_id == sa.bindparam("b_id"))
                             .values(outcome=sa.bindparam("b_outcome"), outcome_time=when), updates)
        return out

    def add_review(self, answer_id: str, review: Mapping[str, Any], audit=None) -> dict[str, Any] | None:
        """Keep a person's review of one stored answer beside it, in one transaction: the review row (its
        ``decision``, ``reason``, ``roles``, ``time``) and the decision as the answer's outcome (a review
        overrides an earlier label, which the row keeps as ``previous_outcome``). ``audit(answer)`` is called
        inside the transaction with the stored answer and returns the audit record's key: if it raises,
        nothing is kept. Returns the stored answer (a dict of :data:`RECORD_COLUMNS`), or None when no answer
        has that id (nothing is written)."""
        import sqlalchemy as sa

        t, r = self._table, self._reviews
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.answer_id == answer_id)).first()
            if row is None:
                return None
            answer = records_frame([dict(row._mapping)]).iloc[0].to_dict()
            key = audit(answer) if audit is not None else None
            decision = json.dumps(_plain(review["decision"]))
            conn.execute(r.insert(), [{"answer_id": answer_id, "model": answer["model"],
                                       "version": answer["version"], "variant": answer["variant"],
                                       "arm": answer["arm"], "grp": answer["group"], "answer": row.answer,
                                       "decision": decision, "previous_outcome": row.outcome,
                                       "reason": str(review["reason"]), "roles": str(review.get("roles", "")),
                                       "time": float(review["time"]), "audit_key": key}])
            conn.execute(t.update().where(t.c.answer_id == answer_id)
                         .values(outcome=decision, outcome_time=float(review["time"])))
        return answer

    def read_reviews(self, model: str | None = None) -> pd.DataFrame:
        """Every review kept (oldest first): :data:`REVIEW_COLUMNS`, answers and decisions as Python values."""
        import sqlalchemy as sa

        r = self._reviews
        query = sa.select(r).order_by(r.c.time, r.c.id)
        if model is not None:
            query = query.where(r.c.model == model)
        with self._engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        if not rows:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in REVIEW_COLUMNS})
        frame = pd.DataFrame(rows).rename(columns={"grp": "group"})
        for column in ("answer", "decision", "previous_outcome"):
            frame[column] = frame[column].map(lambda v: json.loads(v) if isinstance(v, str) else None)
        return frame[list(REVIEW_COLUMNS)]

    # reading ---------------------------------------------------------------------------------
    def answer_kinds(self, ids: list[str]) -> dict[str, str]:
        """``number`` or ``label`` for each stored id among ``ids``: what kind of answer it was."""
        import sqlalchemy as sa

        t, out = self._table, {}
        with self._engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = sa.select(t.c.answer_id, t.c.answer).where(t.c.answer_id.in_(ids[start:start + 500]))
                for answer_id, answer in conn.execute(query):
                    value = json.loads(answer)
                    out[answer_id] = "number" if isinstance(value, (int, float)) and \
                        not isinstance(value, bool) else "label"
        return out

    def read(self, model: str | None = None, since: float | None = None, until: float | None = None) -> pd.DataFrame:
        """Records as a frame: one row per answer, inputs as a dict column, ``outcome`` None until labelled."""
        import sqlalchemy as sa

        t = self._table
        query = sa.select(t).order_by(t.c.time)
        if model is not None:
            query = query.where(t.c.model == model)
        if since is not None:
            query = query.where(t.c.time >= since)
        if until is not None:
            query = query.where(t.c.time < until)
        with self._engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        return records_frame(rows)

    def latest_time(self, model: str | None = None) -> float | None:
        """The newest recorded answer's time (of ``model``'s answers), None when none is stored: one look at
        the (model, time) index, not a read of every record."""
        import sqlalchemy as sa

        t = self._table
        query = sa.select(sa.func.max(t.c.time))
        if model is not None:
            query = query.where(t.c.model == model)
        with self._engine.connect() as conn:
            value = conn.execute(query).scalar_one()
        return None if value is None else float(value)

    def read_answers(self, ids: list[str]) -> pd.DataFrame:
        """The stored records of ``ids`` (those that exist), as :meth:`read` gives them."""
        import sqlalchemy as sa

        t, rows = self._table, []
        with self._engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = sa.select(t).where(t.c.answer_id.in_(ids[start:start + 500]))
                rows += [dict(r._mapping) for r in conn.execute(query)]
        return records_frame(rows)

    def count(self) -> int:
        import sqlalchemy as sa

        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self._table)).scalar_one())

    # the size cap ----------------------------------------------------------------------------
    def size_bytes(self) -> int:
        import sqlalchemy as sa

        with self._engine.connect() as conn:
            if self.sqlite:
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
                free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
                size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
                return int((pages - free) * size)
            return int(conn.execute(sa.text(f"SELECT pg_total_relation_size('{TABLE}')")).scalar_one())

    def enforce_cap(self) -> int:
        """Delete the oldest records until the store is under 80% of ``max_bytes``; returns how many went."""
        import sqlalchemy as sa

        size = self.size_bytes()
        if size <= self.max_bytes:
            return 0
        n = self.count()
        drop = max(1, int(n * (1 - 0.8 * self.max_bytes / size)))
        t = self._table
        with self._engine.begin() as conn:
            oldest = sa.select(t.c.answer_id).order_by(t.c.time).limit(drop).scalar_subquery()
            conn.execute(t.delete().where(t.c.answer_id.in_(oldest)))
        if self.sqlite:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA incremental_vacuum")
                conn.commit()
        return drop

    def file_bytes(self) -> int | None:
        """The SQLite file's size on disk (None for PostgreSQL)."""
        return self._path.stat().st_size if self.sqlite and self._path and self._path.exists() else None

    def close(self) -> None:
        self._engine.dispose()


def _large_cache(connection, _record) -> None:
    """64 MiB of page cache (SQLite's default is 2 MiB) for the writer's one connection: an answer id's index
    is random, so each insert reads a page of it, which past the cache is a read from the operating system."""
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA cache_size=-65536")
    finally:
        cursor.close()


def _auto_vacuum(path: Path) -> None:
    """A new SQLite file gives deleted pages back (incremental auto-vacuum is set before the first table)."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
        if not connection.execute("SELECT name FROM sqlite_master").fetchall():
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            connection.execute("VACUUM")


def _row(record: AnswerRecord) -> dict[str, Any]:
    return {"answer_id": record.answer_id, "model": str(record.model), "version": str(record.version),
            "variant": str(record.variant), "arm": str(record.arm), "time": float(record.time),
            "grp": record.group, "inputs": json.dumps(dict(record.inputs), sort_keys=True),
            "answer": json.dumps(_plain(record.answer)),
            "confidence": None if record.confidence is None else float(record.confidence),
            "latency_ms": None if record.latency_ms is None else float(record.latency_ms)}


# a recorded row as a tuple (monitoring.rows' request rows), in the order write_rows inserts it
ROW_COLUMNS = ("answer_id", "model", "version", "variant", "arm", "time", "grp", "inputs", "answer", "confidence",
               "latency_ms")
RECORD_COLUMNS = ("answer_id", "model", "version", "variant", "arm", "time", "group", "inputs", "answer",
                  "confidence", "latency_ms", "outcome", "outcome_time")


def records_frame(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Stored rows (JSON text) as a frame of Python values."""
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in RECORD_COLUMNS})
    frame = pd.DataFrame(rows).rename(columns={"grp": "group"})
    frame["inputs"] = frame["inputs"].map(json.loads)
    frame["answer"] = frame["answer"].map(json.loads)
    frame["outcome"] = frame["outcome"].map(lambda v: json.loads(v) if isinstance(v, str) else None)  # pandas 3: NaN
    return frame[list(RECORD_COLUMNS)]


REVIEW_TABLE = "answer_reviews"
REVIEW_COLUMNS = ("answer_id", "model", "version", "variant", "arm", "group", "answer", "decision",
                  "previous_outcome", "reason", "roles", "time", "audit_key")


def review_table(meta):
    """People's reviews of stored answers (:mod:`monitoring.review`): one row per review, kept when the size
    cap deletes the answer itself (a review is an accountability record, and small)."""
    import sqlalchemy as sa

    return sa.Table(
        REVIEW_TABLE, meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("answer_id", sa.String(32), nullable=False, index=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("grp", sa.String(200)),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("previous_outcome", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("roles", sa.String(200), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("audit_key", sa.String(200)),
    )


def existing_store(settings: Settings | None = None) -> RecordStore | None:
    """The home's record store if answers were ever recorded there, else None (and nothing is created): what a
    reader that must not write (the public page, a review of an unknown id) opens."""
    from civicml.sqlite import database_file

    url = default_store_url(settings)
    path = database_file(url)
    return RecordStore(url) if path is not None and path.is_file() else None


def open_store(url: str | None = None, settings: Settings | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES) -> RecordStore:
    """The record store at ``url``, else SQLite under the home (``monitoring/records.db``)."""
    return RecordStore(url or default_store_url(settings), max_bytes=max_bytes)


# -- the recorder --------------------------------------------------------------------------------

"""HTTP refusals (401, 403) on the model's audit trail: one record per caller, route, status and minute.

A flood of refused requests must not become a flood of registry writes (each audit
record is a registered-model tag): a refusal only adds one to an in-memory counter
keyed by (model, caller, route, status, minute), on the request's own thread, without
I/O. A background thread writes each *finished* minute's counters as one
``http-denied`` record (with the count and the first reason) every ``flush_seconds``;
:meth:`RefusalAudit.close` (server shutdown) writes what is left. At most
``MAX_KEYS`` distinct keys are held; beyond that, refusals count under the caller
``(others)``, so memory stays bounded whatever callers send.

Callers are named by what the server knows: the principal for a known token (also a
revoked or expired one), ``unknown-token`` for a token the access file does not list,
``anonymous`` without one. Tokens themselves are never recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter

log = logging.getLogger("civicml.serving")

MAX_KEYS = 1000
OTHERS = "(others)"


def _minute(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%MZ")


class RefusalAudit:
    def __init__(self, settings, flush_seconds: float = 10.0):
        self.settings = settings
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._why: dict[tuple, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, model: str, caller: str, route: str, status: int, why: str) -> None:
        key = (model, caller, route, int(status), _minute())
        with self._lock:
            if key not in self._counts and len(self._counts) >= MAX_KEYS:
                key = (model, OTHERS, route, int(status), key[4])
            self._counts[key] += 1
            self._why.setdefault(key, why[:300])
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="refusal-audit", daemon=True)
                self._thread.start()

    def pending(self) -> int:
        """Refusals counted and not yet written."""
        with self._lock:
            return sum(self._counts.values())

    def flush(self, everything: bool = False) -> int:
        """Write finished minutes' counters (``everything``: all of them) as audit records; how many written."""
        now = _minute()
        with self._lock:
            keys = [k for k in self._counts if everything or k[4] < now]
            taken = [(k, self._counts.pop(k), self._why.pop(k, "")) for k in keys]
        if not taken:
            return 0
        from registry import ModelStore, audit_quietly, audit_record as record

        store = ModelStore(self.settings)
        for (model, caller, route, status, minute), count, why in taken:
            audit_quietly(store, model, record({"who": caller, "roles": [], "auth": "http"}, "http-denied",
                                               route=route, status=status, minute=minute, count=count, why=why))
        return len(taken)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception as err:  # noqa: BLE001 - the counters stay for the next try
                log.warning("could not write refused requests to the audit trail: %s", err)

    def close(self) -> None:
        self._stop.set()
        try:
            self.flush(everything=True)
        except Exception as err:  # noqa: BLE001 - shutting down: say so, never hang
            log.warning("could not write refused requests to the audit trail: %s", err)

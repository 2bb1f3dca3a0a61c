"""The recorder serving is handed: what it keeps of each answer (a policy, a deque), and how what it kept
becomes masked rows of the record store (:mod:`monitoring.records`, shaped by :mod:`monitoring.rows`), in its
own thread or in a writer process (:mod:`monitoring.record_writer`).

Concurrency: ``record`` (and ``record_answers``, a request's rows as one tuple; ``record_request``, a request
as the bytes the server read and wrote, packed into one ``bytes`` by :mod:`monitoring.packing` and read back
in the writer by a ``reader`` serving provides) is called on serving's hot path. It does nothing expensive
there: the caller has checked the policy (a part of the answer id, so every replica samples the same ids); it
appends to a bounded deque and returns, waking no one. The recorder's thread takes what gathered every
``linger`` (0.5 s) and masks and writes it, a transaction a batch; ``recorder_for`` (what ``civicml serve``
uses) has it send each batch to a writer process instead, so that masking, JSON and SQL are not spent under the
server's GIL. The writer masks a batch's texts together (:meth:`RecordMasking.mask_many`). When the deque is
full a record is dropped and counted (``dropped``), never blocking an answer; ``flush`` waits for what was given
so far, ``close`` writes it all."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any, Mapping, Protocol, runtime_checkable

from civicml.settings import Settings
from monitoring.masking import RecordMasking
from monitoring.packing import RAW, RequestBuffer, rows_of, unpack_requests
from monitoring.records import DEFAULT_MAX_BYTES, AnswerRecord, RecordPolicy, RecordStore, open_store
from monitoring.rows import masked_rows, rows_in

log = logging.getLogger(__name__)


@runtime_checkable
class Recorder(Protocol):
    """What serving writes answered rows to: ``record`` takes an :class:`AnswerRecord` or a mapping with
    its fields, returns at once, and never raises for a record it does not keep."""

    def record(self, answer_record: Any) -> None: ...


class NoRecorder:
    """Recording off."""

    policy = RecordPolicy("off")

    def record(self, answer_record: Any) -> None:
        return None

    def wants(self, answer_id: str, model: str | None = None) -> bool:
        return False

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class Recording:
    """A :class:`Recorder` that masks and writes to a :class:`RecordStore` away from the hot path.

    ``record`` (a mapping or :class:`AnswerRecord`) and ``record_answers`` (a request's answers as one tuple,
    :func:`masked_rows`) only append to a deque: no lock, no thread woken. A
    thread of the recorder's own takes what gathered every ``linger`` seconds (0.5 s) and masks and writes it
    as one transaction, or with ``process=True`` (what ``civicml serve`` uses) sends it, pickled, to a writer
    process (:mod:`monitoring.record_writer`) that masks and writes, so that none of that CPU is spent under
    the server's GIL. Past ``queue_size`` waiting records a record is dropped and counted (``dropped``)."""

    def __init__(self, store: RecordStore, policy: RecordPolicy | str, masking: RecordMasking,
                 queue_size: int = 50_000, batch: int = 256, linger: float = 0.5, process: bool = False,
                 reader=None):
        self.store, self.policy, self.masking = store, RecordPolicy.parse(policy), masking
        self.reader = reader  # reads a request given as bytes (record_request): serving's, handed in by the top floor
        self.batch, self.queue_size = batch, queue_size
        # seconds between the thread's looks at the deque (flush and close do not wait). Each look takes the GIL
        # from the event loop, which then waits to take it back while the thread runs, or waits for a core: at
        # 50 ms, a server holding a recorder that kept nothing answered 4-12 us a request slower at c32
        # (per-thread CPU); at 0.5 s, as fast as one without (queue_size holds several looks' traffic).
        self.linger = linger
        self.dropped = 0  # records not kept because the deque was full
        self.written = 0
        self.failed = 0  # records lost because the store refused a batch (or the writer process was gone)
        self._pending: deque = deque()
        self._requests = RequestBuffer(queue_size)  # record_request's: requests as bytes, no object each
        self._flushes: list[threading.Event] = []
        self._wake, self._stop = threading.Event(), False
        self._lock = threading.Lock()
        self._writer, self._failed_sending = None, 0
        self._earlier = {"written": 0, "failed": 0}  # what writer processes that died had said they wrote
        self._restarted = 0.0  # when a writer process was last started again (time.monotonic)
        if process:
            self._writer = self._start_writer()
        self._thread = threading.Thread(target=self._run, name="civicml-recorder", daemon=True)
        self._thread.start()

    def wants(self, answer_id: str, model: str | None = None) -> bool:
        """Whether an answer with this id would be kept: the caller may skip shaping the others (the rows of
        one request share all but the id's last 8 hex digits, so one check decides a whole request)."""
        return self.policy.wants(answer_id)

    def record(self, answer_record: Any) -> None:
        answer_id = answer_record.answer_id if isinstance(answer_record, AnswerRecord) else \
            (answer_record.get("answer_id") if isinstance(answer_record, Mapping) else None)
        if self.policy.wants(str(answer_id)):
            self._put(answer_record)

    def record_answers(self, answers: tuple) -> None:
        """A request's answered rows at once (the tuple :func:`masked_rows` reads), the caller
        having asked :meth:`wants` of its first id: appended as it is, shaped later, off the hot path."""
        self._put(answers)

    def record_request(self, request: tuple) -> None:
        """A request's answered rows as the bytes the server read and wrote (``(model, version, variant, arm,
        first_id, rows, body, content_type, response, latency_ms, time)``), the caller having asked
        :meth:`wants`: its values appended to one flat buffer (:class:`monitoring.packing.RequestBuffer`: no
        object kept per request), marshalled by the recorder's thread and read back (:attr:`reader`) in the writer
        process. Only a recorder with a reader takes it (:meth:`reads_requests`); a request the buffer cannot take
        (an id of another length, a field of another type) is kept as a tuple, on the deque."""
        kept = self._requests.add(request)
        if kept is None:
            self._put((RAW, *request))
        elif not kept:
            with self._lock:
                self.dropped += 1

    def reads_requests(self) -> bool:
        return self.reader is not None

    def request_lane(self, model: str, version: str, variant: str, arm: str):
        """Serving's way to :meth:`record_request` for the answers of one (model, version, variant, arm), asked
        once for them: ``(keep, wants)``, ``keep(first_id, rows, body, content_type, response, confidence,
        latency_ms, time)`` (:meth:`monitoring.packing.RequestBuffer.lane`: one ``extend`` of a flat list,
        nothing else on the event loop) and ``wants(answer_id)`` to ask first, or None when every answer is kept
        (``all``)."""
        return (self._requests.lane(model, version, variant, arm),
                None if self.policy.mode == "all" else self.policy.wants)

    def _put(self, item: Any) -> None:
        if len(self._pending) >= self.queue_size:
            with self._lock:  # rare: only a full deque takes the lock
                self.dropped += 1
            return
        self._pending.append(item)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.linger)
            self._wake.clear()
            stop, flushes = self._stop, self._flushes[:]  # what was asked before draining: all of it is written
            del self._flushes[:len(flushes)]
            while self._pending:
                items = [self._pending.popleft() for _ in range(min(len(self._pending), self.batch))]
                self._hand_over(items)
            taken = self._requests.take()
            if taken is not None:
                chunks, metas, leftovers = taken
                if chunks:
                    self._hand_over_requests(chunks, metas)
                if leftovers:
                    self._hand_over(leftovers)
            if flushes and self._writer is not None:
                self._counts(self._writer.flush)
            for done in flushes:
                done.set()
            if stop:
                if self._writer is not None:
                    self._counts(self._writer.close)
                return

    def _start_writer(self):
        from monitoring.record_writer import WriterProcess

        return WriterProcess(self.store.url, self.store.max_bytes, self.masking, self.reader)

    def _revive_writer(self) -> bool:
        """A writer process that died (killed, out of memory) is started again, at most once a second (one
        that dies as it starts does not become a loop of starts): what it had been sent since its last count
        is lost, and counted as failed. True when a live writer is there."""
        if self._writer.alive():
            return True
        now = time.monotonic()
        if now - self._restarted < 1.0:
            return False
        self._restarted = now
        dead, counts = self._writer, self._writer.counts
        with contextlib.suppress(Exception):
            dead.close(timeout=1.0)
        with self._lock:
            self._earlier = {k: self._earlier[k] + counts[k] for k in self._earlier}
        log.warning("the answer recorder's writer process had exited (code %s): started again",
                    dead.returncode())
        try:
            self._writer = self._start_writer()
        except Exception:  # noqa: BLE001 - no new process (no memory, no interpreter): tried again later
            log.warning("the answer recorder's writer process could not be started again", exc_info=True)
            return False
        return True

    def _hand_over(self, items: list) -> None:
        if self._writer is None:
            self._write(items)
            return
        try:
            if not self._revive_writer():
                raise RuntimeError("no writer process")
            self._writer.send(items)
        except Exception:  # noqa: BLE001 - unpicklable, or the writer is gone: counted, never raised
            with self._lock:
                self._failed_sending += rows_in(items)
                self.failed += rows_in(items)

    def _hand_over_requests(self, chunks: list[bytes], metas: list) -> None:
        """Requests packed as bytes (:meth:`record_request`) to the writer process as one frame, or read back
        and written here without one."""
        if self._writer is None:
            self._write(unpack_requests(chunks, metas))
            return
        try:
            if not self._revive_writer():
                raise RuntimeError("no writer process")
            self._writer.send_requests(chunks, metas)
        except Exception:  # noqa: BLE001 - the writer is gone: counted, never raised
            rows = rows_of(chunks)
            with self._lock:
                self._failed_sending += rows
                self.failed += rows

    def _counts(self, ask) -> None:
        try:
            counts = ask()
        except Exception:  # noqa: BLE001 - the writer is gone: its last counts stand
            counts = self._writer.counts
        with self._lock:
            self.written = self._earlier["written"] + counts["written"]
            self.failed = self._failed_sending + self._earlier["failed"] + counts["failed"]

    def _write(self, items: list) -> None:
        rows, failed = masked_rows(items, self.masking, self.reader)
        if failed:
            with self._lock:
                self.failed += failed
        if not rows:
            return
        try:
            self.store.write_rows(rows)
            with self._lock:
                self.written += len(rows)
        except Exception:  # noqa: BLE001 - a store that is down must not stop answers; counted
            with self._lock:
                self.failed += len(rows)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every record given so far is written."""
        if not self._thread.is_alive():
            return
        done = threading.Event()
        self._flushes.append(done)
        self._wake.set()
        done.wait(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self._stop = True
            self._wake.set()
            self._thread.join(60)

    def stats(self) -> dict[str, Any]:
        """Counts so far; with a writer process, ``written`` and its ``failed`` as of the last flush (or close)."""
        return {"policy": str(self.policy), "written": self.written,
                "dropped": self.dropped + self._requests.refused, "failed": self.failed}


def recorder_for(use_case, policy: str | RecordPolicy = "off", url: str | None = None,
                 settings: Settings | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 group: str | None = None, reader=None) -> "Recording | NoRecorder":
    """The recorder ``civicml serve --record POLICY`` hands to serving: :class:`NoRecorder` when off.
    ``reader``: serving's reader of a request given as bytes (:meth:`Recording.record_request`), handed in by
    the top floor (monitoring does not import serving)."""
    policy = RecordPolicy.parse(policy)
    if policy.mode == "off":
        return NoRecorder()
    masking = RecordMasking.for_use_case(use_case, group=group)
    return Recording(open_store(url, settings, max_bytes), policy, masking, process=True, reader=reader)

"""Requests kept as the bytes the server read and wrote: what serving's event loop hands the recorder on the hot
path (:meth:`RequestBuffer.lane`, :meth:`monitoring.Recording.record_request`), and how the recorder's writer
process reads them back.

A request is the body the server read, the body it wrote (for a one-row classifier's answer, only what the
writer reads of it: the label and the confidence, values the server holds already), and what only the server
knows (model, version, variant, arm, first answer id, rows, latency, time). On the event loop its values are
appended to one flat list by one ``extend``: no packing, no encoding, no lock, and no object made per request
that the garbage collector would follow until the recorder's next look. Every ``linger`` the recorder's thread
takes what gathered and turns each group of :data:`GROUP` requests into one ``bytes`` with :mod:`marshal` (in C: about
0.08 us a request, against 0.25 for a ``struct`` head a request packed in a Python loop), which the writer
process's pipe takes as it is (``os.writev``) and :func:`unpack_requests` reads back. Both ends are the same
interpreter (the writer is the server's child), which is all marshal's format asks.

Measured with ``bench/bench_recording_instructions.py`` (callgrind on a live server: 2,000 1-row requests of
the 311 router one at a time, each thread's instructions against ``--record off``; BENCHMARKS.md, issue 24):
packing each request on the event loop (a ``struct`` head and two concatenations) added 16,500 instructions a
request to the event loop's thread and 3,900 to the others; this way adds 4,800 and 3,700 (the recorder
thread's, at one request at a time, is mostly its fixed cost a look, shared by thousands at c32).

The model, version, variant and arm (a few per server) are a code, whose meaning travels with each frame
(``metas``); the content type, which a caller writes, travels with its request.
"""

from __future__ import annotations

import marshal
import threading

RAW = "civicml.raw-request"  # the first field of a request given as its bytes (monitoring.recorder reads it)
# values a request in the buffer: code, first id, rows, latency, time, body, content type, response (the body
# written, or a one-row answer's label), confidence (that label's; None beside a body)
FIELDS = 9
GROUP = 512  # requests a marshalled chunk: ~330 kB of the 311 router's, not one allocation for all of them
_VERSION = 4  # marshal's format: strings shared by many requests (the content type) are written once a chunk


class RequestBuffer:
    """Requests appended by serving's event loop and taken by the recorder's thread (:meth:`take`), which
    marshals them in groups for the writer process's pipe. On the event loop a request is :data:`FIELDS` values
    added to one flat list by one ``extend`` (a single call under the GIL: the thread never sees half a
    request; no lock on the hot path)."""

    def __init__(self, most_requests: int):
        self.most_requests = most_requests  # past this many waiting, a request is refused (the caller counts it)
        self.refused = 0  # refused by a lane (:meth:`lane`): its caller has no count of its own
        # FIELDS values a request, one after another: no object made per request that the garbage collector
        # follows (a tuple a request kept for the recorder's next look doubled the young collections at c32)
        self._items: list = []
        self._codes: dict[tuple, int] = {}
        self._metas: list[tuple] = []  # code -> (model, version, variant, arm)
        self._lock = threading.Lock()  # a new meta code only

    def lane(self, model: str, version: str, variant: str, arm: str):
        """What serving calls once a request for the answers of one (model, version, variant, arm):
        ``keep(first_id, rows, body, content_type, response, confidence, latency_ms, time) -> bool`` (False: the
        buffer is full, the request is refused and counted in :attr:`refused`): ``response`` the body written
        (bytes, ``confidence`` None) or, for one row, the answer's label (a str, ``confidence`` its float: the
        writer then reads no response; 420 bytes fewer a 311 request kept, piped and parsed). The caller vouches
        for the types (a 32-digit id, an int, bytes, a str or None, bytes or a str, a float or None, two floats);
        a request marshal cannot write is handed back by :meth:`take`, never lost silently."""
        code = self._code((model, version, variant, arm))
        items, most, extend = self._items, self.most_requests * FIELDS, self._items.extend

        def keep(first, rows, body, content_type, response, confidence, latency_ms, when) -> bool:
            if len(items) >= most:
                self.refused += 1  # the event loop's own count (one thread: no lock)
                return False
            extend((code, first, rows, latency_ms, when, body, content_type, response, confidence))  # atomic
            return True

        return keep

    def add(self, request: tuple) -> bool | None:
        """Append ``(model, version, variant, arm, first_id, rows, body, content_type, response, latency_ms,
        time)``: True when kept, False when the buffer is full, None when it cannot be kept this way (an id that
        is not 32 characters, a field of another type): the caller keeps it another way."""
        if len(self._items) >= self.most_requests * FIELDS:
            return False
        model, version, variant, arm, first, rows, body, content_type, response, latency_ms, when = request
        if not (isinstance(first, str) and len(first) == 32 and type(rows) is int and isinstance(body, bytes)
                and (content_type is None or isinstance(content_type, str)) and isinstance(response, bytes)
                and isinstance(latency_ms, (int, float)) and isinstance(when, (int, float))):
            return None
        try:
            code = self._codes.get((model, version, variant, arm))
            if code is None:
                code = self._code((model, version, variant, arm))
        except (TypeError, ValueError):
            return None
        self._items.extend((code, first, rows, latency_ms, when, body, content_type, response, None))
        return True

    def _code(self, key: tuple) -> int:
        with self._lock:
            code = self._codes.get(key)
            if code is None:
                if len(self._metas) > 0xFFFF:
                    raise ValueError("more than 65,536 model versions recorded by one server")
                self._metas.append(key)
                code = self._codes[key] = len(self._metas) - 1
            return code

    def take(self) -> tuple[list[bytes], list[tuple], list[tuple]] | None:
        """What gathered, taken off the buffer: the requests marshalled, :data:`GROUP` a chunk (the writer
        process's pipe takes them as they are, ``os.writev``), the metas they name, and any request marshal
        could not write, as a ``(RAW, ...)`` tuple (:func:`unpack_requests`' shape); None when nothing
        gathered."""
        items = self._items
        count = len(items)  # whole requests: each was appended by one call
        if not count:
            return None
        taken = items[:count]
        del items[:count]  # what the event loop appended meanwhile stays, after these
        metas, chunks, leftovers = list(self._metas), [], []
        step = GROUP * FIELDS
        for start in range(0, count, step):
            group = taken[start:start + step]
            try:
                chunks.append(marshal.dumps(group, _VERSION))
            except ValueError:  # an object marshal does not write (a caller's subclass): those few apart
                kept = []
                for at in range(0, len(group), FIELDS):
                    item = group[at:at + FIELDS]
                    try:
                        marshal.dumps(item, _VERSION)
                        kept += item
                    except ValueError:
                        leftovers.append(_raw(item, metas))
                if kept:
                    chunks.append(marshal.dumps(kept, _VERSION))
        return chunks, metas, leftovers


def _raw(item, metas: list[tuple]) -> tuple:
    """A request of the buffer as ``(RAW, model, version, variant, arm, first_id, rows, body, content_type,
    response, latency_ms, time)``, and ``confidence`` after them where ``response`` is a one-row answer's label."""
    code, first, rows, latency_ms, when, body, content_type, response, confidence = item
    if confidence is None:
        return (RAW, *metas[code], first, rows, body, content_type, response, latency_ms, when)
    return (RAW, *metas[code], first, rows, body, content_type, response, latency_ms, when, confidence)


def rows_of(chunks: list[bytes]) -> int:
    """How many answered rows marshalled requests hold (counted where they could not be handed over)."""
    return sum(sum(marshal.loads(chunk)[2::FIELDS]) for chunk in chunks)


def unpack_requests(chunks: list[bytes], metas: list[tuple]) -> list[tuple]:
    """The requests a buffer held (:meth:`RequestBuffer.take`'s chunks), each as ``monitoring.rows.masked_rows``
    reads a request given as its bytes: ``(RAW, model, version, variant, arm, first_id, rows, body,
    content_type, response, latency_ms, time)``, with ``confidence`` after them where ``response`` is a label
    (:meth:`RequestBuffer.lane`)."""
    out = []
    for chunk in chunks:
        values = marshal.loads(chunk)
        out += [_raw(values[at:at + FIELDS], metas) for at in range(0, len(values), FIELDS)]
    return out

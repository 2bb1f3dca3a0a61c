"""Requests kept as bytes: what :meth:`monitoring.Recording.record_request` appends on serving's
hot path, and how the recorder's writer reads them back.

A request given as its bytes (the body the server read, the body it wrote, and what only the server knows:
model, version, variant, arm, first answer id, rows, latency, time) is appended to one ``bytearray`` as a fixed
head (:data:`HEAD`) and the three byte strings, as one ``bytes`` on a deque. Every ``linger`` the recorder's
thread hands what gathered to the writer process's pipe as it is (``os.writev``, after a small pickled head):
no object of many fields per request to keep alive, to walk in the garbage collector's young generation or to
pickle, and no copy of a whole batch (one was a fresh allocation each time, whose pages faulted in: 9% of the
thread's CPU under ``perf``). The
request as a tuple of a dozen fields, pickled by the recorder's thread, cost the server's process 2.3-2.9 us a
request at c32 (per-thread CPU from ``/proc``; the data plane's hook besides); this is one ``struct.pack``,
one concatenation and one append (py-spy at c32: the hook and the thread together 7.1% of the server's
samples against 10.3%).

The model, version, variant and arm (a few per server) are a code of two bytes, whose meaning travels with
each frame (``metas``); the content type, which a caller writes, travels with its request.
"""

from __future__ import annotations

import struct
import threading
from collections import deque

# meta code, first answer id (32 ASCII hex digits), rows, latency ms, time, then the byte lengths of the request
# body, its content type and the response body, which follow the head in that order
HEAD = struct.Struct("<H32sIddIHI")
RAW = "civicml.raw-request"  # the first field of a request given as its bytes (monitoring.recorder reads it)


class RequestBuffer:
    """Requests as bytes, appended by serving's event loop and taken by the recorder's thread (:meth:`take`).
    Each request is one ``bytes`` on a deque (``append`` and ``popleft`` are atomic: no lock on the hot path)."""

    def __init__(self, most_requests: int):
        self.most_requests = most_requests  # past this many waiting, a request is refused (the caller counts it)
        self._chunks: deque[bytes] = deque()
        self._codes: dict[tuple, int] = {}
        self._metas: list[tuple] = []  # code -> (model, version, variant, arm)
        self._lock = threading.Lock()  # a new meta code only

    def add(self, request: tuple) -> bool | None:
        """Append ``(model, version, variant, arm, first_id, rows, body, content_type, response, latency_ms,
        time)``: True when kept, False when the buffer is full, None when it cannot be packed (an id that is
        not 32 ASCII characters, a meta code past two bytes, a field of another type): the caller keeps it
        another way."""
        chunks = self._chunks
        if len(chunks) >= self.most_requests:
            return False
        model, version, variant, arm, first, rows, body, content_type, response, latency_ms, when = request
        code = self._codes.get((model, version, variant, arm))
        try:
            if code is None:
                code = self._code((model, version, variant, arm))
            ctype = b"" if content_type is None else content_type.encode("latin-1")
            if len(first) != 32:
                return None
            chunks.append(HEAD.pack(code, first.encode("ascii"), rows, latency_ms, when, len(body), len(ctype),
                                    len(response)) + body + ctype + response)
        except (struct.error, TypeError, ValueError, UnicodeError, AttributeError):
            return None
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

    def take(self) -> tuple[list[bytes], list[tuple]] | None:
        """What gathered (each request's bytes, and the metas they name), taken off the deque; None when nothing
        did. The requests are not joined here: the writer process's pipe takes them as they are
        (``os.writev``), with no copy of them all in this process."""
        chunks, popleft = self._chunks, self._chunks.popleft
        count = len(chunks)
        if not count:
            return None
        return [popleft() for _ in range(count)], list(self._metas)


def rows_of(data: bytes) -> int:
    """How many answered rows packed requests hold (counted where they could not be handed over)."""
    rows, at, end = 0, 0, len(data)
    while at < end:
        _, _, n, _, _, body_size, ctype_size, response_size = HEAD.unpack_from(data, at)
        rows += n
        at += HEAD.size + body_size + ctype_size + response_size
    return rows


def unpack_requests(data: bytes, metas: list[tuple]) -> list[tuple]:
    """The requests a buffer held, each as ``monitoring.rows.masked_rows`` reads a request given as its
    bytes: ``(RAW, model, version, variant, arm, first_id, rows, body, content_type, response, latency_ms,
    time)``."""
    items, at, end = [], 0, len(data)
    unpack_from, size = HEAD.unpack_from, HEAD.size
    while at < end:
        code, first, rows, latency_ms, when, body_size, ctype_size, response_size = unpack_from(data, at)
        at += size
        body = data[at:at + body_size]
        at += body_size
        ctype = data[at:at + ctype_size].decode("latin-1") if ctype_size else None
        at += ctype_size
        response = data[at:at + response_size]
        at += response_size
        model, version, variant, arm = metas[code]
        items.append((RAW, model, version, variant, arm, first.decode("ascii"), rows, body, ctype, response,
                      latency_ms, when))
    return items

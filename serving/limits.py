"""What one request may be, and reading its body within that.

A body is limited in bytes while it is read (413 before any parsing); a large one is decoded in a worker
thread so that parsing never stalls the event loop; a body its codec cannot read is a 400. The admission
limits (cost, deadline, slice) are :class:`civicml.settings.ServingLimits`, read from the environment
unless a server says otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from civicml.errors import CivicMLError, InvalidInput
from civicml.settings import ServingLimits
from serving.dataplane import TooLarge

log = logging.getLogger("civicml.serving")

MAX_BODY_BYTES = 16 * 1024 * 1024
OFF_LOOP_BYTES = 256 * 1024  # bodies at least this large are parsed in a worker thread, not on the event loop


@dataclass
class Limits:
    """What one request may be: body bytes (413 while read), and admission control (None: from the
    environment, :class:`civicml.settings.ServingLimits`): its cost (413), the seconds it may wait for the
    model (503 with ``Retry-After``), and the cost of one slice of a large request."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_cost: int | None = None
    deadline_seconds: float | None = None
    slice_cost: int | None = None

    def serving(self) -> ServingLimits:
        base = ServingLimits.from_env()
        return ServingLimits(max_cost=self.max_cost if self.max_cost is not None else base.max_cost,
                             deadline_seconds=(self.deadline_seconds if self.deadline_seconds is not None
                                               else base.deadline_seconds),
                             slice_cost=self.slice_cost if self.slice_cost is not None else base.slice_cost)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (before any parsing)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidInput("invalid Content-Length header") from None
        if length > limit:
            raise TooLarge(f"the request body is {length} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    receive = request.receive  # ASGI messages as they come (what Request.stream() reads, without its generator)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is over the limit of {limit} bytes")
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


async def decode_body(decode, body: bytes, *args):
    """A codec's decode of a request body: in a worker thread for large bodies, so that parsing never stalls
    the event loop (:func:`decoded_now` for the others)."""
    if len(body) >= OFF_LOOP_BYTES:
        return await run_in_threadpool(decoded_now, decode, body, *args)
    return decoded_now(decode, body, *args)


def decoded_now(decode, body: bytes, *args):
    """A codec's decode of a request body, here and now. A codec reads untrusted bytes: where it fails on them
    with a Python error instead of its own (a JSON value of a type it did not expect), the body is malformed:
    :class:`InvalidInput` (400)."""
    try:
        return decode(body, *args)
    except CivicMLError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as err:
        log.info("a codec failed on a request body: %s: %s", type(err).__name__, err)
        raise InvalidInput(f"malformed request body: {type(err).__name__}: {err}") from None


__all__ = ["Limits", "MAX_BODY_BYTES", "OFF_LOOP_BYTES", "decode_body", "decoded_now", "read_body"]

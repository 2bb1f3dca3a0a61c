"""The recorder's writer process: masking, JSON and SQL away from the server's interpreter.

A server's :class:`monitoring.Recording` (``process=True``, what ``civicml serve --record`` builds) keeps
its answers on a plain deque and, every ``linger`` seconds, sends what gathered to this process as one
pickled list (a frame: 4 bytes of length, then the pickle) on the process's standard input. Here each
answer is masked (:class:`monitoring.RecordMasking`) and written (:class:`monitoring.RecordStore`), so that none of that CPU is spent under the server's GIL.

Frames: ``("config", url, max_bytes, masking, reader)`` first (``reader``: serving's reader of requests
given as bytes, pickled by reference), then ``("answers", [item, ...])``, ``("requests", metas, sizes)``
followed by chunks of those sizes, requests marshalled as :mod:`monitoring.packing` writes them, and
``("flush",)``, which is answered on standard output with one JSON line of counts (``{"written": n,
"failed": m}``, since the start); the end of standard input (or ``("stop",)``) writes what came, answers
the counts once more and exits.

An item is either a mapping or :class:`AnswerRecord` (``Recording.record``) or a request's answers as one
tuple (``Recording.record_answers``, what serving's data plane passes, no dict per row on the hot path), read
by :func:`monitoring.rows.masked_rows`. Masked rows gather for :data:`GATHER` seconds into one transaction.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

_LENGTH = struct.Struct("<I")
NICENESS = 10  # the writer's scheduling priority below the server's (os.nice): it catches up when answers pause


def write_frame(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def write_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` to ``fd`` in order, all of them, a system call for up to 1,024 of them
    (``os.writev``); a partial write goes on from where it stopped."""
    for start in range(0, len(chunks), _IOV_MAX):
        group, at = chunks[start:start + _IOV_MAX], 0  # at: the first chunk not wholly written
        while at < len(group):
            written = os.writev(fd, group[at:] if at else group)
            if at == 0 and written == sum(map(len, group)):  # the usual case: all of it at once
                break
            while at < len(group) and written >= len(group[at]):
                written -= len(group[at])
                at += 1
            if written:  # part of the chunk at ``at``: the rest of it goes next
                group[at] = memoryview(group[at])[written:]


_IOV_MAX = 1024
# The pipe to the writer process holds 1 MiB (Linux's default 64 KiB held a fifth of a batch of c32's requests
# at 10,000 a second: the recorder's thread waited, and was woken, several times a batch)
_PIPE_BYTES = 1 << 20


def read_frame(fd: int) -> Any:
    """The next frame's message from a file descriptor, read exactly (no read-ahead: ``select`` on ``fd`` then
    says whether another frame is waiting), or None at the end of the stream."""
    head = _read_exactly(fd, _LENGTH.size)
    if head is None:
        return None
    data = _read_exactly(fd, _LENGTH.unpack(head)[0])
    return None if data is None else pickle.loads(data)


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class WriterProcess:
    """The parent's end: starts ``python -m monitoring.record_writer`` and talks to it in frames."""

    def __init__(self, url: str, max_bytes: int, masking, reader=None):
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self._process = subprocess.Popen([sys.executable, "-m", "monitoring.record_writer"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env, close_fds=True)
        self._lock = threading.Lock()  # one conversation at a time (the recorder's thread; close)
        with contextlib.suppress(OSError, AttributeError, ImportError):  # Linux only; a smaller pipe waits more
            import fcntl

            fcntl.fcntl(self._process.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self.counts = {"written": 0, "failed": 0}
        write_frame(self._process.stdin, ("config", url, max_bytes, masking, reader))

    def alive(self) -> bool:
        return self._process.poll() is None

    def returncode(self) -> int | None:
        return self._process.poll()

    @property
    def pid(self) -> int:
        return self._process.pid

    def send(self, items: list) -> None:
        """Hand a batch over (raises when it cannot be pickled or the process is gone)."""
        with self._lock:
            write_frame(self._process.stdin, ("answers", items))

    def send_requests(self, chunks: list[bytes], metas: list) -> None:
        """Hand over requests marshalled in chunks (:class:`monitoring.packing.RequestBuffer`): a frame that says
        the chunks' sizes, then their bytes as they are, written from the list (no copy of them all here)."""
        with self._lock:
            write_frame(self._process.stdin, ("requests", metas, [len(c) for c in chunks]))
            write_all(self._process.stdin.fileno(), chunks)

    def flush(self) -> dict[str, int]:
        """Wait until everything sent is written; the counts since the start."""
        with self._lock:
            write_frame(self._process.stdin, ("flush",))
            self._read_counts()
        return self.counts

    def close(self, timeout: float = 60.0) -> dict[str, int]:
        with self._lock:
            try:
                self._process.stdin.close()  # the end of its input: it writes what came, and says its counts
            except OSError:
                pass
            self._read_counts()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process.stdout.close()
        return self.counts

    def _read_counts(self) -> None:
        line = self._process.stdout.readline()
        if line:
            self.counts = json.loads(line)


def main() -> int:
    """The child: masks each frame of answers as it comes, and writes what gathered in one transaction
    :data:`GATHER` seconds after the first of them came (or at once on a flush, the end, or
    :data:`MOST` rows): one transaction every two seconds or so, whatever the traffic."""
    from monitoring.records import RecordStore

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then closes this input
    with contextlib.suppress(OSError):  # answers first: the writer takes what CPU the server leaves
        os.nice(NICENESS)
    fd, sink = sys.stdin.fileno(), sys.stdout
    config = read_frame(fd)
    if not config or config[0] != "config":
        return 2
    _, url, max_bytes, masking, reader = config
    writer = _Writer(RecordStore(url, max_bytes=max_bytes, keep_open=True), masking, reader)
    # No collection while a batch is read and masked: the rows gathering for a transaction (up to MOST) are
    # young objects that every automatic collection walked again, 1.8 us a record of 14 (measured). What the
    # process made before (its imports, the store) is frozen out of collections; :meth:`_Writer.write`
    # collects what is left once a transaction, in case anything made a cycle.
    gc.disable()
    gc.freeze()
    while True:
        wait = None if not writer.rows else max(0.0, writer.due - time.monotonic())
        if not select.select([fd], [], [], wait)[0]:
            writer.write()  # gathered long enough
            continue
        message = read_frame(fd)
        if message is None or message[0] == "stop":
            break
        if message[0] == "flush":
            writer.write()
            sink.write(json.dumps(writer.counts) + "\n")
            sink.flush()
            continue
        if message[0] == "requests":
            from monitoring.packing import unpack_requests

            chunks = [_read_exactly(fd, size) for size in message[2]]
            if None in chunks:
                break
            writer.add(unpack_requests(chunks, message[1]))
            continue
        writer.add(message[1])
    writer.write()
    sink.write(json.dumps(writer.counts) + "\n")
    sink.flush()
    writer.store.close()
    return 0


# Seconds the writer process gathers rows into one transaction, and the most it gathers. When answer ids
# were random (uuid4), each insert landed on a random page of the id's index and a transaction wrote each
# page it touched once: at 300,000 stored answers an insert cost 14.5 us in transactions of 2,500 rows and
# 6.4 us in transactions of 20,000, so the writer gathered 2 s. Ids are now time-ordered (UUIDv7:
# serving.inference.answer_ids) and inserts append to the index: the writer's CPU a record is the same
# gathering 0.25 s (10.4 us) as 2 s (10.2 us), and a smaller batch is less memory walked beside the server.
# A record reaches the store at most GATHER seconds after the recorder's thread sent it (a flush, and the end,
# write at once).
GATHER = 0.5
MOST = 5_000


class _Writer:
    def __init__(self, store, masking, reader=None):
        self.store, self.masking, self.reader = store, masking, reader
        self.rows: list[dict] = []
        self.due = 0.0
        self.counts = {"written": 0, "failed": 0}

    def add(self, items: list) -> None:
        from monitoring.rows import masked_rows

        if not self.rows:
            self.due = time.monotonic() + GATHER
        rows, failed = masked_rows(items, self.masking, self.reader)
        self.rows += rows
        self.counts["failed"] += failed
        if len(self.rows) >= MOST:
            self.write()

    def write(self) -> None:
        rows, self.rows = self.rows, []
        if not rows:
            return
        try:
            self.store.write_rows(rows)
            self.counts["written"] += len(rows)
        except Exception:  # noqa: BLE001 - a store that is down must not stop answers; counted
            self.counts["failed"] += len(rows)
        del rows
        if not gc.isenabled():
            gc.collect()


if __name__ == "__main__":
    sys.exit(main())

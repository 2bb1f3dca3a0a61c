"""The recorder's writer process: masking, JSON and SQL away from the server's interpreter.

A server's :class:`monitoring.Recording` (``process=True``, what ``civicml serve --record`` builds) keeps
its answers on a plain deque and, every ``linger`` seconds, sends what gathered to this process as one
pickled list (a frame: 4 bytes of length, then the pickle) on the process's standard input. Here each
answer is masked (:class:`monitoring.RecordMasking`) and written (:class:`monitoring.RecordStore`), a
transaction per frame, so that none of that CPU is spent under the server's GIL.

Frames: ``("config", url, max_bytes, masking)`` first, then ``("answers", [item, ...])`` and
``("flush",)``, which is answered on standard output with one JSON line of counts (``{"written": n,
"failed": m}``, since the start); the end of standard input (or ``("stop",)``) writes what came, answers
the counts once more and exits.

An item is either a mapping or :class:`AnswerRecord` (``Recording.record``) or a request's answers as one
tuple (``Recording.record_answers``, what serving's data plane passes, no dict per row on the hot path)::

    (model, version, variant, arm, answer_ids, input_columns, answers, confidences, latency_ms, time)

``input_columns``: column -> one value per row (None: the rows are not recorded, e.g. a tensor).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

_LENGTH = struct.Struct("<I")


def request_records(item: tuple) -> list[dict[str, Any]]:
    """A request's answers (the tuple above) as one mapping per row, with the fields of ``AnswerRecord``."""
    model, version, variant, arm, ids, columns, answers, confidences, latency_ms, time = item
    out = []
    for i, answer_id in enumerate(ids):
        out.append({"answer_id": answer_id, "model": model, "version": version, "variant": variant, "arm": arm,
                    "inputs": {} if columns is None else {name: values[i] for name, values in columns.items()},
                    "answer": answers[i] if i < len(answers) else None,
                    "confidence": confidences[i] if confidences is not None and i < len(confidences) else None,
                    "latency_ms": latency_ms, "time": time})
    return out


def write_frame(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: BinaryIO) -> Any:
    """The next frame's message, or None at the end of the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    size = _LENGTH.unpack(head)[0]
    data = stream.read(size)
    return pickle.loads(data) if len(data) == size else None


class WriterProcess:
    """The parent's end: starts ``python -m monitoring.record_writer`` and talks to it in frames."""

    def __init__(self, url: str, max_bytes: int, masking):
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self._process = subprocess.Popen([sys.executable, "-m", "monitoring.record_writer"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env, close_fds=True)
        self._lock = threading.Lock()  # one conversation at a time (the recorder's thread; close)
        self.counts = {"written": 0, "failed": 0}
        write_frame(self._process.stdin, ("config", url, max_bytes, masking))

    def alive(self) -> bool:
        return self._process.poll() is None

    def send(self, items: list) -> None:
        """Hand a batch over (raises when it cannot be pickled or the process is gone)."""
        with self._lock:
            write_frame(self._process.stdin, ("answers", items))

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
    """The child: masks and writes each frame of answers until its input ends."""
    from dataclasses import replace

    from monitoring.records import AnswerRecord, RecordStore

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then closes this input
    source, sink = sys.stdin.buffer, sys.stdout
    config = read_frame(source)
    if not config or config[0] != "config":
        return 2
    _, url, max_bytes, masking = config
    store = RecordStore(url, max_bytes=max_bytes)
    counts = {"written": 0, "failed": 0}
    while True:
        message = read_frame(source)
        if message is None or message[0] == "stop":
            break
        if message[0] == "flush":
            sink.write(json.dumps(counts) + "\n")
            sink.flush()
            continue
        records = []
        for item in message[1]:
            try:
                for one in (request_records(item) if isinstance(item, tuple) else [item]):
                    record = AnswerRecord.of(one)
                    inputs, group = masking.mask(record.inputs)
                    records.append(replace(record, inputs=inputs, group=group))
            except Exception:  # noqa: BLE001 - a malformed record is counted, never raised into serving
                counts["failed"] += 1
        try:
            store.write(records)
            counts["written"] += len(records)
        except Exception:  # noqa: BLE001 - a store that is down must not stop answers; counted
            counts["failed"] += len(records)
    sink.write(json.dumps(counts) + "\n")
    sink.flush()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

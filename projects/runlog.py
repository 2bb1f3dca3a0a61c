"""Where a training writes its run's parameters, metrics and tags.

``RunLog`` writes each call straight to the tracking store. ``BackgroundRunLog``
queues the calls and writes them from one background thread, merging whatever
waits for the same run into one ``log_batch``: a tuner that runs many short
trials keeps that bookkeeping off each trial's critical path, and a neural net
that reports every epoch costs one write per drain instead of one per epoch.

Run creation and ending, artifacts and models are not queued: they stay on
the caller's thread. What is queued may land after the run ended, which MLflow
allows. ``flush()`` waits until the queue is written and raises the first error
a write met.

``hold()`` and ``release()`` say when writing is welcome: a tuning worker holds
the writes while it does its own bookkeeping between two fits and releases them
while a model trains, so that the two never take turns on the interpreter or
the store. ``flush()`` and ``close()`` write whatever is held.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping

import mlflow
from mlflow.entities import Metric, Param, RunTag


@dataclass
class _Pending:
    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class RunLog:
    """Writes at once, one ``log_batch`` per call."""

    def __init__(self, tracking_uri: str | None = None):
        self._tracking_uri = tracking_uri

    @property
    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self._tracking_uri)

    def log(self, run_id: str, *, metrics: Mapping[str, float] | None = None, step: int = 0,
            params: Mapping[str, object] | None = None, tags: Mapping[str, object] | None = None) -> None:
        now = int(time.time() * 1000)
        pending = _Pending([Metric(k, float(v), now, int(step)) for k, v in (metrics or {}).items()],
                           {k: str(v) for k, v in (params or {}).items()},
                           {k: str(v) for k, v in (tags or {}).items()})
        self._submit(run_id, pending)

    def _submit(self, run_id: str, pending: _Pending) -> None:
        _write(self.client, run_id, pending)

    def hold(self) -> None:
        """Keep what is logged from now on queued until ``release()`` (nothing is queued here)."""

    def release(self) -> None:
        """Write what is queued, and what comes next, as it comes."""

    def flush(self) -> None:
        """Wait until everything logged so far is stored (nothing to wait for here)."""

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundRunLog(RunLog):
    """Writes from one background thread; what waits for a run goes out as one batch."""

    def __init__(self, tracking_uri: str | None = None):
        super().__init__(tracking_uri)
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._go = threading.Event()
        self._go.set()

    def _submit(self, run_id: str, pending: _Pending) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="civicml-runlog", daemon=True)
                self._thread.start()
        self._queue.put((run_id, pending))

    def hold(self) -> None:
        self._go.clear()

    def release(self) -> None:
        self._go.set()

    def _drain(self) -> None:
        client = self.client
        while True:
            first = self._queue.get()
            self._go.wait()
            items = [first]
            while True:  # take whatever else is waiting, so that one run's items go out together
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in items)
            merged: dict[str, _Pending] = {}
            for item in items:
                if item is None:
                    continue
                run_id, pending = item
                into = merged.setdefault(run_id, _Pending())
                into.metrics.extend(pending.metrics)
                into.params.update(pending.params)
                into.tags.update(pending.tags)
            for run_id, pending in merged.items():
                try:
                    _write(client, run_id, pending)
                except Exception as err:  # kept for flush(); the other runs' writes go on
                    self._error = self._error or err
            for _ in items:
                self._queue.task_done()
            if stop:
                return

    def flush(self) -> None:
        self.release()
        self._queue.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None and thread.is_alive():
            self.release()
            self._queue.put(None)
            thread.join()
        self.flush()


def _write(client: mlflow.MlflowClient, run_id: str, pending: _Pending) -> None:
    if pending.metrics or pending.params or pending.tags:
        client.log_batch(run_id, metrics=pending.metrics,
                         params=[Param(k, v) for k, v in pending.params.items()],
                         tags=[RunTag(k, v) for k, v in pending.tags.items()])

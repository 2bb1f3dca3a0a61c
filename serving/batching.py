"""Adaptive batching: concurrent requests merged into one predict call, each caller gets its own rows.

:class:`BatchingRuntime` wraps any :class:`~serving.runtime.Runtime`. One worker thread takes the
first waiting request, then every request already queued (up to ``max_batch`` rows), waits at most
``max_wait_ms`` for more while the batch is short, runs the inner runtime once and hands each caller
the slice of the output that belongs to its rows. Under no load a request runs alone at once; under
load the batch grows by itself to what arrived while the previous batch ran.

Because only the worker thread calls the inner runtime, a model that is not thread safe (a Paddle
predictor) is safe behind it too.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np
import pandas as pd

from serving.runtime import Answer, Runtime, WrappedRuntime  # noqa: F401  (Answer: re-exported)

log = logging.getLogger("civicml.serving")

_STOP = object()


def rows_of(data: Any) -> int:
    if isinstance(data, Columns):
        return data.rows
    if isinstance(data, (pd.DataFrame, pd.Series, np.ndarray)):
        return len(data)
    return len(data)


class Columns:
    """Checked column values (name -> 1-d numpy array) that become one DataFrame per batch, not per request."""

    __slots__ = ("values", "rows")

    def __init__(self, values: dict[str, np.ndarray], rows: int):
        self.values = values
        self.rows = rows

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, copy=False)

    @staticmethod
    def concat(parts: list["Columns"]) -> "Columns":
        names = parts[0].values.keys()
        return Columns({n: np.concatenate([p.values[n] for p in parts]) for n in names}, sum(p.rows for p in parts))


def merge(parts: list[Any], columns_ok: bool = False) -> Any:
    """Many requests' inputs -> one model input (Columns if the runtime takes them, a DataFrame, an array)."""
    first = parts[0]
    if isinstance(first, Columns):
        merged = first if len(parts) == 1 else Columns.concat(parts)
        return merged if columns_ok else merged.frame()
    if isinstance(first, np.ndarray):
        return first if len(parts) == 1 else np.concatenate(parts)
    if isinstance(first, pd.DataFrame):
        return first if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    raise TypeError(f"cannot batch inputs of type {type(first).__name__}")


def split(output: Any, sizes: list[int]) -> list[Any]:
    """One model output -> each request's rows, in order."""
    if len(sizes) == 1:
        return [output]
    if isinstance(output, dict):  # a dict of per-row arrays (an Answer, tensor models with several outputs)
        pieces = {k: split(v, sizes) for k, v in output.items()}
        kind = type(output)
        return [kind({k: pieces[k][i] for k in output}) for i in range(len(sizes))]
    if isinstance(output, (pd.DataFrame, pd.Series)):
        total = len(output)
        if total != sum(sizes):
            raise ValueError(f"the model returned {total} rows for {sum(sizes)}")
        bounds = np.cumsum([0, *sizes])
        return [output.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:])]
    if isinstance(output, (np.ndarray, list)):
        if len(output) != sum(sizes):
            raise ValueError(f"the model returned {len(output)} rows for {sum(sizes)}")
        bounds = np.cumsum([0, *sizes])
        return [output[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    raise TypeError(f"cannot split a model output of type {type(output).__name__}")


class BatchingRuntime(WrappedRuntime):
    """A runtime whose predict calls from many threads are merged into batches for the inner runtime."""

    accepts_columns = False  # callers hand it raw requests' data; it merges them for the inner runtime itself

    def __init__(self, inner: Runtime, max_batch: int = 64, max_wait_ms: float = 1.0,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        super().__init__(inner)
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start = threading.Lock()
        self.batches = 0  # how many predict calls the inner runtime made (for tests and metrics)

    def unload(self) -> None:
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join(timeout=30)
            self._worker = None
        self.inner.unload()

    # -- the batching path --------------------------------------------------------------------
    def submit(self, data: Any, params: dict | None = None) -> Future:
        """Queue one request's rows; the future holds its own slice of the output."""
        future: Future = Future()
        if params:  # requests with parameters are not merged with others
            try:
                future.set_result(self.inner.predict(merge([data], self.inner.accepts_columns), params))
            except Exception as err:
                future.set_exception(err)
            return future
        if self._worker is None:
            with self._start:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._run, name=f"batch-{self.name}", daemon=True)
                    self._worker.start()
        self._queue.put((data, rows_of(data), future))
        return future

    def predict(self, data: Any, params: dict | None = None) -> Any:
        return self.submit(data, params).result()

    def _run(self) -> None:
        pending = None
        while True:
            item = pending or self._queue.get()
            pending = None
            if item is _STOP:
                return
            batch, rows = [item], item[1]
            deadline = time.perf_counter() + self.max_wait
            while rows < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if nxt is _STOP or rows + nxt[1] > self.max_batch:
                    pending = nxt  # it starts the next batch (or stops the worker after this one)
                    break
                batch.append(nxt)
                rows += nxt[1]
            self._run_batch(batch, rows)

    def _run_batch(self, batch: list, rows: int) -> None:
        futures = [f for _, _, f in batch]
        started = time.perf_counter()
        try:
            output = self.inner.predict(merge([d for d, _, _ in batch], self.inner.accepts_columns), None)
            pieces = split(output, [n for _, n, _ in batch])
        except Exception as err:
            if len(batch) > 1:  # one bad request must not fail the others: run them one by one
                for item in batch:
                    self._run_batch([item], item[1])
                return
            futures[0].set_exception(err)
            return
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(rows, time.perf_counter() - started)
        for future, piece in zip(futures, pieces):
            future.set_result(piece)

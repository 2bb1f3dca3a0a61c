"""Adaptive, fair batching: concurrent requests merged into one predict call, each caller gets its own rows.
The rows themselves (:class:`Columns`, a one-row :class:`Row`, their costs and admission, the merge and split
of requests' rows) are serving/batches.py's.

:class:`BatchingRuntime` wraps any :class:`~serving.runtime.Runtime`. One worker thread runs the inner
runtime, one call at a time, so a model that is not thread safe (a Paddle predictor) is safe behind it.
A cheap model (``inline_ms``: a full batch of ``max_batch`` rows at its recent seconds a row within that,
e.g. the 311 router or a constant pyfunc, well under a millisecond a batch) is instead answered on the
event loop, one batch for the callers of one loop iteration (and of up to two more, while fewer than the
last batches' rows have come): handing each batch to the worker thread and back cost more than the model
(a queue, two wake-ups, the GIL passed between threads, futures answered across them). Costly models (the
MiniLM encoder, the street-scenes CNN: tens of milliseconds a batch) keep the worker, and the event loop
never waits for them; the worker and the loop never call the model at the same time.

Each request is cut into slices of at most ``slice_cost`` cost units (a row costs 1 plus the characters
of its text; a tensor row its number of values), at least one row each; a request within it is one slice.
A batch takes at most one slice from each waiting request, least served first (the cost of its slices
already run, then arrival), while it stays within ``max_batch`` rows and ``slice_cost``: a large request
is answered slice after slice, and small requests that arrive meanwhile go before its next slice
instead of waiting for all of it. Under no load a request runs alone at once; the worker waits
at most ``max_wait_ms`` for more while a batch is short, and not at all once every request the server is
answering is already with it (``in_flight``, the data plane's count: nobody else can join). For a model
whose batches take long (the MiniLM encoder: 100 ms and more), the worker waits longer for a short batch,
at most a tenth of the last batch's time (and 50 ms), and only until it holds as many rows as the larger
of the last two batches: the callers those batches answered are likely on their way back (clients that
wait for an answer before they send again), and a batch of 32 split into 3 and 29 pays the model's
per-call cost twice (measured at c32: see BENCHMARKS.md, MiniLM). Requests with ``params`` are batched
only with requests that carry the same params.

A request may carry a deadline: a request whose next slice would start after it is dropped with
:class:`Overloaded` (HTTP 503 with ``Retry-After``) instead of holding the worker.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from serving.batches import (  # noqa: F401  (re-exported: serving.batching is where callers find them)
    Columns, Overloaded, Row, TooCostly, _total, admit, batch_slice_cost, join, merge, row_costs, rows_of, split, take)
from serving.runtime import Answer, Runtime, WrappedRuntime  # noqa: F401  (Answer: re-exported)

log = logging.getLogger("civicml.serving")

_STOP = object()
_LONG_WAIT_SHARE = 0.1  # of the last batch's time: the longest a short batch waits for returning callers
_LONG_WAIT_CAP = 0.05  # seconds
_INLINE_TURNS = 2  # loop iterations a short batch of a cheap model waits for more callers (the I/O already read)


def _settle(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Hand a caller its answer, unless it went away meanwhile (a cancelled future takes nothing)."""
    from concurrent.futures import InvalidStateError

    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class _LoopWaiter:
    """The worker's side of an asyncio future (:meth:`BatchingRuntime.asubmit`): its answer goes to an outbox
    that the worker hands to the event loop once per batch, so that the loop is woken once for a batch's
    callers instead of once each (every wake-up is a system call on both threads)."""

    __slots__ = ("loop", "future", "outbox", "settled")

    def __init__(self, loop, future, outbox: list):
        self.loop, self.future, self.outbox, self.settled = loop, future, outbox, False

    def done(self) -> bool:
        return self.settled or self.future.done()  # done: cancelled, its caller went away

    def set_result(self, result: Any) -> None:
        self.settled = True
        self.outbox.append((self.future, result, None))

    def set_exception(self, error: BaseException) -> None:
        self.settled = True
        self.outbox.append((self.future, None, error))


def _resolve(answers: list) -> None:
    """On the event loop: a batch's answers to their callers (those still waiting)."""
    for future, result, error in answers:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _params_key(params: dict | None) -> str:
    if not params:
        return ""
    import orjson

    try:
        return orjson.dumps(params, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return repr(sorted(params.items(), key=lambda kv: kv[0]))


class _Job:
    """One caller's request inside the batcher: its slices, the outputs so far, its future and deadline."""

    __slots__ = ("data", "params", "key", "future", "deadline", "bounds", "costs", "next", "pieces", "served",
                 "seq")
    _arrivals = itertools.count()

    def __init__(self, data, params, future: Future, deadline: float | None, bounds: list[int], costs: list[int]):
        self.data, self.params, self.key = data, params, _params_key(params)
        self.future, self.deadline = future, deadline
        self.bounds = bounds  # slice i holds rows bounds[i]:bounds[i + 1] and costs costs[i]
        self.costs = costs
        self.next = 0  # the next slice to run
        self.pieces: list = []
        self.served = 0  # cost of its slices run so far (who goes first)
        self.seq = next(self._arrivals)

    @property
    def left(self) -> int:
        return len(self.costs) - self.next

    @property
    def cost_left(self) -> int:
        return sum(self.costs[self.next:])

    def rows_next(self) -> int:
        return self.bounds[self.next + 1] - self.bounds[self.next]


def _slice_bounds(costs: np.ndarray, max_cost: int) -> tuple[list[int], list[int]]:
    """(boundaries, slice costs) cutting rows into slices of at most ``max_cost`` (at least one row each)."""
    rows, total = len(costs), _total(costs)
    if total <= max_cost:
        return [0, rows], [total]
    bounds, spent_list, start, spent = [0], [], 0, 0
    for i, cost in enumerate(costs if costs.__class__ is list else costs.tolist()):
        if i > start and spent + cost > max_cost:
            bounds.append(i)
            spent_list.append(spent)
            start, spent = i, 0
        spent += cost
    bounds.append(rows)
    spent_list.append(spent)
    return bounds, spent_list


class BatchingRuntime(WrappedRuntime):
    """A runtime whose predict calls from many threads are merged into fair batches for the inner runtime."""

    accepts_columns = False  # callers hand it raw requests' data; it merges them for the inner runtime itself

    def __init__(self, inner: Runtime, max_batch: int = 64, max_wait_ms: float = 1.0,
                 on_batch: Callable[[int, float], None] | None = None, slice_cost: int = 10_000,
                 in_flight: Callable[[], int | None] | None = None, inline_ms: float = 0.0):
        if max_batch < 1 or max_wait_ms < 0 or slice_cost < 1 or inline_ms < 0:
            raise ValueError("max_batch and slice_cost must be >= 1, max_wait_ms and inline_ms >= 0")
        super().__init__(inner)
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.slice_cost = slice_cost
        self.on_batch = on_batch
        # how many requests the server is answering now (None: not known): when every one of them is already
        # with this batcher, nobody else can join a short batch, and the worker does not wait max_wait for them
        self.in_flight = in_flight
        self._handed = 0  # asyncio callers handed to the worker and not yet answered (event loop only)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start = threading.Lock()
        self._cost_lock = threading.Lock()
        self._outbox: list = []  # answers for asyncio callers, handed to their loops after each batch (worker only)
        self._arriving: dict = {}  # event loop -> the jobs submitted in its current iteration, not yet queued
        self._waited: dict = {}  # event loop -> turns its arrivals have waited for more (inline answers)
        self.batches = 0  # how many predict calls the inner runtime made (for tests and metrics)
        self._queued_cost = 0  # cost units submitted and not yet run (for Retry-After)
        self._rate = 0.0  # cost units a second, smoothed over recent batches
        self._last_rows = (0, 0)  # rows of the last two batches
        self._last_seconds = 0.0  # the last batch's time in the model
        # a model whose full batch (max_batch rows at its recent seconds a row) takes at most inline_ms is
        # answered on the event loop itself, in the iteration its callers arrived in (:meth:`_answer_inline`)
        self.inline_seconds = inline_ms / 1000
        # recent batches' seconds and rows, smoothed apart: their ratio is the seconds a row, which one short
        # batch (a straggler's: the model's whole per-call cost for one row) does not swing
        self._recent = (0.0, 0.0)
        self._model_lock = threading.Lock()  # one model call at a time: the worker's, or one on an event loop

    def unload(self) -> None:
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join(timeout=30)
            self._worker = None
        self.inner.unload()

    def retry_after(self) -> int:
        """Seconds until the work queued now is likely done (at least 1, at most 60)."""
        if self._rate <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self._queued_cost / self._rate))))

    def _spent(self, cost: int) -> None:
        with self._cost_lock:
            self._queued_cost -= cost

    # -- the batching path --------------------------------------------------------------------
    def submit(self, data: Any, params: dict | None = None, deadline: float | None = None,
               costs: np.ndarray | None = None) -> Future:
        """Queue one request's rows; the future holds its own output. ``deadline``: a ``time.monotonic()``
        after which its slices are not started any more (the future then raises :class:`Overloaded`);
        ``costs``: its rows' costs if the caller has them already (:func:`row_costs`)."""
        future: Future = Future()
        self._queue.put(self._job(data, params, future, deadline, costs))
        return future

    def _job(self, data: Any, params: dict | None, future, deadline: float | None, costs) -> _Job:
        if self._worker is None:
            with self._start:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._run, name=f"batch-{self.name}", daemon=True)
                    self._worker.start()
        bounds, slice_costs = _slice_bounds(row_costs(data) if costs is None else costs, self.slice_cost)
        with self._cost_lock:
            self._queued_cost += sum(slice_costs)
        return _Job(data, params or None, future, deadline, bounds, slice_costs)

    def predict(self, data: Any, params: dict | None = None) -> Any:
        return self.submit(data, params).result()

    def predict_request(self, data: Any, params: dict | None = None) -> Any:
        """One request's checked input, taken as it is: the worker merges it with others for the inner runtime."""
        return self.predict(data, params)

    async def asubmit(self, data: Any, params: dict | None = None, deadline: float | None = None,
                      costs: np.ndarray | None = None) -> Any:
        """:meth:`submit`, awaited on the event loop: no thread waits for the batch (:meth:`submit_soon`)."""
        return await self.submit_soon(data, params, deadline, costs)

    def submit_soon(self, data: Any, params: dict | None = None, deadline: float | None = None,
                    costs: np.ndarray | None = None) -> asyncio.Future:
        """A future of the event loop this is called on for the answer (the data plane awaits it without a
        coroutine of ours between). The requests that reach this in one iteration of the loop are taken
        together at its end (:meth:`_hand_over`): answered there by a cheap model, else queued for the worker
        with one wake-up for all of them, their answers coming back together (:class:`_LoopWaiter`)."""
        loop = _running_loop()
        future = loop.create_future()
        arriving = self._arriving.get(loop)
        if arriving is None:
            arriving = self._arriving[loop] = []
            loop.call_soon(self._hand_over, loop)
        arriving.append((data, params, future, deadline, costs))
        return future

    def _hand_over(self, loop) -> None:
        seconds, rows = self._recent
        inline = self.inline_seconds and 0 < seconds * self.max_batch <= self.inline_seconds * rows
        if inline:
            items = self._arriving.get(loop)
            waited = self._waited.get(loop, 0)
            if items and waited < _INLINE_TURNS and len(items) < min(self.max_batch, max(self._last_rows)):
                self._waited[loop] = waited + 1
                loop.call_soon(self._hand_over, loop)
                return
            self._waited.pop(loop, None)
        items = self._arriving.pop(loop, None)
        if not items:
            return
        if inline:
            items = self._answer_inline(items)
            if not items:
                return
        jobs = [self._job(data, params, _LoopWaiter(loop, future, self._outbox), deadline, costs)
                for data, params, future, deadline, costs in items]
        for job in jobs:
            job.future.future.add_done_callback(self._answered)
        self._handed += len(jobs)
        self._queue.put(jobs)

    def _answered(self, _future) -> None:
        self._handed -= 1

    def _answer_inline(self, items: list) -> list:
        """Answer one loop iteration's callers on the loop: a cheap model's batch (the constant model's, the
        311 router's: well under a millisecond) costs less than handing it to the worker thread and back (a
        queue, two wake-ups, the GIL passed between the threads, futures answered across them). Batches as
        the worker makes them: callers with the same params, within ``max_batch`` rows and ``slice_cost``.
        Returns the callers left for the worker: requests of more than one slice, and all of them while the
        worker is running the model (one model call at a time)."""
        if not self._model_lock.acquire(blocking=False):
            return items
        try:
            rest, groups, now = [], {}, time.monotonic()
            for item in items:
                data, params, future, deadline, costs = item
                if future.done():  # cancelled: its caller went away
                    continue
                if deadline is not None and now > deadline:
                    future.set_exception(Overloaded("the server is busy: this request's time budget passed "
                                                    "before the model could take it (retry later)",
                                                    self.retry_after()))
                    continue
                cost = _total(row_costs(data) if costs is None else costs)
                if cost > self.slice_cost:
                    rest.append(item)
                    continue
                groups.setdefault(_params_key(params), []).append((data, params, future, rows_of(data), cost))
            for group in groups.values():
                batch, rows, spent = [], 0, 0
                for entry in group:
                    if batch and (rows + entry[3] > self.max_batch or spent + entry[4] > self.slice_cost):
                        self._inline_batch(batch)
                        batch, rows, spent = [], 0, 0
                    batch.append(entry)
                    rows, spent = rows + entry[3], spent + entry[4]
                self._inline_batch(batch)
            return rest
        finally:
            self._model_lock.release()

    def _inline_batch(self, batch: list) -> None:
        sizes = [entry[3] for entry in batch]
        try:
            pieces = self._predict([entry[0] for entry in batch], sizes, batch[0][1])
        except Exception as err:
            if len(batch) > 1:  # one bad request must not fail the others: one by one
                for entry in batch:
                    self._inline_batch([entry])
                return
            pieces = None
            if not batch[0][2].done():
                batch[0][2].set_exception(err)
        for entry, piece in zip(batch, pieces or ()):
            if not entry[2].done():
                entry[2].set_result(piece)

    def _predict(self, parts: list, sizes: list[int], params: dict | None) -> list:
        """One model call for the parts of a batch (``sizes`` rows each): each part's rows of the output;
        the batch counted and timed."""
        started = time.perf_counter()
        output = self.inner.predict(merge(parts, self.inner.accepts_columns), params)
        pieces = split(output, sizes)
        seconds = time.perf_counter() - started
        rows = sum(sizes)
        self.batches += 1
        self._last_rows, self._last_seconds = (self._last_rows[1], rows), seconds
        recent = self._recent
        self._recent = (seconds, rows) if recent[1] <= 0 else (0.8 * recent[0] + 0.2 * seconds,
                                                              0.8 * recent[1] + 0.2 * rows)
        if self.on_batch is not None:
            self.on_batch(rows, seconds)
        return pieces

    def _all_here(self) -> bool:
        """Whether every request the server is answering is with this batcher already (then none can join)."""
        in_flight = self.in_flight() if self.in_flight is not None else None
        return in_flight is not None and in_flight <= self._handed

    def _deliver(self) -> None:
        """The answers of the batch just run, to each event loop at once (worker thread)."""
        if not self._outbox:
            return
        answers, loops = self._outbox[:], {}
        self._outbox.clear()  # the same list object: the waiters hold it
        for item in answers:
            waiter_loop = item[0].get_loop()
            loops.setdefault(waiter_loop, []).append(item)
        for waiter_loop, items in loops.items():
            try:
                waiter_loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass

    def _run(self) -> None:
        active: collections.deque[_Job] = collections.deque()
        stopping = False
        while True:
            if not active:
                if stopping:
                    return
                item = self._queue.get()
                if item is _STOP:
                    return
                active.extend(item) if isinstance(item, list) else active.append(item)
            stopping = self._take_arrivals(active, 0) or stopping
            batch = self._fill(active, [])
            rows = sum(job.bounds[i + 1] - job.bounds[i] for job, i in batch)
            if batch and not active and not stopping and rows < self.max_batch and self.max_wait > 0:
                # a short batch and nobody else waiting: give concurrent callers time to join it
                stopping = self._take_arrivals(active, *self._gather(rows))
                batch = self._fill(active, batch)
            self._run_batch(batch)
            self._deliver()

    def _gather(self, rows: int) -> tuple[int, float, bool]:
        """(rows to wait for, seconds at most, whether to wait for callers not yet back) for a short batch
        of ``rows``: up to ``max_batch`` within ``max_wait``; after long batches, up to the larger of the
        last two batches' rows within a tenth of the last one's time, even while every request in flight
        is already here (the callers just answered are on their way back: see the module's doc)."""
        recent = min(self.max_batch, max(self._last_rows))
        longer = min(_LONG_WAIT_SHARE * self._last_seconds, _LONG_WAIT_CAP)
        if longer > self.max_wait and recent > rows:
            return recent - rows, longer, True
        return self.max_batch - rows, self.max_wait, False

    def _take_arrivals(self, active: collections.deque, wait_for_rows: int, wait: float | None = None,
                       patient: bool = False) -> bool:
        """Move queued requests into ``active``; with ``wait_for_rows``, wait up to ``wait`` seconds (default
        max_wait) for that many rows to arrive, and, unless ``patient``, not once every request in flight is
        here. True if the worker was asked to stop."""
        deadline = time.perf_counter() + (self.max_wait if wait is None else wait)
        arrived = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if arrived >= wait_for_rows or remaining <= 0 or (not patient and self._all_here()):
                    return False
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return False
            if item is _STOP:
                return True
            for job in item if isinstance(item, list) else (item,):
                active.append(job)
                arrived += job.rows_next()

    def _fill(self, active: collections.deque, batch: list[tuple[_Job, int]]) -> list[tuple[_Job, int]]:
        """Add one slice from each waiting request, least served first (the cost of its slices run so far,
        then arrival), with the batch's params, while the batch stays within ``max_batch`` rows and
        ``slice_cost``: a newly arrived small request goes before the next slice of a large one. Slices of
        large requests and whole small requests are not mixed in one batch, so that small callers never wait
        for a large request's slice in their own batch."""
        rows = sum(job.bounds[i + 1] - job.bounds[i] for job, i in batch)
        cost = sum(job.costs[i] for job, i in batch)
        key = batch[0][0].key if batch else None
        sliced = len(batch[0][0].costs) > 1 if batch else None  # a batch of slices of large requests, or not
        now = time.monotonic()
        waiting = []
        for job in active:
            if job.future.done():  # cancelled
                self._spent(job.cost_left)
            elif job.deadline is not None and now > job.deadline:
                self._spent(job.cost_left)
                _settle(job.future, error=Overloaded(
                    "the server is busy: this request's time budget passed before the model could take it "
                    "(retry later)", self.retry_after()))
            else:
                waiting.append(job)
        taken = {id(job) for job, _ in batch}
        for job in sorted(waiting, key=lambda j: (j.served, j.seq)):
            if id(job) in taken:
                continue
            key = job.key if key is None else key
            sliced = len(job.costs) > 1 if sliced is None else sliced
            size, slice_cost = job.rows_next(), job.costs[job.next]
            if job.key != key or (len(job.costs) > 1) != sliced:
                continue
            if batch and (rows + size > self.max_batch or cost + slice_cost > self.slice_cost):
                continue
            batch.append((job, job.next))
            taken.add(id(job))
            job.next += 1
            job.served += slice_cost
            rows, cost = rows + size, cost + slice_cost
            if rows >= self.max_batch or cost >= self.slice_cost:
                break
        active.clear()
        active.extend(job for job in waiting if job.left)
        return batch

    def _run_batch(self, batch: list[tuple[_Job, int]]) -> None:
        if not batch:
            return
        parts, sizes = [], []
        for job, i in batch:
            start, stop = job.bounds[i], job.bounds[i + 1]
            parts.append(job.data if len(job.costs) == 1 else take(job.data, start, stop))
            sizes.append(stop - start)
        started = time.perf_counter()
        try:
            with self._model_lock:
                pieces = self._predict(parts, sizes, batch[0][0].params)
        except Exception as err:
            if len(batch) > 1:  # one bad request must not fail the others: run them one by one
                for item in batch:
                    self._run_batch([item])
                return
            job = batch[0][0]
            self._spent(job.costs[batch[0][1]] + job.cost_left)
            job.next = len(job.costs)  # its other slices are dropped
            _settle(job.future, error=err)
            return
        seconds = time.perf_counter() - started
        spent = sum(job.costs[i] for job, i in batch)
        self._spent(spent)
        if seconds > 0:
            rate = spent / seconds
            self._rate = rate if self._rate <= 0 else 0.8 * self._rate + 0.2 * rate
        for (job, _), piece in zip(batch, pieces):
            if job.future.done():
                continue
            job.pieces.append(piece)
            if len(job.pieces) == len(job.costs):
                try:
                    _settle(job.future, join(job.pieces))
                except Exception as err:
                    _settle(job.future, error=err)
                job.pieces = []


_LOOP = [0, None]  # the thread that last asked, and the event loop it was running


def _running_loop():
    """``asyncio.get_running_loop()``, without its ``getpid()`` system call on every request (its check for a
    forked process): a thread runs one event loop at a time, so while the loop this thread last ran is still
    running, it is the one running now."""
    thread, loop = _LOOP
    if thread == threading.get_ident() and loop is not None and loop.is_running():
        return loop
    loop = asyncio.get_running_loop()
    _LOOP[:] = threading.get_ident(), loop
    return loop

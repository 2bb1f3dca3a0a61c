"""Where a training writes its run's parameters, metrics and tags.

``RunLog`` writes each call straight to the tracking store. ``BackgroundRunLog``
queues the calls and writes them from one background thread, merging whatever
waits for the same run into one ``log_batch``: a tuner that runs many short
trials keeps that bookkeeping off each trial's critical path, and a neural net
that reports every epoch costs one write per drain instead of one per epoch.

``start_run`` queues a run's creation too (with the time it really started) and
returns a :class:`PendingRun` at once, which the caller passes wherever a run id
goes; the run is created while the model trains, and the caller waits for it
only where it needs the run itself: ``activate`` (figures and models go through
MLflow's active run, on the caller's thread). ``end_run`` leaves the active
run at once and queues its final status (with the time it really ended), after
the run's other writes. ``flush()`` waits until the queue is written and raises
the first error a write met; a process killed before that leaves runs that
``tuning`` finds still RUNNING when the study finishes and ends then.

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
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME


@dataclass
class _Pending:
    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    documents: dict[str, dict] = field(default_factory=dict)  # artifact path -> JSON-able content
    end: tuple[str, int] | None = None  # (status, end time in ms): the run's last write
    create: bool = False  # the key is a PendingRun to create first


class PendingRun:
    """A run a :class:`BackgroundRunLog` creates from its thread: what the caller passes where a run id goes
    (``log``, ``log_dict``, ``end_run``) until it needs the run itself (``activate``)."""

    def __init__(self, experiment_id: str, run_name: str | None, tags: dict[str, str], created):
        self.experiment_id, self.run_name, self.tags, self.created = experiment_id, run_name, tags, created
        self.start_time = int(time.time() * 1000)  # when the caller started it, not when it is written
        self.run: mlflow.entities.Run | None = None
        self.error: BaseException | None = None
        self.active = False  # made the active run of the caller's thread (``activate``)
        self.done = threading.Event()  # created (or failed), and ``created`` called

    def __repr__(self) -> str:
        return f"PendingRun({self.run.info.run_id if self.run else self.run_name!r})"


class RunLog:
    """Writes at once, one ``log_batch`` per call."""

    def __init__(self, tracking_uri: str | None = None):
        self._tracking_uri = tracking_uri

    @property
    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self._tracking_uri)

    def start_run(self, experiment_id: str, run_name: str | None = None, *, nested: bool = False,
                  tags: Mapping[str, str] | None = None, created=None) -> "str | PendingRun":
        """Start a run as ``mlflow.start_run`` does (the active run of this thread) and call ``created(run_id)``;
        returns the run id. A failing ``created`` ends the run (FAILED) and raises."""
        run_id = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested,
                                  tags=dict(tags or {})).info.run_id
        if created is not None:
            try:
                created(run_id)
            except BaseException as err:
                mlflow.end_run("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
                raise
        return run_id

    def activate(self, run: "str | PendingRun") -> str:
        """The run's id, the run being this thread's active run (for MLflow's fluent calls: figures, models).
        Raises what creating it raised."""
        return run

    def log(self, run_id: "str | PendingRun", *, metrics: Mapping[str, float] | None = None, step: int = 0,
            params: Mapping[str, object] | None = None, tags: Mapping[str, object] | None = None) -> None:
        now = int(time.time() * 1000)
        pending = _Pending([Metric(k, float(v), now, int(step)) for k, v in (metrics or {}).items()],
                           {k: str(v) for k, v in (params or {}).items()},
                           {k: str(v) for k, v in (tags or {}).items()})
        self._submit(run_id, pending)

    def log_dict(self, run_id: "str | PendingRun", content: Mapping, artifact_file: str) -> None:
        """A small JSON or YAML artifact (``mlflow.log_dict``)."""
        self._submit(run_id, _Pending(documents={artifact_file: dict(content)}))

    def end_run(self, run_id: "str | PendingRun", status: str) -> None:
        """End the active run ``run_id`` (``mlflow.end_run``)."""
        mlflow.end_run(status)

    def _submit(self, run_id: str, pending: _Pending) -> None:
        _write(self.client, run_id, pending)

    def hold(self) -> None:
        """Keep what is logged from now on queued until ``release()`` (nothing is queued here)."""

    def release(self) -> None:
        """Write what is queued, and what comes next, as it comes."""

    def flush(self) -> None:
        """Wait until everything logged so far is stored (nothing to wait for here)."""

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait until the writer has done all it may do now: written everything (released), or stopped at
        the hold with what is logged (held). Returns False if that took longer than ``timeout``. Nothing
        waits here; tests and benchmarks use it to look at the store at a known point."""
        return True

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
        self._parked = threading.Event()  # the writer holds logged items and waits at the hold

    def _submit(self, run_id: str, pending: _Pending) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="civicml-runlog", daemon=True)
                self._thread.start()
        self._queue.put((run_id, pending))

    def start_run(self, experiment_id: str, run_name: str | None = None, *, nested: bool = False,
                  tags: Mapping[str, str] | None = None, created=None) -> "str | PendingRun":
        """Queue the run's creation and return a :class:`PendingRun` at once; ``created(run_id)`` is called
        from the writer thread once the run exists (before anything else is written for it). Writing is
        released: the creation is what the caller waits for first. Where MLflow would do more than create
        the run (resume ``MLFLOW_RUN_ID``, log system metrics, refuse a second active run), or its
        internals are not as expected, the run is started here as ``RunLog.start_run`` does."""
        from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING, MLFLOW_RUN_ID

        parent = mlflow.active_run()
        if (experiment_id is None or MLFLOW_RUN_ID.get() or MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get()
                or (parent is not None and not nested) or _active_stack() is None):
            run_id = super().start_run(experiment_id, run_name, nested=nested, tags=tags, created=created)
            self.release()
            return run_id
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent.info.run_id  # as mlflow.start_run(nested=True) names it
        pending = PendingRun(str(experiment_id), run_name, tags, created)
        self._submit(pending, _Pending(create=True))
        self.release()
        return pending

    def activate(self, run: "str | PendingRun") -> str:
        if not isinstance(run, PendingRun):
            return run
        self._wait(run)
        if run.error is not None:
            raise run.error
        if not run.active:
            stack = _active_stack()
            if stack is not None:
                stack.append(mlflow.ActiveRun(run.run))  # what mlflow.start_run does once it has the run
            else:
                mlflow.start_run(run_id=run.run.info.run_id, nested=True)
            run.active = True
        return run.run.info.run_id

    def end_run(self, run_id: "str | PendingRun", status: str) -> None:
        ended = int(time.time() * 1000)
        if isinstance(run_id, PendingRun):
            pending, run_id = run_id, None
            self._wait(pending)
            if pending.run is None:
                return  # never created: what failed it fails the caller (``activate``)
            run_id = pending.run.info.run_id
            if not pending.active:
                self._submit(run_id, _Pending(end=(status, ended)))
                return
        if not _leave_active_run(run_id):
            mlflow.end_run(status)
            return
        self._submit(run_id, _Pending(end=(status, ended)))

    def _wait(self, pending: PendingRun) -> None:
        if not pending.done.is_set():
            self.release()  # a hold must not keep the creation the caller waits for
            pending.done.wait()

    def hold(self) -> None:
        self._go.clear()

    def release(self) -> None:
        self._go.set()

    def _drain(self) -> None:
        client = self.client
        while True:
            first = self._queue.get()
            if not self._go.is_set():
                self._parked.set()
                self._go.wait()
                self._parked.clear()
            items = [first]
            while True:  # take whatever else is waiting, so that one run's items go out together
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in items)
            for item in items:  # runs first: what is logged for them follows in the same batch
                if item is not None and item[1].create:
                    _create(client, item[0])
            merged: dict[str, _Pending] = {}
            for item in items:
                if item is None or item[1].create:
                    continue
                run_id, pending = item
                if isinstance(run_id, PendingRun):
                    if run_id.run is None:
                        continue  # its creation failed: the caller raises that (``activate``)
                    run_id = run_id.run.info.run_id
                into = merged.setdefault(run_id, _Pending())
                into.metrics.extend(pending.metrics)
                into.params.update(pending.params)
                into.tags.update(pending.tags)
                into.documents.update(pending.documents)
                into.end = pending.end or into.end
            for run_id, pending in merged.items():
                try:
                    _write(client, run_id, pending)
                except Exception as err:  # kept for flush(); the other runs' writes go on
                    self._error = self._error or err
            for _ in items:
                self._queue.task_done()
            if stop:
                return

    def settle(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._parked.is_set() or self._queue.unfinished_tasks == 0:
                return True
            with self._queue.all_tasks_done:  # woken when a batch is written
                self._queue.all_tasks_done.wait(timeout=0.05)
        return False

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
    for artifact_file, content in pending.documents.items():
        client.log_dict(run_id, content, artifact_file)
    if pending.end:
        client.set_terminated(run_id, status=pending.end[0], end_time=pending.end[1])


def _create(client: mlflow.MlflowClient, pending: PendingRun) -> None:
    """Create the run with the tags ``mlflow.start_run`` would give it (the run name, MLflow's context tags
    such as the source and user), then tell ``pending.created``. An error is kept on ``pending``."""
    from mlflow.tracking.context import registry

    try:
        tags = registry.resolve_tags({**pending.tags, **({MLFLOW_RUN_NAME: pending.run_name}
                                                          if pending.run_name else {})})
        pending.run = client.create_run(pending.experiment_id, start_time=pending.start_time, tags=tags,
                                        run_name=pending.run_name)
        if pending.created is not None:
            pending.created(pending.run.info.run_id)
    except Exception as err:
        pending.error = err
    finally:
        pending.done.set()


def _active_stack() -> list | None:
    """This thread's stack of MLflow active runs (``mlflow.start_run`` pushes, ``end_run`` pops), or None
    where MLflow's internals are not as expected."""
    from mlflow.tracking import fluent

    try:
        stack = fluent._active_run_stack.get()
    except AttributeError:
        return None
    return stack if isinstance(stack, list) else None


def _leave_active_run(run_id: str) -> bool:
    """Take ``run_id`` off this thread's active-run stack without writing its status (``mlflow.end_run``
    does both). MLflow has no public call for this half; where its internals are not as expected (another
    MLflow version, system metrics being logged for the run), returns False and nothing changes."""
    from mlflow.environment_variables import MLFLOW_RUN_ID
    from mlflow.tracking import fluent

    try:
        stack = fluent._active_run_stack.get()
        monitors = getattr(fluent, "run_id_to_system_metrics_monitor", {})
        if not isinstance(stack, list) or not stack or stack[-1].info.run_id != run_id or run_id in monitors:
            return False
        stack.pop()
        fluent._last_active_run_id.set(run_id)
    except (AttributeError, TypeError):
        return False
    MLFLOW_RUN_ID.unset()
    return True

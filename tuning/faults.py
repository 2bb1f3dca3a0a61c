"""When a worker dies or is interrupted: its trials are failed, their runs ended, their parameters queued again.

* A worker process that ended (SIGKILL, a lost terminal) on this machine: ``fail_dead_trials`` with
  ``gone``, which knows a process by host, pid and start time (a later process may get the same pid).
  On PostgreSQL, Optuna's heartbeats find the dead workers of other machines the same way.
* Ctrl-C: the trial it stopped is FAIL and its run KILLED; ``requeue_interrupted`` queues its
  parameters to run first when the study resumes, and ``quiet_interrupts`` keeps Optuna from printing
  a traceback for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import mlflow
import optuna

from projects.runlog import RunLog
from tuning.runs import ATTR_REQUEUED, ATTR_RUN, fail_trial_run
from civicml.tags import TAG_FAILURE, TAG_TRIAL_STATE

if TYPE_CHECKING:
    from tuning.worker import WorkerSpec

State = optuna.trial.TrialState


def process_started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc): tells it from a later process that
    got the same id. ``None`` where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after the command name


def gone(worker: Mapping) -> bool:
    """Whether the worker process a trial names has ended: same host, and no process with its id and start."""
    if worker.get("host") != socket.gethostname() or not isinstance(worker.get("pid"), int):
        return False
    try:
        os.kill(worker["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it runs, as another user
    started = worker.get("process_start_ticks", worker.get("started"))  # "started": studies before 0.2
    return started is not None and process_started(worker["pid"]) not in (None, started)


def fail_dead_trials(study: optuna.Study, spec: "WorkerSpec", dead: Callable[[Mapping], bool], why: str) -> list[int]:
    """Fail the RUNNING trials whose worker ``dead(worker)`` says has ended: the trial FAIL, its MLflow run
    FAILED, and its parameters queued again (at most ``heartbeat.max_retry`` times), as a stale heartbeat
    does on PostgreSQL. Returns the failed trials' numbers."""
    failed = []
    client = None
    for trial in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if not worker or worker.get("pid") == os.getpid() or not dead(worker):
            continue
        try:
            study.tell(trial.number, state=State.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            continue  # someone else noticed first ("Cannot tell a FAIL trial")
        frozen = _by_number(study, trial.number)
        if frozen is None or frozen.state != State.FAIL:
            continue
        failed.append(frozen.number)
        client = client or mlflow.MlflowClient(tracking_uri=spec.settings.tracking_uri)
        fail_trial_run(client, frozen, f"worker {worker.get('host')}:{worker.get('pid')}: {why}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=spec.heartbeat.max_retry)(study, frozen)
    return failed


def _by_number(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial | None:
    return next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)


def requeue_interrupted(study: optuna.Study, number: int, runlog: RunLog) -> int | None:
    """Ctrl-C stopped trial ``number``: Optuna marked it FAIL; queue the same parameters to run first when the
    study resumes (as a retry of a dead worker's trial is queued). Returns the queued trial's number."""
    frozen = _by_number(study, number)
    if frozen is None or frozen.state != State.FAIL:
        return None
    run_id = frozen.user_attrs.get(ATTR_RUN)
    if run_id:
        runlog.log(run_id, tags={TAG_TRIAL_STATE: "FAIL", TAG_FAILURE: "interrupted (Ctrl-C); queued again"})
    system_attrs = {k: v for k, v in frozen.system_attrs.items() if k in ("failed_trial", "retry_history")}
    system_attrs[ATTR_REQUEUED] = frozen.number
    queued = study.add_trial(optuna.trial.create_trial(
        state=State.WAITING, params=frozen.params, distributions=frozen.distributions,
        user_attrs={k: v for k, v in frozen.user_attrs.items() if k == "worker"}, system_attrs=system_attrs))
    return queued.number if queued is not None else None


class _DropInterrupts(logging.Filter):
    """Drops Optuna's two records of a trial that Ctrl-C failed (the error, then the value)."""

    def __init__(self):
        super().__init__()
        self.trials: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        number = message.split(" ", 2)[1] if message.startswith("Trial ") else None
        if "KeyboardInterrupt" in message:
            self.trials.add(number)
            return False
        return not (number in self.trials and "failed with value" in message)


@contextlib.contextmanager
def quiet_interrupts():
    """Optuna logs a trial failed by Ctrl-C as a warning with its traceback; the trial is queued again
    instead (``requeue_interrupted``), so that record says nothing to the user."""
    logger = logging.getLogger("optuna.study._optimize")  # where Optuna logs a failed trial
    drop = _DropInterrupts()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)

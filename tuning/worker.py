"""One worker: runs trials of a study until its invocation has done its share.

A worker is a process (or the calling process) with its own Optuna study handle
on the shared storage. Every trial records, at its start, which invocation and
worker process (host, pid, process start) runs it and, as soon as its MLflow run
exists, the run id; so whoever later finds the trial dead can fail its run. On
PostgreSQL a dead worker's trial is found by its stale heartbeat; on one
machine's storages by its process having ended (``fail_dead_trials``).

Everything else a trial writes to MLflow (the run's creation, parameters,
per-step and final metrics, tags, its state, the run's end) goes through a
``BackgroundRunLog`` that writes while the model trains, so that a trial costs
little more than bare Optuna's own bookkeeping (bench/bench_tuning.py).

What a study shows in Optuna (``optuna-dashboard``, ``study.user_attrs``): the
values are named after the objectives' metrics (``study.metric_names``). Study
attributes: ``objectives`` (``metric:direction`` each, checked when a study
resumes), ``invocations`` (how many ``tune`` calls ran it), ``wall_seconds`` (their
wall time added up) and ``mlflow_parent_run_id``. Trial attributes: ``run_id`` (the
trial's MLflow run), ``worker`` (``invocation``, ``host``, ``pid`` and
``process_start_ticks``, the process's start in clock ticks since boot, which
tells it from a later process given the same pid) and, for a failed trial,
``failure`` (the first line of its error).

When does a worker stop? When this invocation's finished trials (complete,
pruned, or failed and not retried) plus its running ones reach the target, and
no retry is waiting. Trials of other invocations (another machine joining the
study) do not count towards this one's target.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import mlflow
import numpy as np
import optuna

from civicml import interrupts
from civicml.settings import Settings
from projects import Dataset, Pruned, UseCase, train
from projects.training import TrainingHooks
from projects.runlog import BackgroundRunLog, RunLog
from projects.space import SearchSpace
from tuning.choices import make_pruner, make_sampler
from tuning.objectives import LATENCY, Objective
from tuning.faults import fail_dead_trials, gone, process_started, quiet_interrupts, requeue_interrupted
from tuning.runs import ATTR_FAILURE, ATTR_REQUEUED, ATTR_RUN, fail_trial_run, record_trial, trial_tags
from tuning.space import grid, suggest
from tuning.storage import Heartbeat, open_storage, storage_kind, trial_count

State = optuna.trial.TrialState
DONE = (State.COMPLETE, State.PRUNED)


@dataclass
class WorkerSpec:
    """Everything a worker process needs (picklable: it crosses a process boundary)."""

    use_case: UseCase
    dataset: Dataset
    settings: Settings
    study_name: str
    storage: str
    families: list[str]
    spaces: dict[str, SearchSpace]
    objectives: list[Objective]
    parent_run_id: str
    experiment_id: str
    invocation: str
    target: int
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    deadline: float | None = None  # time.time() after which no trial starts
    latency_rows: int = 50
    workers: int = 1  # worker processes of this invocation
    # The study's trials, and the WAITING ones among them, when this invocation began (None: not known). The
    # invocation's trials are among those created since, plus those waiting then: a worker that counts the
    # study's trials (one query) knows the target is still far without reading every trial.
    trials_before: int | None = None
    waiting_before: int = 0

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]


def sampler_grid(spec: WorkerSpec) -> dict | None:
    if spec.sampler != "grid":
        return None
    if len(spec.families) > 1:
        from civicml.errors import InvalidInput

        raise InvalidInput("the grid sampler takes one model family at a time (--families NAME)")
    family = spec.families[0]
    return grid(spec.spaces[family], prefix=f"{family}.")


def open_study(spec: WorkerSpec, seed_offset: int = 0) -> optuna.Study:
    client = mlflow.MlflowClient(tracking_uri=spec.settings.tracking_uri)

    def on_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        fail_trial_run(client, trial, f"worker {trial.user_attrs.get('worker')} stopped beating")

    storage = open_storage(spec.storage, spec.heartbeat, on_stale)
    seed = None if spec.seed is None else spec.seed + seed_offset
    pruner = make_pruner("none" if spec.multi else spec.pruner)
    kwargs = dict(directions=spec.directions) if spec.multi else dict(direction=spec.directions[0])
    return optuna.create_study(study_name=spec.study_name, storage=storage, load_if_exists=True,
                               sampler=make_sampler(spec.sampler, seed, sampler_grid(spec)), pruner=pruner,
                               **kwargs)


def invocation_of(trial: optuna.trial.FrozenTrial) -> str | None:
    worker = trial.user_attrs.get("worker")
    return worker.get("invocation") if isinstance(worker, dict) else None


def progress(study: optuna.Study, invocation: str) -> dict[str, int]:
    """Counts of this invocation's trials, plus retries waiting in the study."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    retried |= {t.system_attrs[ATTR_REQUEUED] for t in trials if ATTR_REQUEUED in t.system_attrs}
    counts = {"done": 0, "complete": 0, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    for t in trials:
        if t.state == State.WAITING:
            counts["waiting"] += 1
        if invocation_of(t) != invocation:
            continue
        if t.state == State.RUNNING:
            counts["running"] += 1
        elif t.state == State.COMPLETE:
            counts["complete"] += 1
        elif t.state == State.PRUNED:
            counts["pruned"] += 1
        elif t.state == State.FAIL and t.number not in retried:
            counts["failed"] += 1
    counts["done"] = counts["complete"] + counts["pruned"] + counts["failed"]
    return counts


def enough(counts: dict[str, int], target: int) -> bool:
    return counts["waiting"] == 0 and counts["done"] + counts["running"] >= target


def far_from_target(study: optuna.Study, spec: WorkerSpec) -> bool:
    """Whether this invocation cannot have reached its target yet, told from the study's trial count alone
    (one query; see ``WorkerSpec.trials_before``). False when that cannot tell: read the trials then."""
    if spec.trials_before is None:
        return False
    count = trial_count(study)
    return count is not None and count - spec.trials_before + spec.waiting_before < spec.target


class _TrialReporter:
    """Bridges a training's intermediate values to Optuna's pruning (single objective only)."""

    def __init__(self, trial: optuna.Trial, prune: bool):
        self.trial = trial
        self.prune = prune

    def report(self, step: int, value: float) -> None:
        if not self.prune:
            return
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise Pruned(step, value)


class _TrialHooks(TrainingHooks):
    """How one trial takes part in its training (:class:`projects.training.TrainingHooks`): it records the
    run id on the trial as soon as the run exists, lets the run log write while the model trains, measures
    p95 single-row latency when an objective needs it, uses the worker's one split of the data, and keeps
    the model only if the trial may be chosen."""

    def __init__(self, objective: "TrialObjective", trial: optuna.Trial, latency_rows: int):
        self.objective = objective
        self.trial = trial
        self.rows = latency_rows

    def split(self, use_case: UseCase, dataset: Dataset, seed: int):
        key = (dataset.fingerprint, seed)
        if key not in self.objective.splits:
            self.objective.splits[key] = use_case.split(dataset, seed=seed)
        return self.objective.splits[key]

    def started(self, run_id: str) -> None:
        """From the run log's writer thread, which created the run while the model trains (and released the
        writes queued before: they go out meanwhile)."""
        self.trial.set_user_attr(ATTR_RUN, run_id)

    def fitted(self, fitted, valid: Dataset) -> dict[str, float]:
        self.objective.runlog.hold()
        return {LATENCY: p95_latency_ms(fitted, valid.X, self.rows)} if self.rows else {}

    def keep_model(self, metrics) -> bool:
        return self.objective.worth_logging(metrics)


def p95_latency_ms(fitted, X, rows: int, warmup: int = 3) -> float:
    """95th percentile of one-row ``predict`` wall time, in milliseconds (measured, not estimated)."""
    picks = [X.iloc[[i % len(X)]] for i in range(rows + warmup)]
    times = []
    for i, row in enumerate(picks):
        started = time.perf_counter()
        fitted.predict(row)
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(times, 95))


class TrialObjective:
    """Suggests a family and its parameters, trains it as a nested MLflow run, returns the objectives.

    The trial run's creation, parameters, metrics, tags and end go through ``runlog`` (a background writer
    in a worker, which creates the run while the model trains): only logging a model stays on the trial's
    own time.
    """

    def __init__(self, spec: WorkerSpec, study: optuna.Study, runlog: RunLog | None = None):
        self.spec = spec
        self.study = study
        self.runlog = runlog or RunLog(spec.settings.tracking_uri)
        self.worker = {"invocation": spec.invocation, "host": socket.gethostname(), "pid": os.getpid(),
                       "process_start_ticks": process_started(os.getpid())}
        self.measure = any(o.metric == LATENCY for o in spec.objectives)
        # Values of the complete trials this worker knows of: the study's when it started, then its own.
        # Trials other workers finish meanwhile are not read again; a worker that misses them may log a
        # model it did not need to, never skip one that could be chosen.
        self.seen = [list(t.values) for t in study.get_trials(deepcopy=False, states=(State.COMPLETE,))]
        self.interrupted: int | None = None  # the number of the trial that Ctrl-C stopped
        self.splits: dict = {}

    def __call__(self, trial: optuna.Trial):
        spec = self.spec
        self.runlog.hold()  # until the model trains (the run log's start_run releases it)
        trial.set_user_attr("worker", self.worker)
        if trial.user_attrs.get(ATTR_RUN):  # a retry inherits the dead trial's attributes
            trial.set_user_attr(ATTR_RUN, None)
        family = trial.suggest_categorical("family", spec.families) if len(spec.families) > 1 else spec.families[0]
        params = {name: suggest(trial, f"{family}.{name}", p) for name, p in spec.spaces[family].items()}
        hooks = _TrialHooks(self, trial, spec.latency_rows if self.measure else 0)
        try:
            interrupts.check()  # Ctrl-C dropped between trials: this one stops before it trains, and runs again
            result = train(spec.use_case, spec.dataset, family, params, settings=spec.settings, nested=True,
                           run_name=f"trial-{trial.number}", reporter=_TrialReporter(trial, not spec.multi),
                           seed=spec.seed, tags=trial_tags(spec.study_name, trial.number, spec.parent_run_id),
                           experiment_id=spec.experiment_id, log_dataset=False, runlog=self.runlog, hooks=hooks)
        except Pruned as pruned:
            raise optuna.TrialPruned(str(pruned)) from None
        except KeyboardInterrupt:
            self.interrupted = trial.number
            raise
        except Exception as err:  # Optuna fails the trial; the study's summary names the first failure
            if interrupts.seen():  # raised while Ctrl-C stopped the trial (cleanup that met a cut-short import)
                self.interrupted = trial.number
                raise KeyboardInterrupt from err
            first = (str(err).strip().splitlines() or [""])[0]
            trial.set_user_attr(ATTR_FAILURE, f"{err.__class__.__name__}: {first}" if first else
                                err.__class__.__name__)
            raise
        metrics = result.metrics
        missing = [o.metric for o in spec.objectives if o.metric not in metrics]
        if missing:
            raise ValueError(f"training logged no metric {missing[0]} (it logged {sorted(metrics)})")
        values = [float(metrics[o.metric]) for o in spec.objectives]
        self.seen.append(values)
        return values[0] if not spec.multi else tuple(values)

    def worth_logging(self, metrics: Mapping[str, float]) -> bool:
        """Log a trial's model only if it may be chosen: it is as good as the best so far (a tie may be
        chosen too), or no trial seen is better in one objective and as good in all."""
        values = [metrics.get(o.metric) for o in self.spec.objectives]
        if any(v is None for v in values):
            return True
        signs = [1.0 if o.direction == "minimize" else -1.0 for o in self.spec.objectives]
        mine = [s * v for s, v in zip(signs, values)]
        for seen in self.seen:
            theirs = [s * v for s, v in zip(signs, seen)]
            if all(a <= b for a, b in zip(theirs, mine)) and any(a < b for a, b in zip(theirs, mine)):
                return False
        return True


def run_worker(spec: WorkerSpec, callbacks: Sequence[Callable] = (), seed_offset: int = 0) -> None:
    """Run trials until this invocation has its share (see the module docstring)."""
    study = open_study(spec, seed_offset)
    local = storage_kind(spec.storage) != "postgresql"  # one machine: dead workers are found by process id
    if local:
        fail_dead_trials(study, spec, gone, "its worker process is gone")
    checked = time.monotonic()
    counts = progress(study, spec.invocation)
    if enough(counts, spec.target):
        return
    # At most this many of the invocation's trials are done: what was done when this worker started, plus
    # what it finished since. Alone in its invocation, a worker need not read the study while that is short.
    at_most = counts["done"]

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal at_most, checked
        record_trial(runlog, trial)
        interrupts.check()  # a Ctrl-C that Optuna's bookkeeping dropped: no further trial starts
        if local and time.monotonic() - checked > spec.heartbeat.grace_period:  # as often as a heartbeat goes stale
            fail_dead_trials(study, spec, gone, "its worker process is gone")
            checked = time.monotonic()
        at_most += 1
        if spec.workers == 1 and at_most < spec.target:
            stop = False
        elif far_from_target(study, spec):
            stop = False
        else:
            stop = enough(progress(study, spec.invocation), spec.target)
        if stop or (spec.deadline and time.time() > spec.deadline):
            study.stop()

    timeout = None if spec.deadline is None else max(0.0, spec.deadline - time.time())
    with _young_heap(), BackgroundRunLog(spec.settings.tracking_uri) as runlog, warnings.catch_warnings(), \
            quiet_interrupts():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        objective = TrialObjective(spec, study, runlog)
        try:
            study.optimize(objective, timeout=timeout, callbacks=[after, *callbacks], catch=(Exception,),
                           gc_after_trial=False)
        except KeyboardInterrupt:
            if objective.interrupted is not None:
                requeue_interrupted(study, objective.interrupted, runlog)
            raise


@contextlib.contextmanager
def _young_heap():
    """While trials run, Python's full garbage collections look only at what was made since they began.

    A worker's heap holds MLflow, Optuna, SQLAlchemy, pandas and the use case's modules, a few hundred
    thousand objects that live as long as the process; a trial allocates enough that about every tenth
    trial sets off a full collection, and walking that heap took 250 ms of CPU (on whichever thread
    tripped it, the trial's own included): about 20 ms a trial, as much as the rest of the layout's
    bookkeeping. ``gc.freeze`` moves what exists now out of the collector's reach until ``unfreeze``
    gives it back (cyclic garbage among it waits until then). Left alone where the process froze
    objects itself or runs without the collector."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def worker_main(spec: WorkerSpec, seed_offset: int, environ: Mapping[str, str] | None = None,
                cwd: str | None = None) -> None:
    """Entry point of a worker process; Ctrl-C ends it quietly (its trial is marked FAIL). ``environ`` and
    ``cwd``: the starting process's, as they are now (a fork server's child inherits the server's)."""
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    if cwd is not None:
        os.chdir(cwd)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with interrupts.catching():
            run_worker(spec, seed_offset=seed_offset)
    except KeyboardInterrupt:
        pass

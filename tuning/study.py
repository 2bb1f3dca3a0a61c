"""An Optuna study mapped onto MLflow: one parent run per study, one nested run per trial.

``tune`` is the coordinator: it opens (or resumes) the study and its parent run,
runs ``workers`` worker processes on it (or the trials itself when ``workers=1``),
notices workers that died, and finalizes the parent run with the summary, the
plots and, for several objectives, the Pareto front and the trial picked from it.

Re-running with the same study name (and storage) resumes the study and adds
``n_trials`` more trials under the same parent run; the same call on another
machine, against the same PostgreSQL storage and tracking server, joins it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence, TextIO

import mlflow
import optuna
from mlflow.environment_variables import MLFLOW_RUN_ID

from civicml.access import require
from civicml.errors import Failed, InvalidInput
from civicml.settings import Settings
from civicml.tracking import experiment_id, tracking_client
from civicml.tags import (ATTR_BASELINE, TAG_BEST_PARAMS, TAG_BEST_RUN_ID, TAG_BEST_TRIAL, TAG_DIRECTION,
                          TAG_FAMILIES, TAG_MODEL_URI, TAG_OBJECTIVES, TAG_PARETO_FRONT, TAG_PRUNER,
                          TAG_SAMPLER, TAG_SELECTION_RULE, TAG_STORAGE_KIND, TAG_STUDY, TAG_STUDY_RUN_ID,
                          TAG_USE_CASE)
from projects import Dataset, UseCase
from projects.training import dataset_description
from tuning.choices import make_pruner, make_sampler
from tuning.objectives import (Objective, SelectionRule, check_objectives, pareto_table, parse_objectives,
                               trial_metrics)
from tuning.runs import ATTR_FAILURE, ATTR_RUN, end_leftover_runs, figures_for, finalize, parent_run, trials_table
from tuning.space import grid, merged_space
from tuning.storage import Heartbeat, check_workers, open_storage, storage_kind, study_lock
from tuning.faults import fail_dead_trials
from tuning.worker import WorkerSpec, open_study, progress, run_worker, worker_main

__all__ = ["StudyPlan", "StudyResult", "TuneOptions", "plan_study", "tune"]

State = optuna.trial.TrialState


@dataclass
class StudyResult:
    study_name: str
    storage: str
    parent_run_id: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_id: str | None = None
    best_model_uri: str | None = None
    seconds: float = 0.0
    objectives: list[str] = field(default_factory=list)
    best_values: list[float] | None = None  # every objective's value of the chosen trial
    pareto_front: list[int] = field(default_factory=list)  # trial numbers (several objectives)
    selection_rule: str | None = None
    n_trials: int = 0  # trials in the study, all invocations and states
    n_retried: int = 0  # trials of dead workers that were run again
    workers: int = 1
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StudyPlan:
    """A study's arguments, checked: what :func:`plan_study` returns before any data or store is touched."""

    families: list[str]
    spaces: dict[str, Any]
    objectives: list[Objective]
    rule: SelectionRule
    study_name: str
    storage: str


@dataclass(frozen=True)
class TuneOptions:
    """What a study runs: how many trials, over which families, where it is stored and how it samples.
    ``objectives`` (default: the use case's metric) may name several, e.g. ``"macro_f1:max,latency_p95_ms:min"``;
    ``select`` then picks the trial to hand on from the Pareto front (``"knee"`` by default, or constraints
    such as ``"latency_p95_ms<=5"``). ``workers`` processes share the study; SQLite storage takes one."""

    n_trials: int = 10
    families: Sequence[str] | None = None
    study_name: str | None = None
    storage: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    timeout: float | None = None
    overrides: Mapping[str, Mapping] | None = None
    objectives: str | Sequence[str] | None = None
    select: str | SelectionRule | None = None
    workers: int = 1
    latency_rows: int = 50


def _options(options: TuneOptions | None, choices: dict) -> TuneOptions:
    """``options`` with keyword ``choices`` laid over it; an unknown keyword is a :class:`TypeError` as for
    any call."""
    return replace(options or TuneOptions(), **choices)


def plan_study(use_case: UseCase, options: TuneOptions | None = None, *, settings: Settings | None = None,
               **choices) -> StudyPlan:
    """Check a study's arguments (and that the caller may tune) without writing anything; raise
    :class:`~civicml.errors.CivicMLError` for the first that is wrong. :func:`tune` calls it first; the CLI
    calls it before it generates any data. ``choices`` are :class:`TuneOptions` fields given by keyword."""
    o = _options(options, choices)
    n_trials, families, overrides, storage, workers = o.n_trials, o.families, o.overrides, o.storage, o.workers
    sampler, pruner, objectives, select, study_name = o.sampler, o.pruner, o.objectives, o.select, o.study_name
    settings = settings or Settings.from_env()
    require(settings, "tune")
    if n_trials < 1:
        raise InvalidInput(f"n_trials must be at least 1, got {n_trials}")
    families = list(families or use_case.families)
    for name in families:
        use_case.family(name)  # raises NotFound for an unknown family
    for name in overrides or {}:
        if name not in use_case.families:
            raise InvalidInput(f"search space override for '{name}': use case '{use_case.name}' has no such "
                               f"family (known: {', '.join(sorted(use_case.families))})")
    spaces = {f: merged_space(f, use_case.family(f).space, overrides) for f in families}
    goals = parse_objectives(objectives, use_case.metric, use_case.direction)
    check_objectives(goals, use_case.logged_metrics())
    rule = select if isinstance(select, SelectionRule) else SelectionRule.parse(select)
    storage = storage or settings.optuna_storage
    storage_kind(storage)
    check_workers(storage, workers)
    make_pruner(pruner)
    if sampler == "grid":
        if len(families) > 1:
            raise InvalidInput("the grid sampler takes one model family at a time (--families NAME)")
        make_sampler(sampler, None, grid(spaces[families[0]], prefix=f"{families[0]}."))
    else:
        make_sampler(sampler)
    return StudyPlan(families, spaces, goals, rule, study_name or f"{use_case.name}-study", storage)


def tune(use_case: UseCase, dataset: Dataset, options: TuneOptions | None = None, *,
         settings: Settings | None = None, progress: bool | TextIO = False, heartbeat: Heartbeat | None = None,
         **choices) -> StudyResult:
    """Run ``n_trials`` more trials of a study over ``families`` of ``use_case``.

    ``options`` (a :class:`TuneOptions`) or its fields given by keyword
    (``n_trials=20, storage=...``) say what the study runs. ``heartbeat`` sets how fast a dead worker's trial is
    noticed on RDB storages. ``progress``: True shows it on stderr, a text
    stream on that stream (a live bar on a terminal, a line per trial elsewhere).

    Arguments are checked first (:func:`plan_study`). A study in which no trial
    completes raises :class:`~civicml.errors.Failed` naming the first failure; if
    this call created the study, the study and its MLflow runs are removed first.
    The process environment (MLflow's variables, its tracking URI) is as it was
    when ``tune`` returns or raises.
    """
    settings = settings or Settings.from_env()
    options = _options(options, choices)
    plan = plan_study(use_case, options, settings=settings)
    with _environment_restored():
        return _tune(use_case, dataset, plan, options, settings=settings, progress=progress, heartbeat=heartbeat)


_MLFLOW_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
                     MLFLOW_RUN_ID.name)


@contextlib.contextmanager
def _environment_restored():
    """MLflow exports a run's experiment and id as environment variables while trainings run; put those
    back as they were (each training puts back the tracking URI itself: :func:`civicml.tracking.fluent`)."""
    saved = {name: os.environ.get(name) for name in _MLFLOW_VARIABLES}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _tune(use_case: UseCase, dataset: Dataset, plan: StudyPlan, options: TuneOptions, *, settings: Settings,
          progress: bool | TextIO, heartbeat: Heartbeat | None) -> StudyResult:
    n_trials, sampler, pruner, seed, workers = (options.n_trials, options.sampler, options.pruner, options.seed,
                                                options.workers)
    timeout, latency_rows = options.timeout, options.latency_rows
    storage, study_name, goals, rule = plan.storage, plan.study_name, plan.objectives, plan.rule
    kind = storage_kind(storage)
    if storage.startswith("sqlite:///"):
        settings.ensure_home()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    launcher_run = os.environ.pop(MLFLOW_RUN_ID.name, None)  # `mlflow run` made a run for this entry point
    client = tracking_client(settings)
    exp_id = experiment_id(settings, use_case.name)
    spec = WorkerSpec(use_case=use_case, dataset=dataset, settings=settings, study_name=study_name, storage=storage,
                      families=plan.families, spaces=plan.spaces, objectives=goals, parent_run_id="",
                      experiment_id=exp_id, invocation=uuid.uuid4().hex[:12], target=n_trials, sampler=sampler,
                      pruner=pruner, seed=seed, heartbeat=heartbeat or Heartbeat(), latency_rows=latency_rows,
                      workers=workers, deadline=None if timeout is None else time.time() + timeout)
    tags = {TAG_STORAGE_KIND: kind, TAG_SAMPLER: sampler,
            TAG_PRUNER: "none" if len(goals) > 1 else pruner,
            TAG_DIRECTION: ",".join(o.direction for o in goals),
            TAG_OBJECTIVES: ",".join(map(str, goals)), TAG_USE_CASE: use_case.name,
            TAG_FAMILIES: ",".join(plan.families)}
    study, invocation_index = _open_parent(spec, client, tags)
    started = time.perf_counter()
    if launcher_run:
        _tag(client, launcher_run, {TAG_STUDY: study_name, TAG_STUDY_RUN_ID: spec.parent_run_id})
    before = study.get_trials(deepcopy=False)
    seed_offset = 7919 * len(before)  # a resumed study must not replay its samples
    spec.trials_before, spec.waiting_before = len(before), sum(1 for t in before if t.state == State.WAITING)
    bar = _progress_bar(n_trials, study_name, progress) if progress else None
    status, interrupted = "FINISHED", False
    try:
        if bar:
            bar.start()
        if workers == 1:
            _import_plotting()
            _run_here(spec, study, bar, seed_offset)
        else:
            _run_processes(spec, study, workers, bar, seed_offset)
    except KeyboardInterrupt:
        status, interrupted = "KILLED", True
    finally:
        if bar:
            bar.stop()
    if not interrupted and not study.get_trials(deepcopy=False, states=(State.COMPLETE,)):
        _fail_empty_study(client, spec, study, invocation_index == 1)
    result = _finish(client, spec, study, rule, storage, time.perf_counter() - started, status, invocation_index)
    result.workers, result.interrupted = workers, interrupted
    if launcher_run:
        _tag(client, launcher_run, {TAG_BEST_TRIAL: str(result.best_trial),
                                       TAG_BEST_RUN_ID: str(result.best_run_id)})
    if interrupted:
        raise KeyboardInterrupt
    return result


def _fail_empty_study(client, spec: WorkerSpec, study: optuna.Study, created_here: bool) -> None:
    """No trial of the study completed: raise :class:`Failed` naming the first failure. A study this call
    created is removed, with its MLflow runs (deleted; ``mlflow gc`` purges them), so that a command that
    failed on its own arguments leaves nothing behind; a resumed study's parent run ends FAILED."""
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == State.FAIL]
    first = failed[0] if failed else None
    why = (first.user_attrs.get(ATTR_FAILURE) or "failed") if first else "no trial ran"
    where = f"trial {first.number} failed: {why}" if first else why
    if created_here:
        end_leftover_runs(client, study, spec.experiment_id, spec.parent_run_id)
        run_ids = [t.user_attrs.get(ATTR_RUN) for t in trials if t.user_attrs.get(ATTR_RUN)]
        for run_id in [*run_ids, spec.parent_run_id]:
            try:
                client.delete_run(run_id)
            except mlflow.exceptions.MlflowException:
                pass
        optuna.delete_study(study_name=study.study_name, storage=open_storage(spec.storage, spec.heartbeat))
        raise Failed(f"no trial of study '{study.study_name}' completed ({where}); the study was removed")
    client.set_terminated(spec.parent_run_id, status="FAILED")
    raise Failed(f"no trial of study '{study.study_name}' completed ({where})")


def _open_parent(spec: WorkerSpec, client, tags: dict[str, str]) -> tuple[optuna.Study, int]:
    """Open the study, find or create its parent run (into ``spec``) and count this invocation.

    Held under the study's lock: two machines starting a new study of the same
    name at once would otherwise both find no parent run and create one each, and
    both read the same invocation count (and both declare the objectives).
    """
    with study_lock(spec.storage, spec.study_name):
        study = open_study(spec)
        _check_same_objectives(study, spec.objectives)
        spec.parent_run_id = parent_run(client, study, spec.experiment_id, tags)
        if not study.get_trials(deepcopy=False):
            _enqueue_baselines(study, spec)
        invocation_index = int(study.user_attrs.get("invocations", 0)) + 1
        study.set_user_attr("invocations", invocation_index)
    return study, invocation_index


def _enqueue_baselines(study: optuna.Study, spec: WorkerSpec) -> None:
    """A new study's first trials are the use case's ``baseline_trials`` ({family: params}, optional), so the
    search always holds the plain baseline a tuned model must beat; one whose family is not searched or
    whose values the (overridden) space does not hold is left out. Not with the grid sampler."""
    if spec.sampler == "grid":
        return
    for family, params in dict(getattr(spec.use_case, "baseline_trials", None) or {}).items():
        space = spec.spaces.get(family)
        if space is None or set(params) != set(space) or not all(_holds(space[k], v) for k, v in params.items()):
            continue
        fixed = {f"{family}.{k}": v for k, v in params.items()}
        if len(spec.families) > 1:
            fixed["family"] = family
        study.enqueue_trial(fixed, user_attrs={ATTR_BASELINE: True})


def _holds(param, value) -> bool:
    from projects.space import Categorical, Int

    if isinstance(param, Categorical):
        return value in list(param.choices)
    if not param.low <= value <= param.high:
        return False
    return not isinstance(param, Int) or (int(value) - param.low) % param.step == 0


def _tag(client, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def _check_same_objectives(study: optuna.Study, goals: list[Objective]) -> None:
    declared = study.user_attrs.get("objectives")
    mine = [str(o) for o in goals]
    if declared is not None and declared != mine:
        raise InvalidInput(f"study '{study.study_name}' optimises {','.join(declared)}, not {','.join(mine)}; "
                           f"use another --study name")
    if declared is None:
        study.set_user_attr("objectives", mine)
    if study.metric_names is None:  # Optuna's own name for each value (the dashboard shows them)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in goals])


def _progress_bar(total: int, title: str, progress: bool | TextIO):
    from tuning.progress import ProgressBar

    return ProgressBar(total, title, None if progress is True else progress)


def _import_plotting() -> None:
    """Trials draw their curves with matplotlib: import it before the first one starts. A Ctrl-C that cuts an
    import short leaves that module broken for the rest of the process; within a trial, that is likely."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _run_here(spec: WorkerSpec, study: optuna.Study, bar, seed_offset: int) -> None:
    callbacks = [lambda s, t: bar.show(progress(s, spec.invocation), _best_text(s, spec))] if bar else []
    run_worker(spec, callbacks, seed_offset)
    _finish_leftovers(spec, study, bar, seed_offset)


def _run_processes(spec: WorkerSpec, study: optuna.Study, workers: int, bar, seed_offset: int) -> None:
    """Start ``workers`` processes, watch them, fail the trials of any that die, finish what is left."""
    context = _process_context()
    here = (dict(os.environ), os.getcwd())  # a fork server's children start with its own, older environment
    procs = [context.Process(target=worker_main, args=(spec, seed_offset + i, *here), name=f"civicml-tune-{i}",
                             daemon=False) for i in range(workers)]
    try:
        for proc in procs:
            proc.start()
        host = socket.gethostname()
        dead: set[int] = set()
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            for proc in procs:
                if not proc.is_alive() and proc.exitcode not in (0, None) and proc.pid not in dead:
                    dead.add(proc.pid)
                    _fail_trials_of(study, spec, host, proc.pid, f"worker process exited with code {proc.exitcode}")
            if bar:
                bar.show(progress(study, spec.invocation), _best_text(study, spec))
        for proc in procs:
            if proc.exitcode not in (0, None) and proc.pid not in dead:
                _fail_trials_of(study, spec, host, proc.pid, f"worker process exited with code {proc.exitcode}")
    except KeyboardInterrupt:
        for proc in procs:  # they had Ctrl-C too; give them a moment to mark their trials
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        raise
    _finish_leftovers(spec, study, bar, seed_offset + workers)


def _process_context():
    """Worker processes forked from a fork server that imported the worker's modules once (``forkserver``),
    where the platform has one; else started afresh (``spawn``). A spawned worker imports MLflow, Optuna and
    the use case itself: about 3 s of CPU each, so 8 workers on 2 cores spent their first 12 s importing.
    The server is a clean, single-threaded process: nothing but imports happened in it before it forks."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(_PRELOAD))
    return context


# What a worker imports by its first trial's end besides tuning.worker: the stores' SQL layers (Optuna's and
# MLflow's, with their drivers and MLflow's migrations), pyplot (a training closes its figures) and GitPython
# (a run's source version). A name that does not import is skipped by the fork server.
_PRELOAD = ("tuning.worker", "sqlalchemy", "psycopg2", "optuna.storages._rdb.storage",
            "mlflow.store.tracking.sqlalchemy_store", "alembic", "matplotlib.pyplot", "git")


def _fail_trials_of(study: optuna.Study, spec: WorkerSpec, host: str, pid: int, why: str) -> None:
    """A local worker died: its RUNNING trials are dead now, no need to wait for their heartbeat to go stale."""
    fail_dead_trials(study, spec, lambda worker: worker.get("host") == host and worker.get("pid") == pid, why)


def _finish_leftovers(spec: WorkerSpec, study: optuna.Study, bar, seed_offset: int) -> None:
    """Trials still owed after the workers stopped: a dead worker's (stale) trial, a queued retry."""
    while not (spec.deadline and time.time() > spec.deadline):
        _fail_stale(study)
        counts = progress(study, spec.invocation)
        if counts["done"] >= spec.target and counts["waiting"] == 0:
            return
        if not counts["running"] and not counts["waiting"]:
            return  # the workers stopped on their own: a used-up grid, the timeout
        if counts["running"] and not counts["waiting"]:
            if storage_kind(spec.storage) != "postgresql":
                return  # one machine: the workers' exit codes and process checks found the dead ones
            time.sleep(spec.heartbeat.interval)  # wait for it to finish or go stale
            continue
        run_worker(spec, seed_offset=seed_offset)


def _fail_stale(study: optuna.Study) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _best_text(study: optuna.Study, spec: WorkerSpec) -> str:
    try:
        if spec.multi:
            return f"Pareto front {len(study.best_trials)} trials"
        best = study.best_trial
        return f"best {best.value:.4f} (trial {best.number})"
    except ValueError:
        return "no complete trial yet"


def _finish(client, spec: WorkerSpec, study: optuna.Study, rule: SelectionRule, storage: str, seconds: float,
            status: str, invocation_index: int) -> StudyResult:
    end_leftover_runs(client, study, spec.experiment_id, spec.parent_run_id)
    trials = study.get_trials(deepcopy=False)
    count = lambda s: sum(1 for t in trials if t.state == s)  # noqa: E731
    goals = spec.objectives
    front = [t for t in study.best_trials] if spec.multi else []
    chosen = None
    recorded = _recorded_metrics(client, spec) if rule.constraints else None
    try:
        chosen = rule.pick(front, goals, recorded) if spec.multi else study.best_trial
    except ValueError:  # no complete trial
        pass
    if chosen is not None and not spec.multi and rule.constraints:
        within = rule.pick([t for t in trials if t.state == State.COMPLETE], goals, recorded)
        chosen = within
    retried = sum(1 for t in trials if t.system_attrs.get("failed_trial") is not None)
    result = StudyResult(
        study_name=study.study_name, storage=storage, parent_run_id=spec.parent_run_id,
        n_complete=count(State.COMPLETE), n_pruned=count(State.PRUNED), n_failed=count(State.FAIL),
        best_trial=chosen.number if chosen else None,
        best_value=chosen.values[0] if chosen else None,
        best_params=dict(chosen.params) if chosen else {},
        best_run_id=chosen.user_attrs.get(ATTR_RUN) if chosen else None,
        best_model_uri=_model_uri(client, chosen) if chosen else None, seconds=seconds,
        objectives=[str(o) for o in goals], best_values=list(chosen.values) if chosen else None,
        pareto_front=sorted(t.number for t in front), selection_rule=str(rule) if spec.multi or rule.constraints
        else None, n_trials=len(trials), n_retried=retried)
    with study_lock(storage, study.study_name):  # machines that finish together add up their times
        total_wall = float(study.user_attrs.get("wall_seconds", 0.0)) + seconds
        study.set_user_attr("wall_seconds", total_wall)
    summary: dict[str, Any] = {
        "n_complete": result.n_complete, "n_pruned": result.n_pruned, "n_failed": result.n_failed,
        "n_trials": result.n_trials, "n_retried": retried, "wall_seconds": seconds,
        "total_wall_seconds": total_wall, "invocation": invocation_index,
        TAG_BEST_TRIAL: str(result.best_trial), TAG_BEST_RUN_ID: str(result.best_run_id),
        TAG_BEST_PARAMS: result.best_params,
    }
    if chosen is not None:
        for objective, value in zip(goals, chosen.values):
            summary[f"best_{objective.metric}"] = value
        if not spec.multi:
            summary["best_value"] = chosen.value
    tables = {}
    if spec.multi:
        summary["n_pareto"] = len(front)
        summary[TAG_SELECTION_RULE] = str(rule)
        summary[TAG_PARETO_FRONT] = result.pareto_front
        tables["pareto_front.json"] = pareto_table(front, goals, result.best_trial)
    client.log_dict(spec.parent_run_id, dataset_description(spec.dataset), "data/dataset.json")
    try:
        figures = figures_for(study, goals)
    except Exception:
        if status != "KILLED":
            raise
        figures = {}  # after Ctrl-C: an import it cut short fails again; the study's state matters, not its plots
    if spec.multi and chosen is not None:
        _mark_chosen(figures, chosen, goals)
    finalize(client, spec.parent_run_id, study, summary, figures, tables, status)
    return result


def _recorded_metrics(client, spec: WorkerSpec):
    """A trial's metrics, as its MLflow run holds them (all trial runs of the study, read once, when a
    selection rule's constraints need metrics besides the objectives)."""
    by_run: dict[str, dict[str, float]] = {}
    token = None
    while True:
        page = client.search_runs([spec.experiment_id], max_results=1000, page_token=token,
                                  filter_string=f"tags.`mlflow.parentRunId` = '{spec.parent_run_id}'")
        by_run.update({run.info.run_id: dict(run.data.metrics) for run in page})
        token = page.token
        if not token:
            break
    return lambda trial: by_run.get(trial.user_attrs.get(ATTR_RUN)) or trial.user_attrs.get("metrics", {})


def _model_uri(client, trial: optuna.trial.FrozenTrial) -> str | None:
    """The model a trial logged: its run's ``civicml.model_uri`` tag (the trial records only the run)."""
    run_id = trial.user_attrs.get(ATTR_RUN)
    if not run_id:
        return None
    try:
        return client.get_run(run_id).data.tags.get(TAG_MODEL_URI)
    except mlflow.exceptions.MlflowException:
        return None


def _mark_chosen(figures: dict, chosen, goals) -> None:
    figure = figures.get("plots/pareto_front.png")
    if figure is None or len(goals) != 2:
        return
    ax = figure.axes[0]
    ax.scatter([chosen.values[0]], [chosen.values[1]], s=160, facecolors="none", edgecolors="black", linewidths=2,
               label=f"chosen: trial {chosen.number}", zorder=5)
    ax.legend(loc="best")


# re-exported for callers that read a study's trials table
__all__ += ["trials_table", "trial_metrics"]

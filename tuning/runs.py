"""The MLflow side of a study: one parent run per study, one nested run per trial.

The parent run is found by tag (and remembered as a study user attribute), so a
resumed study, another worker process or another machine all nest their trial
runs under the same parent. Trial runs name their parent with the
``mlflow.parentRunId`` tag instead of an active parent run, so no worker ever
ends the parent: only the coordinating process finalizes it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import mlflow
import optuna
from mlflow.entities import Metric, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from civicml.tags import TAG_FAILURE, TAG_ROLE, TAG_STUDY, TAG_TRIAL, TAG_TRIAL_STATE

ATTR_PARENT = "mlflow_parent_run_id"
ATTR_RUN = "run_id"
ATTR_FAILURE = "failure"  # why a failed trial failed: the first line of its error
ATTR_REQUEUED = "requeued_from"  # system attr: the trial number Ctrl-C stopped, whose parameters this one runs


def parent_run(client: mlflow.MlflowClient, study: optuna.Study, experiment_id: str, tags: dict[str, str]) -> str:
    """The study's parent run: found (and set RUNNING again) or created.

    Call it under :func:`tuning.storage.study_lock`, or two processes starting the
    same new study both create one. Inside the lock what it reads is fresh:
    ``study.user_attrs`` asks the storage on every access (Optuna's ``_CachedStorage``
    caches trials, never study attributes; the journal storage replays the file
    first), and the tag search asks the tracking store.
    """
    run_id = study.user_attrs.get(ATTR_PARENT)
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage == "active":
                client.update_run(run_id, status="RUNNING")
                return run_id
        except mlflow.exceptions.MlflowException:
            pass  # another tracking server, or the run was deleted: look by tag
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_STUDY}` = '{study.study_name}' "
                               f"and tags.`{TAG_ROLE}` = 'study'", max_results=1, order_by=["start_time ASC"])
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(experiment_id, run_name=study.study_name,
                                   tags={**tags, TAG_STUDY: study.study_name, TAG_ROLE: "study"}).info.run_id
    study.set_user_attr(ATTR_PARENT, run_id)
    return run_id


def trial_tags(study_name: str, number: int, parent_run_id: str) -> dict[str, str]:
    return {TAG_STUDY: study_name, TAG_TRIAL: str(number), TAG_ROLE: "trial", MLFLOW_PARENT_RUN_ID: parent_run_id}


def record_trial(runlog, trial: optuna.trial.FrozenTrial) -> None:
    """Write the trial's final Optuna state and duration onto its (already ended) run, through a
    :class:`projects.runlog.RunLog`."""
    run_id = trial.user_attrs.get(ATTR_RUN)
    if not run_id:
        return
    seconds = trial.duration.total_seconds() if trial.duration else float("nan")
    runlog.log(run_id, metrics={"trial_seconds": seconds}, tags={TAG_TRIAL_STATE: trial.state.name})


def fail_trial_run(client: mlflow.MlflowClient, trial: optuna.trial.FrozenTrial, why: str) -> str | None:
    """Mark a dead trial's MLflow run FAILED (it would otherwise stay RUNNING forever)."""
    run_id = trial.user_attrs.get(ATTR_RUN)
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    client.log_batch(run_id, tags=[RunTag(TAG_TRIAL_STATE, "FAIL"), RunTag(TAG_FAILURE, why)])
    if run.info.status == "RUNNING":
        client.set_terminated(run_id, status="FAILED")
    return run_id


_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def end_leftover_runs(client: mlflow.MlflowClient, study: optuna.Study, experiment_id: str,
                      parent_run_id: str) -> list[str]:
    """End the trial runs still RUNNING whose trials have finished: a worker writes a trial run's end from
    its background log, and a worker killed before it wrote them leaves such runs behind."""
    finished = {t.user_attrs.get(ATTR_RUN): t.state.name for t in study.get_trials(deepcopy=False)
                if t.state.name in _RUN_STATUS and t.user_attrs.get(ATTR_RUN)}
    ended = []
    for run in client.search_runs([experiment_id], max_results=1000,
                                  filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' "
                                                f"and attributes.status = 'RUNNING'"):
        state = finished.get(run.info.run_id)
        if state is not None:
            client.set_terminated(run.info.run_id, status=_RUN_STATUS[state])
            ended.append(run.info.run_id)
    return ended


def finalize(client: mlflow.MlflowClient, run_id: str, study: optuna.Study, summary: dict[str, Any],
             figures: dict[str, Any], tables: dict[str, dict], status: str) -> None:
    """Summary metrics, tags, plots and tables on the parent run; then end it with ``status``."""
    import matplotlib.pyplot as plt

    metrics = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and v is not None and not math.isnan(float(v))}
    client.log_batch(run_id, metrics=[Metric(k, v, _now_ms(), int(summary.get("invocation", 0)))
                                      for k, v in metrics.items()],
                     tags=[RunTag(k, v if isinstance(v, str) else json.dumps(v, default=str))
                           for k, v in summary.items() if k.startswith("civicml.")])
    for path, figure in figures.items():
        client.log_figure(run_id, figure, path)
        plt.close(figure)
    for path, table in tables.items():
        client.log_table(run_id, table, path)
    client.log_dict(run_id, trials_table(study), "trials.json")
    client.set_terminated(run_id, status=status)


def trials_table(study: optuna.Study) -> dict[str, list]:
    trials = study.get_trials(deepcopy=False)
    return {
        "trial": [t.number for t in trials],
        "state": [t.state.name for t in trials],
        "values": [t.values for t in trials],
        "params": [t.params for t in trials],
        "seconds": [t.duration.total_seconds() if t.duration else None for t in trials],
        "run_id": [t.user_attrs.get(ATTR_RUN) for t in trials],
        "worker": [t.user_attrs.get("worker") for t in trials],
        "retry_of": [t.system_attrs.get("failed_trial") for t in trials],
    }


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def run_name(number: int) -> dict[str, str]:
    return {MLFLOW_RUN_NAME: f"trial-{number}"}


def figures_for(study: optuna.Study, objectives: Sequence) -> dict[str, Any]:
    """Optimisation history, parameter importances, parallel coordinates and (multi) the Pareto front.

    Uses ``optuna.visualization.matplotlib`` (matplotlib only, no plotly). A plot that
    cannot be drawn yet (one complete trial, a single parameter) is left out.
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    names = [o.metric for o in objectives]
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not complete:
        return {}
    plots: dict[str, Any] = {}
    multi = len(objectives) > 1
    targets = [(None, names[0])] if not multi else [((lambda t, i=i: t.values[i]), n) for i, n in enumerate(names)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for target, name in targets:
            suffix = f"_{name}" if multi else ""
            for key, draw in (("optimization_history", ovm.plot_optimization_history),
                              ("param_importances", ovm.plot_param_importances),
                              ("parallel_coordinate", ovm.plot_parallel_coordinate)):
                if key == "param_importances" and len(complete) < 2:
                    continue
                try:
                    ax = draw(study, target=target, target_name=name)
                except (ValueError, RuntimeError, ZeroDivisionError, IndexError):
                    continue
                figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                figure.set_size_inches(8, 5)
                figure.tight_layout()
                plots[f"plots/{key}{suffix}.png"] = figure
        if multi and len(objectives) in (2, 3):
            try:
                ax = ovm.plot_pareto_front(study, target_names=names)
                plots["plots/pareto_front.png"] = ax.figure
            except (ValueError, RuntimeError):
                pass
    return plots

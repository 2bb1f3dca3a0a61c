"""The run log a tuning worker writes through: batches, holds, ends runs, reports failed writes; and the
study's clean-up of trial runs a killed worker left RUNNING. Real MLflow and Optuna stores on SQLite."""

from __future__ import annotations

import time

import mlflow
import optuna
import pytest

from civicml.tracking import configure, experiment_id
from projects.runlog import BackgroundRunLog, RunLog
from tuning.runs import ATTR_RUN, end_leftover_runs


@pytest.fixture
def client(settings):
    return configure(settings)


def test_background_log_holds_merges_and_ends_the_run_with_its_real_end_time(settings, client):
    exp = experiment_id(settings, "runlog")
    log = BackgroundRunLog(settings.tracking_uri)
    with mlflow.start_run(experiment_id=exp) as run:
        run_id = run.info.run_id
        log.hold()
        log.log(run_id, params={"C": 1.5}, tags={"stage": "fit"})
        for step in range(5):
            log.log(run_id, metrics={"valid_mae": 10.0 - step}, step=step)
        # held: the writer takes what is logged and stops at the hold. settle() waits until it has done
        # all it may do now: with a hold that did not hold, that is writing it all, and this fails.
        assert log.settle()
        assert client.get_run(run_id).data.params == {}
        ended_at = int(time.time() * 1000)
        log.end_run(run_id, "KILLED")
        assert mlflow.active_run() is None  # left at once, written later
    log.close()
    stored = client.get_run(run_id)
    assert stored.data.params == {"C": "1.5"} and stored.data.tags["stage"] == "fit"
    history = client.get_metric_history(run_id, "valid_mae")
    assert [(m.step, m.value) for m in history] == [(s, 10.0 - s) for s in range(5)]
    assert stored.info.status == "KILLED" and abs(stored.info.end_time - ended_at) < 1000


def test_a_failed_write_is_raised_by_flush_and_the_other_runs_are_written(settings, client):
    exp = experiment_id(settings, "runlog")
    good = client.create_run(exp).info.run_id
    log = BackgroundRunLog(settings.tracking_uri)
    log.log("0" * 32, metrics={"x": 1.0})  # no such run
    log.log(good, metrics={"x": 2.0})
    with pytest.raises(mlflow.exceptions.MlflowException):
        log.flush()
    assert client.get_run(good).data.metrics == {"x": 2.0}
    log.flush()  # the error was reported once
    log.close()


def test_the_plain_log_writes_at_once(settings, client):
    run_id = client.create_run(experiment_id(settings, "runlog")).info.run_id
    RunLog(settings.tracking_uri).log(run_id, metrics={"macro_f1": 0.9}, tags={"k": "v"})
    assert client.get_run(run_id).data.metrics == {"macro_f1": 0.9}


def test_study_finish_ends_the_runs_a_killed_worker_left_running(settings, client):
    exp = experiment_id(settings, "runlog")
    parent = client.create_run(exp).info.run_id
    study = optuna.create_study()
    runs = {state: client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
            for state in ("COMPLETE", "PRUNED", "RUNNING")}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=1.0,
                                              user_attrs={ATTR_RUN: runs["COMPLETE"]}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                              user_attrs={ATTR_RUN: runs["PRUNED"]}))
    # runs["RUNNING"] has no finished trial: another machine may still be training it
    ended = end_leftover_runs(client, study, exp, parent)
    assert sorted(ended) == sorted([runs["COMPLETE"], runs["PRUNED"]])
    assert client.get_run(runs["COMPLETE"]).info.status == "FINISHED"
    assert client.get_run(runs["PRUNED"]).info.status == "KILLED"
    assert client.get_run(runs["RUNNING"]).info.status == "RUNNING"  # its trial may still be training elsewhere

"""The run log a tuning worker writes through: batches, holds, ends runs, reports failed writes; and the
study's clean-up of trial runs a killed worker left RUNNING. Real MLflow and Optuna stores on SQLite."""

from __future__ import annotations

import threading
import time

import mlflow
import optuna
import pytest

from civicml.tracking import configure, experiment_id
from projects.runlog import BackgroundRunLog, PendingRun, RunLog
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


def test_the_background_log_creates_a_run_as_start_run_would_while_the_caller_goes_on(settings, client):
    exp = experiment_id(settings, "runlog")
    parent = client.create_run(exp).info.run_id
    log = BackgroundRunLog(settings.tracking_uri)
    created = []
    log.hold()  # as a tuning worker holds the writes during its bookkeeping: the creation is not held
    before = int(time.time() * 1000)
    pending = log.start_run(exp, "trial-3", nested=True, tags={"mlflow.parentRunId": parent, "k": "v"},
                            created=lambda run_id: created.append((run_id, threading.current_thread().name)))
    called = int(time.time() * 1000)
    assert isinstance(pending, PendingRun) and mlflow.active_run() is None
    log.log(pending, params={"C": 1.5}, metrics={"valid_mae": 2.0})  # logged before the run exists
    run_id = log.activate(pending)  # the caller waits for the run where it needs it: figures, models
    assert mlflow.active_run().info.run_id == run_id
    assert created == [(run_id, "civicml-runlog")]  # told from the writer thread, once the run exists
    log.end_run(pending, "FINISHED")
    assert mlflow.active_run() is None
    log.close()
    stored = client.get_run(run_id)
    assert before <= stored.info.start_time <= called  # when the caller started it, not when it was written
    assert stored.info.status == "FINISHED" and stored.info.run_name == "trial-3"
    assert stored.data.params == {"C": "1.5"} and stored.data.metrics == {"valid_mae": 2.0}
    with mlflow.start_run(experiment_id=exp, run_name="trial-3", nested=True,
                          tags={"mlflow.parentRunId": parent, "k": "v"}) as reference:
        pass
    assert stored.data.tags == client.get_run(reference.info.run_id).data.tags  # MLflow's context tags too


def test_a_run_the_background_log_cannot_create_fails_its_caller_not_the_other_writes(settings, client):
    exp = experiment_id(settings, "runlog")
    good = client.create_run(exp).info.run_id
    log = BackgroundRunLog(settings.tracking_uri)
    pending = log.start_run("987654", "trial-0", nested=True)  # no such experiment
    log.log(pending, metrics={"x": 1.0})
    log.log(good, metrics={"x": 2.0})
    with pytest.raises(mlflow.exceptions.MlflowException):
        log.activate(pending)
    log.end_run(pending, "FAILED")  # nothing to end
    log.close()  # the creation's error was its caller's: no failed write to report
    assert client.get_run(good).data.metrics == {"x": 2.0}
    assert mlflow.active_run() is None


def test_the_plain_log_starts_the_run_at_once_and_ends_it_if_the_caller_cannot_take_it(settings, client):
    exp = experiment_id(settings, "runlog")
    log = RunLog(settings.tracking_uri)
    seen = []
    run_id = log.start_run(exp, "fit", tags={"k": "v"}, created=seen.append)
    assert mlflow.active_run().info.run_id == run_id == seen[0] and log.activate(run_id) == run_id
    log.end_run(run_id, "FINISHED")

    def refuse(run_id):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        log.start_run(exp, "refused", created=refuse)
    assert mlflow.active_run() is None
    refused = client.search_runs([exp], filter_string="attributes.run_name = 'refused'")
    assert [r.info.status for r in refused] == ["FAILED"]


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

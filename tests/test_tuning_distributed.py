"""Several worker processes on one study in PostgreSQL: unique trial numbers, one parent run, and a worker
killed mid-trial (SIGKILL) whose trial fails, whose run is marked FAILED and whose parameters run again."""

from __future__ import annotations

import os
import signal
import threading
import time

import mlflow
import optuna
import pytest

from tuning import Heartbeat, tune
from tuning.storage import open_storage
from civicml.tags import TAG_ROLE, TAG_TRIAL, TAG_TRIAL_STATE

State = optuna.trial.TrialState


def _runs(settings, parent_id):
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    exp = client.get_run(parent_id).info.experiment_id
    return client, client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
                                      max_results=500)


@pytest.mark.slow
def test_two_workers_share_one_study_and_one_parent_run(requests_use_case, small_requests, settings, postgres_db):
    result = tune(requests_use_case, small_requests, n_trials=6, families=["logreg", "decision_tree"], study_name="team",
                  storage=postgres_db, settings=settings, workers=2, pruner="none")
    trials = optuna.load_study(study_name="team", storage=open_storage(postgres_db)).trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(numbers)))  # unique and gapless
    assert len(trials) >= 6 and result.n_complete == len(trials)  # at most one extra from the race to stop
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids
    client, children = _runs(settings, result.parent_run_id)
    studies = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id],
                                 filter_string=f"tags.`{TAG_ROLE}` = 'study'")
    assert [r.info.run_id for r in studies] == [result.parent_run_id]
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == numbers
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {t.user_attrs["run_id"] for t in trials} == {r.info.run_id for r in children}
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["civicml.storage_kind"] == "postgresql"

    # another invocation (another machine would run the same) adds its share to the same parent run
    more = tune(requests_use_case, small_requests, n_trials=2, families=["logreg"], study_name="team", storage=postgres_db,
                settings=settings, workers=2, pruner="none")
    assert more.parent_run_id == result.parent_run_id and more.n_trials >= len(trials) + 2


@pytest.mark.slow
def test_killed_worker_fails_its_trial_and_run_and_is_retried_with_the_same_params(requests_use_case, small_requests, settings,
                                                                                   postgres_db):
    # boosting trials take a few seconds: long enough to be killed in the middle of one
    overrides = {"boosting": {"max_iter": get_int(100)}}
    outcome: dict = {}

    def coordinator():
        try:
            outcome["result"] = tune(requests_use_case, small_requests, n_trials=3, families=["boosting"], study_name="crash",
                                     storage=postgres_db, settings=settings, workers=2, pruner="none",
                                     overrides=overrides, heartbeat=Heartbeat(interval=1, grace_period=3))
        except BaseException as err:  # surfaced below
            outcome["error"] = err

    thread = threading.Thread(target=coordinator)
    thread.start()
    victim = None
    try:  # whatever fails here, the study's thread ends before the next test (it moves MLflow's current store)
        deadline, storage = time.time() + 120, open_storage(postgres_db)
        while victim is None and time.time() < deadline:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name="crash", storage=storage)
            except KeyError:
                continue
            for t in study.get_trials(states=(State.RUNNING,)):
                if t.user_attrs.get("run_id") and "worker" in t.user_attrs:
                    victim = t
                    break
        assert victim is not None, "no trial started"
        os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    finally:
        thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    result = outcome["result"]

    trials = optuna.load_study(study_name="crash", storage=open_storage(postgres_db)).trials
    dead = trials[victim.number]
    assert dead.state == State.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == State.COMPLETE
    assert retries[0].params == victim.params
    assert retries[0].user_attrs["run_id"] != victim.user_attrs["run_id"]
    assert result.n_complete >= 3 and result.n_retried == 1
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    run = client.get_run(victim.user_attrs["run_id"])
    assert run.info.status == "FAILED" and run.data.tags[TAG_TRIAL_STATE] == "FAIL"
    assert client.get_run(retries[0].user_attrs["run_id"]).info.status == "FINISHED"
    assert [t.number for t in trials] == list(range(len(trials)))
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


def get_int(value: int):
    from projects.space import Categorical

    return Categorical([value])

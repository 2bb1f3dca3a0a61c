"""What a team storage saves each worker between trials, without losing what it guarded: the trial count that
spares a worker reading every trial, the idle-only connection check that still replaces a dropped connection,
and stale-trial lookups at most once per heartbeat interval."""

from __future__ import annotations

import warnings

import optuna
import psycopg2
import sqlalchemy

from tuning import Heartbeat
from tuning.storage import _ping_when_idle, _postgres_driver, open_storage, trial_count
from tuning.worker import WorkerSpec, far_from_target

State = optuna.trial.TrialState


def _spec(target: int, before: int | None, waiting: int = 0) -> WorkerSpec:
    return WorkerSpec(use_case=None, dataset=None, settings=None, study_name="s", storage="", families=[],
                      spaces={}, objectives=[], parent_run_id="", experiment_id="", invocation="i", target=target,
                      trials_before=before, waiting_before=waiting)


def test_the_trial_count_tells_a_worker_the_target_is_far_without_reading_trials(postgres_db):
    study = optuna.create_study(study_name="count", storage=open_storage(postgres_db))
    for _ in range(3):
        study.tell(study.ask(), 1.0)
    study.enqueue_trial({})
    assert trial_count(study) == len(study.get_trials()) == 4
    assert far_from_target(study, _spec(target=5, before=0))  # at most 4 of this invocation's: not there yet
    assert not far_from_target(study, _spec(target=4, before=0))  # it may be: read the trials
    assert not far_from_target(study, _spec(target=5, before=2, waiting=3))  # 2 new + 3 waiting may be its own
    assert not far_from_target(study, _spec(target=50, before=None))  # unknown start: never guessed


def test_a_dropped_idle_connection_is_replaced_before_use(postgres_db):
    engine = sqlalchemy.create_engine(_postgres_driver(postgres_db), pool_size=1)
    _ping_when_idle(engine, idle_seconds=0.0)  # every pooled connection counts as idle here
    with engine.connect() as connection:
        pid = connection.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar_one()
    admin = psycopg2.connect(postgres_db)
    admin.autocommit = True
    admin.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))  # the server drops the pooled one
    admin.close()
    with engine.connect() as connection:  # the ping failed, the pool connected afresh
        assert connection.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar_one() != pid
    engine.dispose()


def test_stale_trials_are_looked_for_at_most_once_per_heartbeat_interval(postgres_db):
    storage = open_storage(postgres_db, Heartbeat(interval=60, grace_period=120))
    study = optuna.create_study(study_name="stale", storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a heartbeat outside optimize()
        study.ask()
    asked = []
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", lambda *a: asked.append(a[2].lower()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
        first = sum("trial_heartbeats" in s for s in asked)
        for _ in range(3):
            optuna.storages.fail_stale_trials(study)
    assert first >= 1 and sum("trial_heartbeats" in s for s in asked) == first  # the first call only

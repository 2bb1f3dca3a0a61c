"""Several coordinators start the same new study at the same moment (another machine, another terminal):
they find or create one parent run between them and count their invocations 1..N, because tune() opens
the study and its parent run under the study's lock (tuning.storage.study_lock). On a storage's first use
the lock also keeps them from racing to create its tables."""

from __future__ import annotations

import dataclasses
import threading

import mlflow
import pytest

from civicml.errors import Unavailable
from civicml.tracking import experiment_id
from civicml.tags import TAG_ROLE, TAG_STUDY
from tuning.objectives import parse_objectives
from tuning.storage import open_storage, study_lock
from tuning.study import _open_parent
from tuning.worker import WorkerSpec

RACERS = 6


def _race(use_case, dataset, settings, storage: str, first_use: bool) -> None:
    """RACERS threads, each with its own study handle and MLflow client, released at once by a barrier."""
    name = "race"
    if not first_use:
        open_storage(storage)  # tables exist, the study does not
    exp_id = experiment_id(settings, use_case.name)  # the tracking store exists before the race
    goals = parse_objectives(None, use_case.metric, use_case.direction)
    spec = WorkerSpec(use_case=use_case, dataset=dataset, settings=settings, study_name=name, storage=storage,
                      families=["logreg"], spaces={}, objectives=goals, parent_run_id="", experiment_id=exp_id,
                      invocation="", target=1)
    barrier = threading.Barrier(RACERS, timeout=60)
    outcomes: list = [None] * RACERS

    def racer(i: int) -> None:
        mine = dataclasses.replace(spec, invocation=f"racer-{i}")
        client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
        try:
            barrier.wait()
            study, invocation = _open_parent(mine, client, {"civicml.use_case": use_case.name})
            outcomes[i] = (mine.parent_run_id, invocation, study.user_attrs["objectives"])
        except Exception as err:  # surfaced below
            outcomes[i] = err

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, errors
    assert len({parent for parent, _, _ in outcomes}) == 1, outcomes
    assert sorted(invocation for _, invocation, _ in outcomes) == list(range(1, RACERS + 1))
    assert all(objectives == [str(goals[0])] for _, _, objectives in outcomes)
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    studies = client.search_runs([exp_id],
                                 filter_string=f"tags.`{TAG_STUDY}` = '{name}' and tags.`{TAG_ROLE}` = 'study'")
    assert [r.info.run_id for r in studies] == [outcomes[0][0]]


@pytest.mark.parametrize("first_use", [False, True], ids=["new-study", "new-storage"])
def test_coordinators_starting_one_new_study_at_once_share_one_parent_run_postgres(
        requests_use_case, small_requests, settings, postgres_db, first_use):
    _race(requests_use_case, small_requests, settings, postgres_db, first_use)


@pytest.mark.parametrize("first_use", [False, True], ids=["new-study", "new-storage"])
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_coordinators_starting_one_new_study_at_once_share_one_parent_run_file(
        requests_use_case, small_requests, settings, tmp_path, kind, first_use):
    storage = f"journal://{tmp_path}/optuna.log" if kind == "journal" else f"sqlite:///{tmp_path}/optuna.db"
    _race(requests_use_case, small_requests, settings, storage, first_use)


def _held_lock_times_out(storage: str) -> None:
    with study_lock(storage, "busy"):
        with pytest.raises(Unavailable, match="cannot lock study 'busy'"):
            with study_lock(storage, "busy", timeout=0.3):
                pass
    with study_lock(storage, "busy", timeout=0.3):  # released
        pass


def test_a_held_study_lock_times_out_as_unavailable_postgres(postgres_db):
    _held_lock_times_out(postgres_db)
    with study_lock(postgres_db, "busy"), study_lock(postgres_db, "other", timeout=0.3):
        pass  # one study's lock leaves the others alone (a file storage has one lock for all its studies)


def test_a_held_study_lock_times_out_as_unavailable_file(tmp_path):
    _held_lock_times_out(f"journal://{tmp_path}/optuna.log")
